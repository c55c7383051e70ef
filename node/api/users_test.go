package api

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

func TestLoginAndWhoami(t *testing.T) {
	e := newEnv(t, func(_ *Config, a *auth.Config, _ *model.Config) {
		a.LoginFailures = 3
		a.LoginWindow = time.Hour
	})
	e.user(auth.UserSpec{Name: "alice", Password: "alice-password", Tenant: "acme"})

	r := e.do("POST", "/api/v1/login", "", `{"username":"alice","password":"alice-password","ttl":"1h"}`)
	e.want(r, 200, "")
	var s sessionJSON
	r.json(t, &s)
	if s.Token == "" || s.ID == "" || s.User.Name != "alice" || s.User.Tenant != "acme" ||
		s.Expires.Before(time.Now().Add(59*time.Minute)) || s.Expires.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("session %+v", s)
	}
	if strings.Contains(string(r.body), "password") {
		t.Fatalf("login answer mentions a password: %s", r.body)
	}
	r = e.do("GET", "/api/v1/whoami", s.Token, nil)
	e.want(r, 200, "")
	var me whoamiJSON
	r.json(t, &me)
	if me.Name != "alice" || me.TokenID != s.ID || len(me.Grants) != 1 {
		t.Fatalf("whoami %+v", me)
	}

	e.want(e.do("POST", "/api/v1/login", "", `{"username":"alice","password":"alice-password","ttl":"soon"}`), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/login", "", `{"username":"alice","password":"alice-password","ttl":"-1h"}`), 400, codeInvalid)
	// Failed logins: 401 until the limit, then 429 with Retry-After in
	// whole seconds, even for the right password.
	for range 3 {
		e.want(e.do("POST", "/api/v1/login", "", `{"username":"alice","password":"wrong-password"}`), 401, codeUnauthorized)
	}
	r = e.do("POST", "/api/v1/login", "", `{"username":"alice","password":"alice-password"}`)
	e.want(r, 429, codeRateLimited)
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || secs < 3500 || secs > 3600 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// The address is the TCP peer's: a forged X-Forwarded-For does not
	// escape the limit.
	r = e.do("POST", "/api/v1/login", "", `{"username":"nobody","password":"x"}`, "X-Forwarded-For", "203.0.113.9")
	e.want(r, 429, codeRateLimited)
}

func TestUsersEndpoints(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()

	// Tenant admin ada creates a user of her tenant.
	r := e.do("POST", "/api/v1/users", c.ada, `{"name":"olga","password":"olga-password","grants":[{"role":"operator","subtree":"/devices"}]}`)
	e.want(r, 201, "")
	var u auth.User
	r.json(t, &u)
	// A tenant administrator's users are named within its tenant.
	if u.Name != "olga@acme" || u.Tenant != "acme" || u.System || len(u.Grants) != 1 || u.Created.IsZero() {
		t.Fatalf("created %+v", u)
	}
	e.want(e.do("POST", "/api/v1/users", c.ada, `{"name":"olga","password":"olga-password"}`), 409, codeConflict)
	e.want(e.do("POST", "/api/v1/users", c.ada, `{"name":"x","password":"long-enough","tenant":"globex"}`), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/users", c.ada, `{"name":"Bad Name","password":"long-enough"}`), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/users", c.alice, `{"name":"y","password":"long-enough"}`), 403, codeForbidden)

	r = e.do("GET", "/api/v1/users", c.ada, nil)
	e.want(r, 200, "")
	var list struct {
		Users []auth.User `json:"users"`
	}
	r.json(t, &list)
	var got []string
	for _, u := range list.Users {
		got = append(got, u.Name)
	}
	if strings.Join(got, ",") != "ada,alice,olga@acme,vera" {
		t.Fatalf("ada lists %v", got)
	}
	e.want(e.do("GET", "/api/v1/users", c.alice, nil), 403, codeForbidden)

	// Other tenants' users are not found, like missing ones.
	for _, name := range []string{"bob", "admin", "nobody"} {
		e.want(e.do("GET", "/api/v1/users/"+name, c.ada, nil), 404, codeNotFound)
		e.want(e.do("PATCH", "/api/v1/users/"+name, c.ada, `{"disabled":true}`), 404, codeNotFound)
		e.want(e.do("DELETE", "/api/v1/users/"+name, c.ada, nil), 404, codeNotFound)
	}
	e.want(e.do("GET", "/api/v1/users/olga@acme", c.ada, nil), 200, "")
	e.want(e.do("GET", "/api/v1/users/alice", c.alice, nil), 200, "")

	r = e.do("PATCH", "/api/v1/users/olga@acme", c.ada, `{"grants":[{"role":"viewer","subtree":"/"}],"disabled":true}`)
	e.want(r, 200, "")
	u = auth.User{}
	r.json(t, &u)
	if !u.Disabled || u.Grants[0].Role != auth.RoleViewer {
		t.Fatalf("patched %+v", u)
	}
	e.want(e.do("PATCH", "/api/v1/users/olga@acme", c.ada, `{"grants":[{"role":"root","subtree":"/"}]}`), 400, codeInvalid)
	e.want(e.do("PATCH", "/api/v1/users/olga@acme", c.ada, `{"nope":1}`), 400, codeInvalid)
	e.want(e.do("PATCH", "/api/v1/users/ada", c.ada, `{"disabled":true}`), 409, codeConflict)
	e.want(e.do("DELETE", "/api/v1/users/ada", c.ada, nil), 409, codeConflict)
	e.want(e.do("DELETE", "/api/v1/users/olga@acme", c.ada, nil), 204, "")
	e.want(e.do("GET", "/api/v1/users/olga@acme", c.ada, nil), 404, codeNotFound)
}

func TestTokensEndpoints(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()

	r := e.do("POST", "/api/v1/tokens", c.alice, `{"name":"ci","ttl":"720h"}`)
	e.want(r, 201, "")
	var ct createdTokenJSON
	r.json(t, &ct)
	if ct.Secret == "" || ct.ID == "" || ct.User != "alice" || ct.Name != "ci" || ct.Revoked ||
		ct.Expires.Sub(ct.Created) != 720*time.Hour {
		t.Fatalf("created %+v", ct)
	}
	e.want(e.do("GET", "/api/v1/whoami", ct.Secret, nil), 200, "")

	r = e.do("GET", "/api/v1/tokens", c.alice, nil)
	e.want(r, 200, "")
	var list struct {
		Tokens []auth.Token `json:"tokens"`
	}
	r.json(t, &list)
	if len(list.Tokens) != 2 || strings.Contains(string(r.body), ct.Secret) {
		t.Fatalf("tokens %s", r.body)
	}
	// A tenant admin manages her tenant's tokens; others' are not found.
	e.want(e.do("GET", "/api/v1/tokens?user=alice", c.ada, nil), 200, "")
	e.want(e.do("GET", "/api/v1/tokens?user=bob", c.ada, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/tokens?user=bob", c.alice, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/tokens", c.ada, `{"user":"bob","name":"x"}`), 404, codeNotFound)
	e.want(e.do("DELETE", "/api/v1/tokens/"+ct.ID, c.bob, nil), 404, codeNotFound)
	e.want(e.do("DELETE", "/api/v1/tokens/"+ct.ID, c.gina, nil), 404, codeNotFound)
	e.want(e.do("POST", "/api/v1/tokens", c.alice, `{"name":"x","ttl":"forever"}`), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/tokens", c.alice, `{"name":""}`), 400, codeInvalid)

	e.want(e.do("DELETE", "/api/v1/tokens/"+ct.ID, c.ada, nil), 204, "")
	e.want(e.do("GET", "/api/v1/whoami", ct.Secret, nil), 401, codeUnauthorized)
	e.want(e.do("DELETE", "/api/v1/tokens/nope", c.alice, nil), 404, codeNotFound)
}
