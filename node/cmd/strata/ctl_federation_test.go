package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/client"
)

// fakeFederationAPI answers the federation routes.
func fakeFederationAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	send := func(status int, body string) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /api/v1/peer-tokens":
		send(201, `{"token":"sfj1.secret","peer":"plant7","grant":"operate","subtrees":["/devices"],"expires":"2026-01-02T00:00:00Z"}`)
	case "GET /api/v1/peers":
		send(200, `{"peers":[{"name":"plant7","direction":"provider","state":"connected","grant":"operate","mount":"/peers/plant7",`+
			`"cursor":120,"head":125,"lag_entries":5,"lag_seconds":0.5,"rtt_ms":1.25,"since":"2026-01-01T00:00:00Z"},`+
			`{"name":"","direction":"consumer","address":"hq.example:7443","state":"down","cursor":0,"head":0,"lag_entries":0,"lag_seconds":0,`+
			`"rtt_ms":0,"since":"2026-01-01T00:00:00Z","last_error":"dial: no route"}]}`)
	case "POST /api/v1/peers/plant7/revoke":
		w.WriteHeader(204)
	case "POST /api/v1/federation/verify":
		if r.URL.Query().Get("x") == "" && r.Header.Get("Authorization") == "Bearer bad" {
			send(200, `{"mounts":[{"peer":"plant7","mount":"/peers/plant7","match":false,"seq":9,"contexts":3},`+
				`{"peer":"plant8","mount":"/peers/plant8","match":false,"error":"the link to plant8 is down"}]}`)
			return
		}
		send(200, `{"mounts":[{"peer":"plant7","mount":"/peers/plant7","match":true,"seq":9,"contexts":3}]}`)
	case "GET /api/v1/audit":
		send(200, `{"records":[{"time":"2026-01-01T00:00:00Z","consumer":"eu","user":"alice","tenant":"acme","via":["hq","eu"],`+
			`"op":"call","path":"/devices/d1","function":"reboot","outcome":"ok"}]}`)
	default:
		send(404, `{"error":"no such peer","code":"not_found"}`)
	}
}

func TestTokenCreatePeer(t *testing.T) {
	n := newFakeNode(t, fakeFederationAPI)
	code, out, errOut := runCmd(t, nil, "", "token", "-c", n.config, "create", "--kind", "peer", "--peer", "plant7",
		"--grant", "operate", "--subtree", "/devices", "--ttl", "2h")
	if code != 0 || out != "sfj1.secret\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{"peer token for plant7", "grant operate", "/devices", "strata join"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	if r := n.last(t); r.path != "/api/v1/peer-tokens" || r.body != `{"peer":"plant7","grant":"operate","subtrees":["/devices"],"ttl":"2h0m0s"}` {
		t.Errorf("request %+v", r)
	}
	code, out, _ = runCmd(t, nil, "", "token", "-c", n.config, "-o", "json", "create", "--kind", "peer", "--peer", "plant7", "--grant", "read")
	var pt client.PeerToken
	if code != 0 || json.Unmarshal([]byte(out), &pt) != nil || pt.Token != "sfj1.secret" {
		t.Errorf("json: exit %d, %q", code, out)
	}
	if r := n.last(t); r.body != `{"peer":"plant7","grant":"read"}` {
		t.Errorf("defaults: body %s", r.body)
	}
}

func TestCtlPeers(t *testing.T) {
	n := newFakeNode(t, fakeFederationAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "peers")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "LAST ERROR") ||
		!strings.Contains(lines[1], "plant7") || !strings.Contains(lines[1], "5 (0.5s)") || !strings.Contains(lines[1], "1.2ms") ||
		!strings.Contains(lines[2], "(hq.example:7443)") || !strings.Contains(lines[2], "dial: no route") {
		t.Errorf("peers:\n%s", out)
	}
	code, out, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "peers", "revoke", "plant7")
	if code != 0 || out != "revoked peer plant7\n" || n.last(t).path != "/api/v1/peers/plant7/revoke" {
		t.Errorf("revoke: exit %d, %q", code, out)
	}
	code, _, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "peers", "revoke", "plant9")
	if code != 1 || errOut != "error: no such peer (not_found)\n" {
		t.Errorf("revoke plant9: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"peers", "revoke"}, {"peers", "revoke", "a", "b"}, {"federation", "verify", "x"}, {"audit", "--limit", "-1"}} {
		if code, _, errOut := runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...); code != 1 || !strings.Contains(errOut, "--help") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

func TestCtlFederationVerify(t *testing.T) {
	n := newFakeNode(t, fakeFederationAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "federation", "verify")
	if code != 0 || !strings.Contains(out, "plant7") || !strings.Contains(out, "match") || !strings.Contains(out, "3 contexts") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	code, out, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "--token", "bad", "federation", "verify")
	if code != 1 || !strings.Contains(out, "differs") || !strings.Contains(out, "failed: the link to plant8 is down") ||
		!strings.Contains(errOut, "2 of 2 mounts differ") {
		t.Fatalf("differs: exit %d, %q, %q", code, out, errOut)
	}
}

func TestCtlAudit(t *testing.T) {
	n := newFakeNode(t, fakeFederationAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "audit", "--limit", "5")
	if code != 0 || !strings.Contains(out, "hq>eu") || !strings.Contains(out, "reboot") || !strings.Contains(out, "alice") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.path != "/api/v1/audit" || r.query != "limit=5" {
		t.Errorf("request %+v", r)
	}
}
