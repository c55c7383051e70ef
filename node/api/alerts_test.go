package api

import (
	"net/http"
	"strings"
	"testing"
)

// Alerts are the node's: the contexts API refuses to write them, so an
// operator cannot forge, resolve or acknowledge one behind the rules'
// back.
func TestAlertsReadOnly(t *testing.T) {
	e := newEnv(t)
	for _, req := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/contexts/alerts/a1", `{"type":"alert","variables":{"state":"resolved"}}`},
		{"DELETE", "/api/v1/contexts/alerts/a1", ``},
		{"POST", "/api/v1/events/alerts/a1", `{"level":"info"}`},
	} {
		r := e.do(req.method, req.path, e.admin, req.body)
		if r.status != http.StatusConflict || !strings.Contains(string(r.body), `"alerts_read_only"`) {
			t.Errorf("%s %s: %d %s", req.method, req.path, r.status, r.body)
		}
	}
}
