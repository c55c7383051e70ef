package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
)

// fakeDeviceAPI answers the device, enrollment and job routes.
func fakeDeviceAPI(w http.ResponseWriter, r *http.Request) {
	const job = `{"id":"%id","path":"/devices/%dev","device":"%dev","tenant":"acme","function":"ping","args":{"n":1},"created_by":"admin",` +
		`"created":"2026-01-01T00:00:00Z","deadline":"2026-01-01T01:00:00Z","state":"%state","updated":"2026-01-01T00:00:01Z",%extra` +
		`"history":[{"state":"queued","time":"2026-01-01T00:00:00Z"},{"state":"%state","time":"2026-01-01T00:00:01Z","detail":"by admin"}]}`
	mk := func(id, dev, state, extra string) string {
		return strings.NewReplacer("%id", id, "%dev", dev, "%state", state, "%extra", extra).Replace(job)
	}
	w.Header().Set("Content-Type", "application/json")
	send := func(status int, body string) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /api/v1/enrollment-tokens":
		send(201, `{"token":"se_secret","id":"e1","group":"pumps","tenant":"acme","created":"2026-01-01T00:00:00Z","created_by":"admin","expires":"2026-01-04T00:00:00Z","uses":10,"used":0,"revoked":false}`)
	case "GET /api/v1/enrollment-tokens":
		send(200, `{"tokens":[{"id":"e1","group":"pumps","tenant":"acme","created_by":"admin","expires":"2999-01-01T00:00:00Z","uses":10,"used":3},`+
			`{"id":"e2","group":"presses","tenant":"","created_by":"root","expires":"2999-01-01T00:00:00Z","revoked":true}]}`)
	case "DELETE /api/v1/enrollment-tokens/e1":
		w.WriteHeader(204)
	case "GET /api/v1/devices":
		send(200, `{"devices":[{"id":"d-1","path":"/devices/d-1","tenant":"acme","group":"pumps","hardware_id":"b8:27:eb:12:34:56","enrolled":"2026-01-01T00:00:00Z","enroll_token":"e1","revoked":false}]}`)
	case "GET /api/v1/search":
		send(200, `{"contexts":[{"path":"/devices/d-1","type":"device","tenant":"acme","variables":{"online":{"value":true,"type":"bool","time":"2026-01-01T00:00:00Z"},`+
			`"last_seen":{"value":"2026-01-02T03:04:05Z","type":"string","time":"2026-01-02T03:04:05Z"},"os":{"value":"linux","type":"string","time":"2026-01-01T00:00:00Z"}}},`+
			`{"path":"/peers/eu/devices/d-2","type":"device","tenant":"acme","variables":{"online":{"value":false,"type":"bool","time":"2026-01-01T00:00:00Z"}}}],"next":""}`)
	case "GET /api/v1/devices/d-1":
		send(200, `{"id":"d-1","path":"/devices/d-1","tenant":"acme","group":"pumps","hardware_id":"hw-1","enroll_token":"e1","cert_serial":"1234","revoked":false}`)
	case "POST /api/v1/devices/d-1/revoke":
		send(200, `{"id":"d-1","path":"/devices/d-1","tenant":"acme","group":"pumps","hardware_id":"hw-1","revoked":true,"revoked_at":"2026-01-02T00:00:00Z"}`)
	case "POST /api/v1/devices/d-1/allow-enroll":
		send(200, `{"id":"d-1","path":"/devices/d-1","tenant":"acme","group":"pumps","hardware_id":"hw-1","revoked":true,"revoked_at":"2026-01-02T00:00:00Z","enroll_allowed":true}`)
	case "GET /api/v1/jobs":
		send(200, `{"jobs":[`+mk("j2", "d-1", "queued", "")+`,`+mk("j1", "d-1", "succeeded", "")+`],"next":"j1"}`)
	case "GET /api/v1/jobs/j1":
		send(200, mk("j1", "d-1", "succeeded", `"result":{"pong":true},`))
	case "POST /api/v1/jobs/j1/cancel":
		send(409, `{"error":"job j1 is already succeeded","code":"conflict"}`)
	case "POST /api/v1/contexts/devices/d-ok/functions/ping":
		send(200, `{"job":"j3",`+mk("j3", "d-ok", "succeeded", `"result":{"pong":true},`)[1:])
	case "POST /api/v1/contexts/devices/d-fail/functions/ping":
		send(200, `{"job":"j4",`+mk("j4", "d-fail", "failed", `"error":"it broke",`)[1:])
	case "POST /api/v1/contexts/devices/d-slow/functions/ping":
		w.Header().Set("Location", "/api/v1/jobs/j5")
		send(202, `{"job":"j5",`+mk("j5", "d-slow", "queued", "")[1:])
	default:
		send(404, `{"error":"no such thing","code":"not_found"}`)
	}
}

func TestTokenCreate(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	code, out, errOut := runCmd(t, nil, "", "token", "-c", n.config, "create", "--kind", "enroll", "--group", "pumps",
		"--tenant", "acme", "--ttl", "72h", "--uses", "10")
	if code != 0 || out != "se_secret\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{"e1", "group pumps", "tenant acme", "uses 10", "not shown again"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	r := n.last(t)
	if r.method != "POST" || r.path != "/api/v1/enrollment-tokens" || r.auth != "Bearer "+n.token ||
		r.body != `{"group":"pumps","tenant":"acme","uses":10,"ttl":"72h0m0s"}` {
		t.Errorf("request %+v", r)
	}

	// -o json prints the token with its secret.
	code, out, _ = runCmd(t, nil, "", "token", "-c", n.config, "-o", "json", "create", "--kind", "enroll", "--group", "pumps")
	var ct client.CreatedEnrollToken
	if code != 0 || json.Unmarshal([]byte(out), &ct) != nil || ct.Secret != "se_secret" || ct.ID != "e1" {
		t.Errorf("json: exit %d, %q", code, out)
	}
	if r := n.last(t); r.body != `{"group":"pumps"}` {
		t.Errorf("defaults: body %s", r.body)
	}

	// --server, --ca and --token as with ctl.
	t.Chdir(n.dir)
	code, _, errOut = runCmd(t, nil, "", "token", "--server", n.srv.URL, "--ca", filepath.Join(n.dir, caFile), "--token", "st_x",
		"create", "--kind", "enroll", "--group", "g")
	if code != 0 || n.last(t).auth != "Bearer st_x" {
		t.Errorf("--server: exit %d, %s, auth %q", code, errOut, n.last(t).auth)
	}
}

func TestTokenKinds(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	n.mu.Lock()
	before := len(n.reqs)
	n.mu.Unlock()
	for _, args := range [][]string{{"list", "--kind", "peer"}, {"revoke", "--kind", "peer", "p1"}} {
		code, out, errOut := runCmd(t, nil, "", append([]string{"token", "-c", n.config}, args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "peer tokens are used once") || !strings.Contains(errOut, "--help") {
			t.Errorf("%v: exit %d, %q, %q", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{
		{"create", "--kind", "api", "--group", "g"}, {"create", "--group", "g"}, {"create", "--kind", "enroll"}, {"list"},
		{"revoke", "--kind", "enroll"}, {"create", "--kind", "enroll", "--group", "g", "--uses", "-1"},
		{"create", "--kind", "enroll", "--group", "g", "--peer", "p"},
		{"create", "--kind", "peer", "--group", "g", "--peer", "p", "--grant", "read"},
		{"create", "--kind", "peer", "--grant", "read"},
		{"create", "--kind", "peer", "--peer", "p"},
		{"create", "--kind", "peer", "--peer", "p", "--grant", "write"},
		{"create", "--kind", "peer", "--peer", "p", "--grant", "read", "--subtree", "devices"},
		{"create", "--kind", "peer", "--peer", "p", "--grant", "read", "--ttl", "-1h"},
	} {
		if code, _, errOut := runCmd(t, nil, "", append([]string{"token", "-c", n.config}, args...)...); code != 1 || errOut == "" {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	n.mu.Lock()
	after := len(n.reqs)
	n.mu.Unlock()
	if after != before {
		t.Errorf("refused commands sent %d requests", after-before)
	}
}

func TestTokenListRevoke(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	code, out, errOut := runCmd(t, nil, "", "token", "-c", n.config, "list", "--kind", "enroll")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "e1") || !strings.Contains(lines[1], "3/10") || !strings.HasSuffix(lines[1], "active") ||
		!strings.Contains(lines[2], "0/unlimited") || !strings.HasSuffix(lines[2], "revoked") {
		t.Errorf("list:\n%s", out)
	}
	code, out, _ = runCmd(t, nil, "", "token", "-c", n.config, "revoke", "--kind", "enroll", "e1")
	if code != 0 || out != "revoked enrollment token e1\n" || n.last(t).method != "DELETE" {
		t.Errorf("revoke: exit %d, %q", code, out)
	}
	code, _, errOut = runCmd(t, nil, "", "token", "-c", n.config, "revoke", "--kind", "enroll", "e9")
	if code != 1 || errOut != "error: no such thing (not_found)\n" {
		t.Errorf("revoke e9: exit %d, %q", code, errOut)
	}
}

func TestEnrollTokenState(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	for _, c := range []struct {
		t    client.EnrollToken
		want string
	}{
		{client.EnrollToken{Expires: later}, "active"},
		{client.EnrollToken{Expires: later, Uses: 2, Used: 1}, "active"},
		{client.EnrollToken{Expires: later, Uses: 2, Used: 2}, "used up"},
		{client.EnrollToken{Expires: now}, "expired"},
		{client.EnrollToken{Expires: now, Revoked: true}, "revoked"},
	} {
		if got := enrollTokenState(c.t, now); got != c.want {
			t.Errorf("%+v: %q, want %q", c.t, got, c.want)
		}
	}
}
