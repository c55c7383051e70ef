package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// The console answers every path the API does not serve, except /api and
// /api/..., which stay JSON 404s; the API's own routes are unchanged.
func TestConsoleRouting(t *testing.T) {
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("console " + r.URL.Path))
	})
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Console = console })
	for _, p := range []string{"/", "/tree/devices", "/device/peers/eu/devices/x", "/assets/main-1.js", "/healthz/x"} {
		r := e.do("GET", p, "", nil)
		if r.status != 200 || string(r.body) != "console "+p {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	for _, p := range []string{"/api", "/api/", "/api/v1", "/api/v1/nothing", "/api/v2/tree"} {
		e.want(e.do("GET", p, "", nil), http.StatusNotFound, "not_found")
	}
	// The API's routes, with and without a token.
	e.want(e.do("GET", "/api/v1/tree", "", nil), http.StatusUnauthorized, "unauthorized")
	e.want(e.do("GET", "/api/v1/tree", e.admin, nil), http.StatusOK, "")
	e.want(e.do("POST", "/api/v1/tree", e.admin, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"} {
		r := e.do("GET", p, "", nil)
		if r.status != 200 || strings.HasPrefix(string(r.body), "console") {
			t.Errorf("%s: %d %.40s", p, r.status, r.body)
		}
	}
	// Non-canonical paths are refused before anything routes them.
	e.want(e.do("GET", "/tree/../api/v1/tree", "", nil), http.StatusBadRequest, "invalid")
}

// Without a console every unknown path is a JSON 404, as before.
func TestNoConsole(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("GET", "/", "", nil), http.StatusNotFound, "not_found")
	e.want(e.do("GET", "/tree", "", nil), http.StatusNotFound, "not_found")
}
