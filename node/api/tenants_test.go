package api

import (
	"strings"
	"sync"
	"testing"

	"github.com/strata-dm/strata/model"
)

// TestTenantIsolation attacks another tenant's context by every route; each
// attempt must answer exactly as for a context that does not exist, and
// change nothing.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{"type":"device","variables":{"temp":20}}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/pump-1", c.alice, `{"level":"alert","name":"hot"}`), 201, "")
	before, _ := e.model.Get("/devices/pump-1")

	// Bob's answer for alice's context and for a missing one must be
	// byte-identical (apart from the path itself).
	attacks := []struct{ method, prefix, suffix, body string }{
		{"GET", "/api/v1/contexts", "", ""},
		{"DELETE", "/api/v1/contexts", "", ""},
		{"POST", "/api/v1/contexts", "/functions/reboot", `{}`},
		{"GET", "/api/v1/events", "", ""},
		{"GET", "/api/v1/events", "?level=alert", ""},
		{"POST", "/api/v1/events", "", `{"level":"alert","name":"spoof"}`},
	}
	for _, a := range attacks {
		var body any
		if a.body != "" {
			body = a.body
		}
		hit := e.do(a.method, a.prefix+"/devices/pump-1"+a.suffix, c.bob, body)
		miss := e.do(a.method, a.prefix+"/devices/pump-0"+a.suffix, c.bob, body)
		e.want(hit, 404, codeNotFound)
		e.want(miss, 404, codeNotFound)
		if strings.ReplaceAll(string(hit.body), "pump-1", "pump-0") != string(miss.body) {
			t.Errorf("%s %s: existing %s, missing %s", a.method, a.prefix, hit.body, miss.body)
		}
	}
	// A put cannot take it over: it answers as a read of a missing context
	// would (a put of a missing context creates it).
	missing := e.do("GET", "/api/v1/contexts/devices/pump-1", c.bob, nil)
	for _, body := range []string{`{"type":"mine","variables":{"temp":99}}`, `{"tenant":"globex"}`, `{}`} {
		r := e.do("PUT", "/api/v1/contexts/devices/pump-1", c.bob, body)
		e.want(r, 404, codeNotFound)
		if string(r.body) != string(missing.body) {
			t.Errorf("put %s: %s, a missing context reads %s", body, r.body, missing.body)
		}
	}
	// The same for a body tenant: bob may not name acme (forbidden, as for
	// any tenant not his, whether or not the context exists).
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.bob, `{"tenant":"acme"}`), 403, codeForbidden)
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-0", c.bob, `{"tenant":"acme"}`), 403, codeForbidden)
	// Nor create inside it.
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1/valve", c.bob, `{"type":"valve"}`), 404, codeNotFound)

	after, err := e.model.Get("/devices/pump-1")
	if err != nil || after.Version != before.Version || after.Tenant != "acme" {
		t.Fatalf("alice's context changed: %+v -> %+v (%v)", before, after, err)
	}
	if _, err := e.model.Get("/devices/pump-1/valve"); err == nil {
		t.Fatal("bob created a context inside alice's")
	}
	evs, _ := e.model.Events("/devices/pump-1", model.EventQuery{})
	if len(evs) != 1 || evs[0].Name != "hot" {
		t.Fatalf("alice's events: %+v", evs)
	}
	// Alice still reaches everything; the system admin too.
	e.want(e.do("GET", "/api/v1/contexts/devices/pump-1", c.alice, nil), 200, "")
	e.want(e.do("GET", "/api/v1/contexts/devices/pump-1", e.admin, nil), 200, "")
}

func TestTenantField(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.sharedFolders("/a")
	// Own tenant named explicitly: fine. Another: forbidden.
	e.want(e.do("PUT", "/api/v1/contexts/a/x", c.alice, `{"tenant":"acme"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/a/y", c.alice, `{"tenant":"globex"}`), 403, codeForbidden)
	if _, err := e.model.Get("/a/y"); err == nil {
		t.Fatal("forbidden put created the context")
	}
	// The system admin places contexts anywhere and moves them.
	r := e.do("PUT", "/api/v1/contexts/a/z", e.admin, `{"tenant":"globex","type":"device"}`)
	e.want(r, 201, "")
	var got contextJSON
	r.json(t, &got)
	if got.Tenant != "globex" {
		t.Fatalf("tenant %q", got.Tenant)
	}
	e.want(e.do("GET", "/api/v1/contexts/a/z", c.bob, nil), 200, "")
	e.want(e.do("PUT", "/api/v1/contexts/a/z", e.admin, `{"tenant":"acme"}`), 200, "")
	e.want(e.do("GET", "/api/v1/contexts/a/z", c.bob, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/contexts/a/z", c.alice, nil), 200, "")
}

func TestSharedFolders(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{}`), 201, "")
	// /devices is shared: everyone sees it, only system users change it.
	e.want(e.do("GET", "/api/v1/contexts/devices", c.bob, nil), 200, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices", c.bob, `{"type":"mine"}`), 403, codeForbidden)
	e.want(e.do("PUT", "/api/v1/contexts/devices", c.alice, `{"labels":{"a":"b"}}`), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/events/devices", c.bob, `{"level":"alert"}`), 403, codeForbidden)
	e.want(e.do("PUT", "/api/v1/contexts/devices/press-1", c.bob, `{}`), 201, "")
	e.want(e.do("DELETE", "/api/v1/contexts/devices/press-1", c.bob, nil), 204, "")
	e.want(e.do("PUT", "/api/v1/contexts/empty", e.admin, `{}`), 201, "")
	e.want(e.do("DELETE", "/api/v1/contexts/empty", c.bob, nil), 403, codeForbidden)
	e.want(e.do("PUT", "/api/v1/contexts/devices", e.admin, `{"labels":{"kind":"all"}}`), 200, "")
	e.want(e.do("POST", "/api/v1/events/devices", e.admin, `{"level":"info"}`), 201, "")
	e.want(e.do("DELETE", "/api/v1/contexts/empty", e.admin, nil), 204, "")
	cur, _ := e.model.Get("/devices")
	if cur.Tenant != "" || cur.Type != model.FolderType {
		t.Fatalf("shared folder now %+v", cur)
	}
}

// TestTenantCreateRace has two tenants create the same path at once, many
// times: exactly one wins each time and the other is told not found, never
// made owner of the winner's context.
func TestTenantCreateRace(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.sharedFolders("/race")
	for i := range 20 {
		path := "/api/v1/contexts/race/r" + string(rune('a'+i))
		var wg sync.WaitGroup
		res := make([]resp, 2)
		for j, tok := range []string{c.alice, c.bob} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[j] = e.do("PUT", path, tok, `{"type":"device","variables":{"owner":1}}`)
			}()
		}
		wg.Wait()
		created := 0
		for _, r := range res {
			switch r.status {
			case 201:
				created++
			case 404:
			default:
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
		}
		if created != 1 {
			t.Fatalf("%s: %d creations (%d, %d)", path, created, res[0].status, res[1].status)
		}
	}
}
