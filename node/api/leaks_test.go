package api

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Each test here builds the same node twice: once where another tenant
// holds something, once where it does not exist at all. A tenant user's
// answers must be identical in both (status and body), or they reveal the
// other tenant's data.

// leakEnv is an env whose auth clock stands still, so that answers holding
// a creation time compare equal across two envs.
func leakEnv(t *testing.T) (*env, cast) {
	t.Helper()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newEnv(t, func(_ *Config, a *auth.Config, _ *model.Config) { a.Now = func() time.Time { return at } })
	return e, e.tenants() // with the shared folder /sites
}

// identicalAnswer fails unless a and b have the same status and body.
func identicalAnswer(t *testing.T, what string, exists, missing resp) {
	t.Helper()
	if exists.status != missing.status || !bytes.Equal(exists.body, missing.body) {
		t.Fatalf("%s reveals another tenant's data:\n  exists elsewhere: %d %s\n  does not exist:   %d %s",
			what, exists.status, exists.body, missing.status, missing.body)
	}
}

// Creating a user whose name another tenant uses answers exactly as
// creating a free name: a tenant administrator's users are named within
// its tenant.
func TestLeakUserNames(t *testing.T) {
	answers := func(otherHasCarol bool) (create, get, getQualified resp) {
		e, c := leakEnv(t)
		if otherHasCarol {
			sys := e.principal(e.admin)
			if _, err := e.auth.CreateUser(e.ctx, sys, auth.UserSpec{Name: "carol", Tenant: "globex", Password: "password-carol"}); err != nil {
				t.Fatal(err)
			}
			e.want(e.do("POST", "/api/v1/users", c.gina, map[string]any{"name": "carol", "password": "password-carol"}), 201, "")
		}
		create = e.do("POST", "/api/v1/users", c.ada, map[string]any{"name": "carol", "password": "password-carol"})
		get = e.do("GET", "/api/v1/users/carol", c.ada, nil)
		getQualified = e.do("GET", "/api/v1/users/carol@globex", c.ada, nil)
		return
	}
	c1, g1, q1 := answers(true)
	c2, g2, q2 := answers(false)
	identicalAnswer(t, "POST /users of a name used in another tenant", c1, c2)
	identicalAnswer(t, "GET /users/carol", g1, g2)
	identicalAnswer(t, "GET /users/carol@globex", q1, q2)
	if c1.status != http.StatusCreated {
		t.Fatalf("create: %d %s", c1.status, c1.body)
	}
	var u auth.User
	c1.json(t, &u)
	if u.Name != "carol@acme" || u.Tenant != "acme" {
		t.Fatalf("created %+v, want carol@acme in acme", u)
	}
}

// A tenant administrator names users within its own tenant only, and the
// qualified name logs in.
func TestTenantUserNamesQualified(t *testing.T) {
	e, c := leakEnv(t)
	e.want(e.do("POST", "/api/v1/users", c.ada, map[string]any{"name": "dave@globex", "password": "password-dave"}), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/users", c.ada, map[string]any{"name": "dave@acme", "password": "password-dave"}), 201, "")
	e.want(e.do("POST", "/api/v1/users", c.ada, map[string]any{"name": "dave", "password": "password-dave"}), 409, codeConflict)
	e.want(e.do("POST", "/api/v1/users", e.admin, map[string]any{"name": "sys@acme", "system": true, "password": "password-sys1"}), 400, codeInvalid)
	e.want(e.do("POST", "/api/v1/login", "", map[string]any{"username": "dave@acme", "password": "password-dave"}), 200, "")
}

// PUT under a context of another tenant answers exactly as under a
// missing parent.
func TestLeakPutUnderOtherTenant(t *testing.T) {
	answers := func(otherHasG bool) (direct, deep resp) {
		e, c := leakEnv(t)
		if otherHasG {
			e.want(e.do("PUT", "/api/v1/contexts/sites/g", c.bob, map[string]any{"type": "site"}), 201, "")
		}
		direct = e.do("PUT", "/api/v1/contexts/sites/g/x", c.alice, map[string]any{"type": "device"})
		deep = e.do("PUT", "/api/v1/contexts/sites/g/h/x", c.alice, map[string]any{"type": "device"})
		return
	}
	d1, p1 := answers(true)
	d2, p2 := answers(false)
	identicalAnswer(t, "PUT under another tenant's context", d1, d2)
	identicalAnswer(t, "PUT two levels under another tenant's context", p1, p2)
	if d1.status != http.StatusNotFound {
		t.Fatalf("PUT under a missing parent: %d %s", d1.status, d1.body)
	}
}

// DELETE of one's own context answers the same whether or not another
// tenant's contexts lie under it.
func TestLeakDeleteWithInvisibleChildren(t *testing.T) {
	answers := func(otherChild bool) resp {
		e, c := leakEnv(t)
		e.want(e.do("PUT", "/api/v1/contexts/sites/a", e.admin, map[string]any{"type": "site", "tenant": "acme"}), 201, "")
		if otherChild {
			e.want(e.do("PUT", "/api/v1/contexts/sites/a/g", e.admin, map[string]any{"type": "device", "tenant": "globex"}), 201, "")
		}
		del := e.do("DELETE", "/api/v1/contexts/sites/a", c.alice, nil)
		if otherChild {
			// The other tenant's context is untouched, and what is left
			// at the path is no longer alice's.
			e.want(e.do("GET", "/api/v1/contexts/sites/a/g", c.bob, nil), 200, "")
			var left contextJSON
			r := e.do("GET", "/api/v1/contexts/sites/a", e.admin, nil)
			e.want(r, 200, "")
			r.json(t, &left)
			if left.Tenant != "" || left.Type != model.FolderType || len(left.Labels) > 0 {
				t.Fatalf("left at the path: %+v", left)
			}
		}
		return del
	}
	d1 := answers(true)
	d2 := answers(false)
	identicalAnswer(t, "DELETE of a context with another tenant's children", d1, d2)
	if d1.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", d1.status, d1.body)
	}
}
