package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a model succeeded")
	}
	e := newEnv(t)
	for _, c := range []Config{
		{Model: e.model},
		{Model: e.model, Auth: e.auth, MaxBodyBytes: -1},
		{Model: e.model, Auth: e.auth, KeepAlive: -time.Second},
		{Model: e.model, Auth: e.auth, MaxStreams: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", c)
		}
	}
	// The env's registry already holds the metrics: a second server
	// registering there fails, and leaves nothing half registered.
	if _, err := New(Config{Model: e.model, Auth: e.auth, Registerer: e.reg}); err == nil {
		t.Fatal("registered the metrics twice")
	}
	if _, err := New(Config{Model: e.model, Auth: e.auth}); err != nil {
		t.Fatalf("a server without a registerer: %v", err)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	var notReady error = errors.New("starting")
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) {
		c.Ready = func() error { return notReady }
	})
	r := e.do("GET", "/healthz", "", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != "ok" {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	e.want(e.do("GET", "/readyz", "", nil), 503, codeUnavailable)
	notReady = nil
	r = e.do("GET", "/readyz", "", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != "ready" {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	e.do("GET", "/api/v1/contexts/devices/pump-1", e.admin, nil)
	r = e.do("GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("metrics: %d", r.status)
	}
	text := string(r.body)
	for _, want := range []string{
		`strata_api_requests_total{code="200",route="GET /healthz"}`,
		`strata_api_requests_total{code="404",route="GET /api/v1/contexts/{path...}"}`,
		`strata_api_request_duration_seconds_bucket{route="GET /readyz"`,
		"strata_api_sse_streams 0",
		`strata_build_info{version="test"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "pump-1") {
		t.Error("a raw path leaked into metric labels")
	}
	if r.header.Get("X-Request-Id") == "" {
		t.Error("no request id")
	}
}

func TestAuthentication(t *testing.T) {
	e := newServicesEnv(t, nil)
	routes := [][2]string{
		{"GET", "/api/v1/whoami"}, {"GET", "/api/v1/tree"},
		{"GET", "/api/v1/contexts/a"}, {"PUT", "/api/v1/contexts/a"}, {"DELETE", "/api/v1/contexts/a"},
		{"POST", "/api/v1/contexts/a/functions/f"},
		{"GET", "/api/v1/events/a"}, {"POST", "/api/v1/events/a"}, {"GET", "/api/v1/changes"},
		{"GET", "/api/v1/users"}, {"POST", "/api/v1/users"}, {"GET", "/api/v1/users/admin"},
		{"PATCH", "/api/v1/users/admin"}, {"DELETE", "/api/v1/users/admin"},
		{"GET", "/api/v1/tokens"}, {"POST", "/api/v1/tokens"}, {"DELETE", "/api/v1/tokens/x"},
		{"GET", "/api/v1/enrollment-tokens"}, {"POST", "/api/v1/enrollment-tokens"}, {"DELETE", "/api/v1/enrollment-tokens/x"},
		{"GET", "/api/v1/devices"}, {"GET", "/api/v1/devices/x"}, {"POST", "/api/v1/devices/x/revoke"},
		{"GET", "/api/v1/jobs"}, {"GET", "/api/v1/jobs/x"}, {"POST", "/api/v1/jobs/x/cancel"},
	}
	forged := e.admin[:len(e.admin)-1] + "a"
	if forged == e.admin {
		forged = e.admin[:len(e.admin)-1] + "b"
	}
	for _, rt := range routes {
		for _, hdr := range []string{"", "Bearer", "Bearer ", "Basic " + e.admin, "Bearer junk", "Bearer " + forged} {
			var r resp
			if hdr == "" {
				r = e.do(rt[0], rt[1], "", `{}`)
			} else {
				r = e.do(rt[0], rt[1], "", `{}`, "Authorization", hdr)
			}
			e.want(r, 401, codeUnauthorized)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%v %q: WWW-Authenticate %q", rt, hdr, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	// The bearer scheme is case-insensitive.
	e.want(e.do("GET", "/api/v1/whoami", "", nil, "Authorization", "bearer "+e.admin), 200, "")
	// Public routes need nothing.
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"} {
		e.want(e.do("GET", p, "", nil), 200, "")
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("GET", "/api/v1/nothing", e.admin, nil), 404, codeNotFound)
	e.want(e.do("GET", "/nothing", "", nil), 404, codeNotFound)
	// Bare prefixes are not redirected to the root context.
	e.want(e.do("GET", "/api/v1/contexts", e.admin, nil), 404, codeNotFound)
	// The bare events prefix is the event feed (GET only), never a
	// redirect to the root context's events (/api/v1/events/).
	e.want(e.do("PUT", "/api/v1/events", e.admin, nil), 405, codeMethodNotAllowed)
	e.want(e.do("GET", "/api/v1/events", e.admin, nil), 200, "")
	e.want(e.do("GET", "/api/v1/events/", e.admin, nil), 200, "")
	r := e.do("PATCH", "/api/v1/contexts/a", e.admin, `{}`)
	e.want(r, 405, codeMethodNotAllowed)
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "PUT") || !strings.Contains(allow, "GET") {
		t.Fatalf("Allow %q", allow)
	}
	e.want(e.do("DELETE", "/api/v1/tree", e.admin, nil), 405, codeMethodNotAllowed)
	e.want(e.do("PUT", "/healthz", "", nil), 405, codeMethodNotAllowed)
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{model.ErrInvalid, 400, codeInvalid},
		{model.ErrInvalidPath, 400, codeInvalid},
		{model.ErrNotFound, 404, codeNotFound},
		{model.ErrConflict, 409, codeConflict},
		{auth.ErrUnauthorized, 401, codeUnauthorized},
		{auth.ErrForbidden, 403, codeForbidden},
		{&auth.RateLimitError{RetryAfter: 1500 * time.Millisecond}, 429, codeRateLimited},
		{&http.MaxBytesError{Limit: 1}, 413, codeTooLarge},
		{model.ErrClosed, 503, codeUnavailable},
		{fmt.Errorf("commit: %w (leader r1 at 10.0.0.1:7400)", model.ErrNotLeader), 503, codeUnavailable},
		{errors.New("disk on fire"), 500, codeInternal},
	}
	for _, c := range cases {
		st, code := errorStatus(c.err)
		if st != c.status || code != c.code {
			t.Errorf("%v: %d %s, want %d %s", c.err, st, code, c.status, c.code)
		}
	}
	if got := retryAfterSeconds(1500 * time.Millisecond); got != 2 {
		t.Errorf("retry after 1.5 s = %d, want 2", got)
	}
	if got := retryAfterSeconds(0); got != 1 {
		t.Errorf("retry after 0 = %d, want 1", got)
	}
}
