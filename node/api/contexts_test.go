package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

func TestContextLifecycle(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()

	r := e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice,
		`{"type":"device","labels":{"site":"north","x":"1"},"variables":{"temp":21.5,"on":true,"cfg":{ "a" : [1, 2] },"name":"p","none":null}}`)
	e.want(r, 201, "")
	var got contextJSON
	r.json(t, &got)
	if got.Path != "/devices/pump-1" || got.Type != "device" || got.Tenant != "acme" || got.Version == 0 {
		t.Fatalf("created %+v", got)
	}
	wantVars := map[string][2]string{
		"temp": {"21.5", "number"}, "on": {"true", "bool"}, "cfg": {`{"a":[1,2]}`, "object"},
		"name": {`"p"`, "string"}, "none": {"null", "null"},
	}
	for name, w := range wantVars {
		v := got.Variables[name]
		if string(v.Value) != w[0] || string(v.Type) != w[1] || v.Quality != model.QualityGood || v.Time.IsZero() {
			t.Errorf("variable %s = %+v, want %s", name, v, w)
		}
	}
	// The raw body shows values as JSON, never as strings of JSON, and
	// functions as an array.
	if !strings.Contains(string(r.body), `"temp":{"value":21.5,"type":"number"`) || !strings.Contains(string(r.body), `"functions":[]`) {
		t.Fatalf("body %s", r.body)
	}

	// Update: labels and variables merge; an empty label value removes it.
	r = e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{"labels":{"x":""},"variables":{"temp":22}}`)
	e.want(r, 200, "")
	got = contextJSON{}
	r.json(t, &got)
	if got.Labels["site"] != "north" || got.Labels["x"] != "" || len(got.Labels) != 1 ||
		string(got.Variables["temp"].Value) != "22" || string(got.Variables["on"].Value) != "true" || got.Type != "device" {
		t.Fatalf("updated %+v", got)
	}

	// The missing ancestor became a shared folder.
	r = e.do("GET", "/api/v1/contexts/devices", c.alice, nil)
	e.want(r, 200, "")
	got = contextJSON{}
	r.json(t, &got)
	if got.Type != model.FolderType || got.Tenant != "" || len(got.Variables) != 0 {
		t.Fatalf("ancestor %+v", got)
	}
	// The root reads as a folder.
	e.want(e.do("GET", "/api/v1/contexts/", c.alice, nil), 200, "")

	e.want(e.do("DELETE", "/api/v1/contexts/devices", e.admin, nil), 409, codeConflict)
	e.want(e.do("DELETE", "/api/v1/contexts/devices/pump-1", c.alice, nil), 204, "")
	e.want(e.do("GET", "/api/v1/contexts/devices/pump-1", c.alice, nil), 404, codeNotFound)
	e.want(e.do("DELETE", "/api/v1/contexts/devices/pump-1", c.alice, nil), 404, codeNotFound)
	e.want(e.do("DELETE", "/api/v1/contexts/devices", e.admin, nil), 204, "")
	e.want(e.do("PUT", "/api/v1/contexts/", e.admin, `{}`), 400, codeInvalid)
}

func TestContextRoles(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/sites/north", c.alice, `{"type":"site"}`), 201, "")

	e.want(e.do("GET", "/api/v1/contexts/devices/pump-1", c.vera, nil), 200, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.vera, `{"type":"x"}`), 403, codeForbidden)
	e.want(e.do("DELETE", "/api/v1/contexts/devices/pump-1", c.vera, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/events/devices/pump-1", c.vera, `{"level":"info"}`), 403, codeForbidden)
	// Outside her subtree: forbidden whether or not the context exists.
	for _, p := range []string{"/api/v1/contexts/sites/north", "/api/v1/contexts/sites/nothing", "/api/v1/events/sites/north"} {
		e.want(e.do("GET", p, c.vera, nil), 403, codeForbidden)
	}
}

func TestStrictBodies(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.MaxBodyBytes = 4096 })
	put := func(body string) resp { return e.do("PUT", "/api/v1/contexts/a/b", e.admin, body) }
	for _, body := range []string{
		``, ` `, `null`, `[]`, `"x"`, `{`, `{"type":"device"} {"type":"x"}`, `{"type":"device"}x`,
		`{"typo":"device"}`, `{"type":1}`, `{"labels":{"a":1}}`, `{"variables":{"bad name":1}}`,
		`{"variables":{"..":1}}`, `{"variables":{"a":}}`, `{"type":"a\u0000b"}`, `{"tenant":"Not Valid"}`,
		`{"labels":{"":"x"}}`, `{"type":"` + strings.Repeat("t", 65) + `"}`,
	} {
		e.want(put(body), 400, codeInvalid)
	}
	big := `{"type":"device","labels":{"a":"` + strings.Repeat("x", 5000) + `"}}`
	e.want(put(big), 413, codeTooLarge)
	// Whitespace padding past the limit after a valid value: still too large.
	e.want(put(`{"type":"device"}`+strings.Repeat(" ", 5000)), 413, codeTooLarge)
	e.want(e.do("POST", "/api/v1/events/a", e.admin, big), 413, codeTooLarge)
	e.want(e.do("POST", "/api/v1/users", e.admin, `{"name":"x","passwd":"y"}`), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/login", "", `{"username":"admin","password":"x","extra":1}`), 400, codeInvalid)
	e.want(put(`{"type":"device"}`+"\n"), 201, "")
}

// TestHostilePaths tries to make a URL path name a context other than the
// one it spells; each attempt must be refused with 400 and change nothing.
func TestHostilePaths(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/acme-1", c.alice, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/globex-1", c.bob, `{"type":"device"}`), 201, "")

	hostile := []string{
		"/devices/x/../globex-1",
		"/devices/./globex-1",
		"/devices//globex-1",
		"/devices/globex-1/",
		"/devices/globex-1/.",
		"/devices/x/..",
		"/devices%2Fglobex-1",
		"/devices%2fglobex-1",
		"/devices/x%2F..%2Fglobex-1",
		"/devices/%2E%2E/devices/globex-1",
		"/devices/%2e/globex-1",
		"/devices/.%2E/x",
		"/devices/%252Fglobex-1",
		"/devices/a%00b",
		"/devices/a%20b",
		"/devices/a%5Cb",
		"/devices/a%3Fb",
		"/devices/%",
		"/devices/%zz",
		"/devices/" + strings.Repeat("x", 129),
		"/" + strings.Repeat("a/", 33) + "a",
	}
	for _, p := range hostile {
		for _, prefix := range []string{"/api/v1/contexts", "/api/v1/events"} {
			for _, method := range []string{"GET", "PUT", "DELETE", "POST"} {
				body := `{"type":"stolen","variables":{"x":1}}`
				if prefix == "/api/v1/events" {
					body = `{"level":"alert","name":"stolen"}`
				}
				r := e.do(method, prefix+p, c.alice, body)
				if r.status == 405 && (method == "POST" && prefix == "/api/v1/contexts" || method == "PUT" || method == "DELETE") {
					continue // not routed at all (or not a function call)
				}
				if r.status != 400 {
					t.Fatalf("%s %s%s: %d %s", method, prefix, p, r.status, r.body)
				}
				if strings.Contains(string(r.body), "globex-1\"") && !strings.Contains(string(r.body), "invalid") {
					t.Fatalf("%s %s%s: %s", method, prefix, p, r.body)
				}
			}
		}
	}
	// Bob's context is as he left it, with no event.
	cur, err := e.model.Get("/devices/globex-1")
	if err != nil || cur.Type != "device" || cur.Tenant != "globex" || len(cur.Variables) != 0 {
		t.Fatalf("globex-1 after the attempts: %+v, %v", cur, err)
	}
	if evs, _ := e.model.Events("/devices/globex-1", model.EventQuery{}); len(evs) != 0 {
		t.Fatalf("events recorded: %+v", evs)
	}
	// A percent-encoded character that is allowed in a name is accepted
	// and means itself.
	e.want(e.do("PUT", "/api/v1/contexts/devices/%C3%BC-1", c.alice, `{}`), 201, "")
	if _, err := e.model.Get("/devices/ü-1"); err != nil {
		t.Fatal(err)
	}
}

func TestPathExtraction(t *testing.T) {
	ok := map[string]model.Path{
		"/api/v1/contexts":             "/",
		"/api/v1/contexts/":            "/",
		"/api/v1/contexts/a":           "/a",
		"/api/v1/contexts/a/b%2Dc":     "/a/b-c",
		"/api/v1/contexts/a/%C3%BC":    "/a/ü",
		"/api/v1/contexts/functions/x": "/functions/x",
	}
	for in, want := range ok {
		got, err := contextPathOf(in, contextsPrefix)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/api/v1/contextsx", "/api/v1/contexts//", "/api/v1/contexts/a/", "/api/v1/contexts/a%2Fb", "/api/v1/contexts/.."} {
		if got, err := contextPathOf(in, contextsPrefix); err == nil {
			t.Errorf("%s: accepted as %q", in, got)
		}
	}
}

func TestFunctionCalls(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{"type":"device"}`), 201, "")
	_, err := e.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/pump-1",
		Functions: []model.Function{{Name: "reboot", Args: json.RawMessage(`{"type":"object"}`)}}, SetFunctions: true})
	if err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/api/v1/contexts/devices/pump-1", c.alice, nil)
	if !strings.Contains(string(r.body), `"functions":[{"name":"reboot","args":{"type":"object"}}]`) {
		t.Fatalf("functions: %s", r.body)
	}
	e.want(e.do("POST", "/api/v1/contexts/devices/pump-1/functions/reboot", c.alice, `{}`), 501, codeNotImplemented)
	r = e.do("POST", "/api/v1/contexts/devices/pump-1/functions/explode", c.alice, `{}`)
	e.want(r, 404, codeNotFound)
	if !strings.Contains(string(r.body), `function \"explode\"`) || !strings.Contains(string(r.body), "not found") {
		t.Fatalf("body %s", r.body)
	}
	e.want(e.do("POST", "/api/v1/contexts/devices/pump-1", c.alice, `{}`), 405, codeMethodNotAllowed)
	e.want(e.do("POST", "/api/v1/contexts/devices/pump-1/functions/reboot", c.vera, `{}`), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/contexts/devices/nothing/functions/reboot", c.alice, `{}`), 404, codeNotFound)
	// A context may be called "functions": it is reached with GET.
	e.want(e.do("PUT", "/api/v1/contexts/devices/functions", c.alice, `{}`), 201, "")
	e.want(e.do("GET", "/api/v1/contexts/devices/functions", c.alice, nil), 200, "")
}

func TestInternalErrorHidesDetails(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("PUT", "/api/v1/contexts/a", e.admin, `{}`), 201, "")
	e.model.Close()
	e.want(e.do("PUT", "/api/v1/contexts/b", e.admin, `{}`), 503, codeUnavailable)
	e.store.Close()
	r := e.do("GET", "/api/v1/contexts/b", e.admin, nil)
	e.want(r, 500, codeInternal)
	id := r.header.Get("X-Request-Id")
	if id == "" || !strings.Contains(string(r.body), id) || strings.Contains(strings.ToLower(string(r.body)), "closed") {
		t.Fatalf("500 body %s (request id %q)", r.body, id)
	}
}
