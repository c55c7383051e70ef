package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Every read that takes a bearer token honours ?consistent=true: it waits
// for the replica's read barrier once, and a plain read does not; a
// barrier that fails answers 503; a bad value is 400 to a caller who
// authenticated and 401 to one who did not. Writes never wait for it.
func TestConsistentReadsEveryRoute(t *testing.T) {
	fc := &fakeCluster{role: "follower"}
	e := newServicesEnv(t, nil, withSearch(), func(c *Config, _ *auth.Config, _ *model.Config) { c.Cluster = fc })
	c := e.tenants()
	dev := e.device(c.alice, "hw-a", "ping")
	r := e.call(c.alice, dev, "ping", nil)
	e.want(r, http.StatusAccepted, "")
	var j jobAnswer
	r.json(t, &j)
	devPath := "/devices/" + dev
	reads := []string{
		"/api/v1/whoami",
		"/api/v1/contexts" + devPath,
		"/api/v1/tree?path=/devices",
		"/api/v1/search?path=/devices",
		"/api/v1/events?path=/devices",
		"/api/v1/events" + devPath,
		"/api/v1/users",
		"/api/v1/users/alice",
		"/api/v1/tokens",
		"/api/v1/enrollment-tokens",
		"/api/v1/devices",
		"/api/v1/devices/" + dev,
		"/api/v1/jobs",
		"/api/v1/jobs/" + j.ID,
		"/api/v1/audit",
	}
	barriers := func() int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.barriers
	}
	sep := func(u string) string {
		if strings.Contains(u, "?") {
			return "&"
		}
		return "?"
	}
	for _, u := range reads {
		before := barriers()
		e.want(e.do("GET", u, c.ada, nil), http.StatusOK, "")
		if got := barriers(); got != before {
			t.Fatalf("GET %s waited for %d read barriers without consistent=true", u, got-before)
		}
		e.want(e.do("GET", u+sep(u)+"consistent=true", c.ada, nil), http.StatusOK, "")
		if got := barriers(); got != before+1 {
			t.Fatalf("GET %s?consistent=true waited for %d read barriers, want 1", u, got-before)
		}
		e.want(e.do("GET", u+sep(u)+"consistent=maybe", c.ada, nil), http.StatusBadRequest, codeInvalid)
		e.want(e.do("GET", u+sep(u)+"consistent=maybe", "", nil), http.StatusUnauthorized, codeUnauthorized)
	}
	// The change stream's start point: HEAD answers without a stream.
	before := barriers()
	e.want(e.do("HEAD", "/api/v1/changes?consistent=true", c.ada, nil), http.StatusOK, "")
	if got := barriers(); got != before+1 {
		t.Fatalf("the change stream waited for %d read barriers, want 1", got-before)
	}
	// A write does not wait, whatever it asks.
	before = barriers()
	e.want(e.do("PUT", "/api/v1/contexts/sites/north?consistent=true", e.admin, map[string]any{"type": "folder"}), http.StatusCreated, "")
	if got := barriers(); got != before {
		t.Fatalf("a write waited for %d read barriers", got-before)
	}
	fc.mu.Lock()
	fc.readErr = fmt.Errorf("%w: read index: no answer", model.ErrNotLeader)
	fc.mu.Unlock()
	e.want(e.do("GET", "/api/v1/tree?path=/devices&consistent=true", c.ada, nil), http.StatusServiceUnavailable, codeUnavailable)
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID+"?consistent=true", c.ada, nil), http.StatusServiceUnavailable, codeUnavailable)
	e.want(e.do("GET", "/api/v1/tree?path=/devices", c.ada, nil), http.StatusOK, "")
}

// With consistent=true another tenant still sees nothing of acme's: the
// same answers as without, for a device, its context, events, job and
// users, and lists that leave them out.
func TestConsistentReadsKeepTenants(t *testing.T) {
	fc := &fakeCluster{role: "follower"}
	e := newServicesEnv(t, nil, withSearch(), func(c *Config, _ *auth.Config, _ *model.Config) { c.Cluster = fc })
	c := e.tenants()
	dev := e.device(c.alice, "hw-a", "ping")
	r := e.call(c.alice, dev, "ping", nil)
	e.want(r, http.StatusAccepted, "")
	var j jobAnswer
	r.json(t, &j)
	devPath := "/devices/" + dev
	for _, rt := range []struct {
		url    string
		status int
		code   string
	}{
		{"/api/v1/contexts" + devPath, http.StatusNotFound, codeNotFound},
		{"/api/v1/events" + devPath, http.StatusNotFound, codeNotFound},
		{"/api/v1/devices/" + dev, http.StatusNotFound, codeNotFound},
		{"/api/v1/jobs/" + j.ID, http.StatusNotFound, codeNotFound},
		{"/api/v1/users/alice", http.StatusNotFound, codeNotFound},
		{"/api/v1/tokens?user=alice", http.StatusNotFound, codeNotFound},
	} {
		plain := e.do("GET", rt.url, c.gina, nil)
		e.want(plain, rt.status, rt.code)
		sep := "?"
		if strings.Contains(rt.url, "?") {
			sep = "&"
		}
		cons := e.do("GET", rt.url+sep+"consistent=true", c.gina, nil)
		e.want(cons, rt.status, rt.code)
	}
	for _, u := range []string{"/api/v1/tree?path=/devices", "/api/v1/search?path=/devices", "/api/v1/events?path=/devices",
		"/api/v1/devices", "/api/v1/jobs", "/api/v1/users", "/api/v1/audit"} {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		r := e.do("GET", u+sep+"consistent=true", c.gina, nil)
		if r.status != http.StatusOK && r.status != http.StatusForbidden {
			t.Fatalf("gina GET %s?consistent=true: %d %s", u, r.status, r.body)
		}
		if body := string(r.body); strings.Contains(body, dev) || strings.Contains(body, j.ID) || strings.Contains(body, "alice") {
			t.Fatalf("gina GET %s?consistent=true shows acme's: %s", u, body)
		}
	}
}

// A token the replica does not know is tried again after a bounded read
// barrier when the read asks for consistency (it may come from another
// replica), and only then: still unknown, it is 401. Such retries hold
// unauthenticated slots; without one the answer is 401 at once, counted.
func TestConsistentReadUnknownToken(t *testing.T) {
	fc := &fakeCluster{role: "follower"}
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Cluster = fc })
	stranger := "s_" + strings.Repeat("x", 40)
	e.want(e.do("GET", "/api/v1/whoami", stranger, nil), http.StatusUnauthorized, codeUnauthorized)
	e.want(e.do("POST", "/api/v1/tokens?consistent=true", stranger, nil), http.StatusUnauthorized, codeUnauthorized)
	if fc.barriers != 0 {
		t.Fatalf("%d read barriers for a stranger's plain read or write", fc.barriers)
	}
	e.want(e.do("GET", "/api/v1/whoami?consistent=true", stranger, nil), http.StatusUnauthorized, codeUnauthorized)
	if fc.barriers != 1 || fc.bounded != 1 {
		t.Fatalf("unknown token, consistent read: %d barriers (%d bounded), want 1 bounded", fc.barriers, fc.bounded)
	}
	if held := e.api.unauth.held(); held != 0 {
		t.Fatalf("%d unauthenticated slots still held", held)
	}
	// The slots of this address taken: 401 at once, no barrier.
	addr := "127.0.0.1"
	for range e.api.cfg.MaxUnauthenticatedPerAddr {
		if ok, _ := e.api.unauth.acquire(addr); !ok {
			t.Fatal("could not take the slots")
		}
	}
	before := testutil.ToFloat64(e.api.metrics.refused.WithLabelValues(refusedUnauthPerAddr))
	e.want(e.do("GET", "/api/v1/whoami?consistent=true", stranger, nil), http.StatusUnauthorized, codeUnauthorized)
	if fc.barriers != 1 {
		t.Fatalf("a barrier without a slot: %d", fc.barriers)
	}
	if got := testutil.ToFloat64(e.api.metrics.refused.WithLabelValues(refusedUnauthPerAddr)); got != before+1 {
		t.Fatalf("refused{%s} = %v, want %v", refusedUnauthPerAddr, got, before+1)
	}
	for range e.api.cfg.MaxUnauthenticatedPerAddr {
		e.api.unauth.release(addr)
	}
	// A known token's consistent read is bounded by its client only.
	e.want(e.do("GET", "/api/v1/whoami?consistent=true", e.admin, nil), http.StatusOK, "")
	if fc.barriers != 2 || fc.bounded != 1 {
		t.Fatalf("known token: %d barriers (%d bounded)", fc.barriers, fc.bounded)
	}
}

// FuzzParseConsistent: any query string either asks for a consistent read,
// does not, or is bad input; only "true" and "1" ask.
func FuzzParseConsistent(f *testing.F) {
	for _, s := range []string{"", "consistent=true", "consistent=1", "consistent=false", "consistent=maybe",
		"consistent=true&consistent=false", "consistent=%00", "path=/a&consistent=0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := http.NewRequest("GET", "https://node/api/v1/tree?"+raw, nil)
		if err != nil {
			return
		}
		want, err := parseConsistent(r)
		if err != nil {
			mustBeBadInput(t, err, []byte(raw))
			return
		}
		if v := r.URL.Query().Get("consistent"); want != (v == "true" || v == "1") {
			t.Fatalf("%q: consistent %v", raw, want)
		}
	})
}
