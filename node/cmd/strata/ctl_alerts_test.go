package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// fakeAlertsAPI answers the alert routes.
func fakeAlertsAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	send := func(status int, body string) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	const alert = `{"path":"/peers/p1/alerts/a1","id":"a1","tenant":"acme","rule":"r1","severity":"critical","device":"/devices/d1",` +
		`"state":"firing","value":95,"since":"2026-01-01T00:00:00Z","acked":true,"acked_by":"admin@hq","silenced":false,"summary":"temp > 80"}`
	switch r.Method + " " + r.URL.Path {
	case "GET /api/v1/alerts":
		send(200, `{"alerts":[`+alert+`],"next":"/peers/p1/alerts/a1"}`)
	case "POST /api/v1/alerts/peers/p1/alerts/a1/ack", "POST /api/v1/alerts/peers/p1/alerts/a1/silence":
		send(200, alert)
	case "GET /api/v1/alert-rules":
		send(200, `{"rules":[{"id":"r1","name":"hot","kind":"threshold","selector":{"path":"/devices","type":"device"},"var":"temp","op":">","value":80,"for":"30s","severity":"critical"}]}`)
	case "POST /api/v1/alert-rules":
		send(201, `{"id":"r2","name":"hot","kind":"threshold","selector":{"path":"/devices","type":"device"},"var":"temp","op":">","value":80,"severity":"warning"}`)
	case "DELETE /api/v1/alert-rules/r1":
		w.WriteHeader(204)
	default:
		send(404, `{"error":"alert rule x not found","code":"not_found"}`)
	}
}

func TestCtlAlerts(t *testing.T) {
	n := newFakeNode(t, fakeAlertsAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "list", "--state", "firing", "--path", "/peers/p1")
	if code != 0 || !strings.Contains(out, "/peers/p1/alerts/a1") || !strings.Contains(out, "admin@hq") || !strings.Contains(errOut, "more: --after /peers/p1/alerts/a1") {
		t.Fatalf("list: %d %q %q", code, out, errOut)
	}
	if r := n.last(t); r.query != "path=%2Fpeers%2Fp1&state=firing" {
		t.Errorf("list query %q", r.query)
	}
	if code, out, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "ack", "/peers/p1/alerts/a1"); code != 0 || !strings.Contains(out, "acknowledged") {
		t.Fatalf("ack: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "silence", "/peers/p1/alerts/a1", "--until", "2030-01-01T00:00:00Z"); code != 0 {
		t.Fatalf("silence: %d %q", code, errOut)
	}
	if r := n.last(t); r.body != `{"until":"2030-01-01T00:00:00Z"}` {
		t.Errorf("silence body %q", r.body)
	}
	if code, _, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "silence", "/peers/p1/alerts/a1"); code == 0 {
		t.Error("silence without --for or --until")
	}
	if code, out, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "rules", "list"); code != 0 || !strings.Contains(out, "temp > 80") {
		t.Fatalf("rules list: %d %q", code, out)
	}
	code, out, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "rules", "create", "--name", "hot", "--kind", "threshold",
		"--var", "temp", "--op", ">", "--value", "80", "--selector-label", "site=a", "--label", "team=ops")
	if code != 0 || !strings.Contains(out, "created alert rule r2") {
		t.Fatalf("rules create: %d %q %q", code, out, errOut)
	}
	if r := n.last(t); r.body != `{"name":"hot","kind":"threshold","selector":{"labels":{"site":"a"}},"var":"temp","op":"\u003e","value":80,"labels":{"team":"ops"}}` {
		t.Errorf("create body %s", r.body)
	}
	code, _, _ = runCmd(t, nil, `{"name":"gone","kind":"offline","for":"5m"}`, "ctl", "-c", n.config, "alerts", "rules", "create", "--file", "-")
	if r := n.last(t); code != 0 || r.body != `{"name":"gone","kind":"offline","selector":{},"for":"5m"}` {
		t.Errorf("create --file: %d %s", code, r.body)
	}
	if code, out, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "rules", "delete", "r1"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("rules delete: %d %q", code, out)
	}
	if code, _, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "alerts", "rules", "delete", "x"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("delete a missing rule: %d %q", code, errOut)
	}
}
