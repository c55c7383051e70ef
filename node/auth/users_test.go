package auth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
)

// tenants builds two tenants, each with an admin, and some users:
//
//	acme:   acme-admin (admin /), acme-op (operator /devices), acme-sub (admin /devices)
//	globex: globex-admin (admin /), globex-bob (viewer /)
func tenants(t *testing.T) *env {
	e := newEnv(t)
	admin := []Grant{{RoleAdmin, "/"}}
	e.user(e.admin, UserSpec{Name: "acme-admin", Tenant: "acme", Grants: admin})
	e.user(e.admin, UserSpec{Name: "acme-op", Tenant: "acme", Grants: []Grant{{RoleOperator, "/devices"}}})
	e.user(e.admin, UserSpec{Name: "acme-sub", Tenant: "acme", Grants: []Grant{{RoleAdmin, "/devices"}}})
	e.user(e.admin, UserSpec{Name: "globex-admin", Tenant: "globex", Grants: admin})
	e.user(e.admin, UserSpec{Name: "globex-bob", Tenant: "globex"})
	return e
}

// wantHidden checks err is exactly the error for a user that does not exist.
func wantHidden(t *testing.T, err error, name string) {
	t.Helper()
	want := userNotFound(name)
	if !errors.Is(err, model.ErrNotFound) || err.Error() != want.Error() {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

func TestTenantAdminCannotReachOtherTenant(t *testing.T) {
	e := tenants(t)
	acme, _ := e.as("acme-admin")
	bob, bobSecret := e.as("globex-bob")
	pw := "new password!"
	grants := []Grant{{RoleAdmin, "/"}}
	yes := true

	// Each operation on another tenant's user, on a system user and on a
	// missing user answers the same way.
	for _, name := range []string{"globex-bob", "globex-admin", "admin", "no-such-user"} {
		_, err := e.svc.GetUser(e.ctx, acme, name)
		wantHidden(t, err, name)
		for _, upd := range []UserUpdate{{Password: &pw}, {Grants: &grants}, {Disabled: &yes}, {}} {
			_, err = e.svc.UpdateUser(e.ctx, acme, name, upd)
			wantHidden(t, err, name)
		}
		wantHidden(t, e.svc.DeleteUser(e.ctx, acme, name), name)
		_, err = e.svc.ListTokens(e.ctx, acme, name)
		wantHidden(t, err, name)
		_, _, err = e.svc.CreateToken(e.ctx, acme, name, "x", 0)
		wantHidden(t, err, name)
	}
	// Another tenant's token id looks like a missing one.
	err := e.svc.RevokeToken(e.ctx, acme, bob.TokenID)
	wantErr(t, err, model.ErrNotFound)
	missing := strings.Repeat("a", tokenIDChars)
	if err.Error() != tokenNotFound(bob.TokenID).Error() || e.svc.RevokeToken(e.ctx, acme, missing).Error() != tokenNotFound(missing).Error() {
		t.Fatalf("token errors differ: %v", err)
	}

	// Nothing changed for globex-bob.
	p := e.auth(bobSecret)
	if p.Tenant != "globex" || p.Grants[0] != (Grant{RoleViewer, "/"}) {
		t.Fatalf("globex-bob changed: %+v", p)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "globex-bob", "password-globex-bob", "10.0.0.1", 0); err != nil {
		t.Fatalf("globex-bob's password changed: %v", err)
	}

	// Listing shows the own tenant only.
	users, err := e.svc.ListUsers(e.ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"acme-admin", "acme-op", "acme-sub"}) {
		t.Fatalf("ListUsers = %v", names)
	}

	// Creating outside the tenant or a system user is forbidden; a
	// default tenant is the creator's.
	_, err = e.svc.CreateUser(e.ctx, acme, UserSpec{Name: "mole", Password: "password1", Tenant: "globex"})
	wantErr(t, err, ErrForbidden)
	_, err = e.svc.CreateUser(e.ctx, acme, UserSpec{Name: "mole", Password: "password1", System: true})
	wantErr(t, err, ErrForbidden)
	u := e.user(acme, UserSpec{Name: "acme-new"})
	if u.Tenant != "acme" || u.System {
		t.Fatalf("created %+v", u)
	}
	if e.rec.count(KindUser) != 7 {
		t.Fatal("a forbidden create wrote something")
	}
}

func TestTenantAdminManagesOwnTenant(t *testing.T) {
	e := tenants(t)
	acme, _ := e.as("acme-admin")
	op, opSecret := e.as("acme-op")

	if u, err := e.svc.GetUser(e.ctx, acme, "acme-op"); err != nil || u.Name != "acme-op" {
		t.Fatalf("GetUser = %+v, %v", u, err)
	}
	grants := []Grant{{RoleViewer, "/"}, {RoleOperator, "/devices/line-3/"}}
	u, err := e.svc.UpdateUser(e.ctx, acme, "acme-op", UserUpdate{Grants: &grants})
	if err != nil || u.Grants[1].Subtree != "/devices/line-3" {
		t.Fatalf("UpdateUser = %+v, %v", u, err)
	}
	secret, tok, err := e.svc.CreateToken(e.ctx, acme, "acme-op", "ci", 0)
	if err != nil || tok.User != "acme-op" {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	if p := e.auth(secret); p.User != "acme-op" || len(p.Grants) != 2 {
		t.Fatalf("principal %+v", p)
	}
	toks, err := e.svc.ListTokens(e.ctx, acme, "acme-op")
	if err != nil || len(toks) != 2 {
		t.Fatalf("ListTokens = %+v, %v", toks, err)
	}
	if err := e.svc.RevokeToken(e.ctx, acme, op.TokenID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, opSecret)
	wantErr(t, err, ErrUnauthorized)
	// A tenant admin may demote or remove another tenant admin of its own.
	e.user(e.admin, UserSpec{Name: "acme-admin2", Tenant: "acme", Grants: []Grant{{RoleAdmin, "/"}}})
	if err := e.svc.DeleteUser(e.ctx, acme, "acme-admin2"); err != nil {
		t.Fatal(err)
	}
}

func TestNonAdminsManageOnlyOwnTokens(t *testing.T) {
	e := tenants(t)
	for _, who := range []string{"acme-op", "acme-sub"} {
		p, _ := e.as(who)
		// Own tokens: fine.
		secret, tok, err := e.svc.CreateToken(e.ctx, p, "", "mine", 0)
		if err != nil {
			t.Fatalf("%s: own CreateToken: %v", who, err)
		}
		if toks, err := e.svc.ListTokens(e.ctx, p, ""); err != nil || len(toks) != 2 {
			t.Fatalf("%s: own ListTokens = %v, %v", who, toks, err)
		}
		if err := e.svc.RevokeToken(e.ctx, p, tok.ID); err != nil {
			t.Fatalf("%s: own RevokeToken: %v", who, err)
		}
		_, err = e.svc.Authenticate(e.ctx, secret)
		wantErr(t, err, ErrUnauthorized)
		if u, err := e.svc.GetUser(e.ctx, p, who); err != nil || u.Name != who {
			t.Fatalf("%s: GetUser self = %v, %v", who, u, err)
		}

		// Everything about others, even in the same tenant: forbidden,
		// whether the other exists or not.
		for _, other := range []string{"acme-admin", "globex-bob", "no-such-user"} {
			_, err := e.svc.GetUser(e.ctx, p, other)
			wantErr(t, err, ErrForbidden)
			_, _, err = e.svc.CreateToken(e.ctx, p, other, "x", 0)
			wantErr(t, err, ErrForbidden)
			_, err = e.svc.ListTokens(e.ctx, p, other)
			wantErr(t, err, ErrForbidden)
			wantErr(t, e.svc.DeleteUser(e.ctx, p, other), ErrForbidden)
			yes := true
			_, err = e.svc.UpdateUser(e.ctx, p, other, UserUpdate{Disabled: &yes})
			wantErr(t, err, ErrForbidden)
		}
		_, err = e.svc.ListUsers(e.ctx, p)
		wantErr(t, err, ErrForbidden)
		_, err = e.svc.CreateUser(e.ctx, p, UserSpec{Name: "x", Password: "password1", Grants: []Grant{{RoleViewer, "/devices"}}})
		wantErr(t, err, ErrForbidden)
		// Revoking another's token: not found, like a missing one.
		admin, adminSecret := e.as("acme-admin")
		wantErr(t, e.svc.RevokeToken(e.ctx, p, admin.TokenID), model.ErrNotFound)
		e.auth(adminSecret)
	}
}

// TestForgedPrincipals: hand-made principals that bend the rules get
// nowhere (the API only builds them through Authenticate, but the checks
// must not depend on that).
func TestForgedPrincipals(t *testing.T) {
	e := tenants(t)
	for _, p := range []*Principal{
		{User: "ghost", Grants: []Grant{{RoleAdmin, "/"}}},                          // admin without a tenant
		{User: "ghost", Tenant: "globex", Grants: []Grant{{RoleAdmin, "/devices"}}}, // scoped admin
		{User: "ghost", Tenant: "globex", Grants: []Grant{{"root", "/"}}},           // unknown role
	} {
		_, err := e.svc.GetUser(e.ctx, p, "globex-bob")
		wantErr(t, err, ErrForbidden)
		_, err = e.svc.ListUsers(e.ctx, p)
		wantErr(t, err, ErrForbidden)
		_, err = e.svc.CreateUser(e.ctx, p, UserSpec{Name: "x", Password: "password1", Tenant: "globex"})
		wantErr(t, err, ErrForbidden)
	}
	_, err := e.svc.ListUsers(e.ctx, nil)
	wantErr(t, err, ErrUnauthorized)
}

func TestSystemAdminDoesEverything(t *testing.T) {
	e := tenants(t)
	users, err := e.svc.ListUsers(e.ctx, e.admin)
	if err != nil || len(users) != 6 {
		t.Fatalf("ListUsers = %d, %v", len(users), err)
	}
	root := e.user(e.admin, UserSpec{Name: "root2", System: true, Grants: []Grant{{RoleAdmin, "/"}}})
	if !root.System || root.Tenant != "" {
		t.Fatalf("system user %+v", root)
	}
	root2, _ := e.as("root2")
	// The new system user can manage the first one, across tenants too.
	yes := true
	if _, err := e.svc.UpdateUser(e.ctx, root2, "admin", UserUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, e.adminToken)
	wantErr(t, err, ErrUnauthorized)
	grants := []Grant{{RoleOperator, "/"}}
	if _, err := e.svc.UpdateUser(e.ctx, root2, "globex-bob", UserUpdate{Grants: &grants}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.CreateToken(e.ctx, root2, "globex-bob", "ops", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteUser(e.ctx, root2, "globex-bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GetUser(e.ctx, root2, "globex-bob"); !errors.Is(err, model.ErrNotFound) {
		t.Fatal(err)
	}
	// System users belong to no tenant; tenant users must have one.
	_, err = e.svc.CreateUser(e.ctx, root2, UserSpec{Name: "x", Password: "password1", System: true, Tenant: "acme"})
	wantErr(t, err, model.ErrInvalid)
	_, err = e.svc.CreateUser(e.ctx, root2, UserSpec{Name: "x", Password: "password1"})
	wantErr(t, err, model.ErrInvalid)
	_, err = e.svc.CreateUser(e.ctx, root2, UserSpec{Name: "acme-op", Password: "password1", Tenant: "initech"})
	wantErr(t, err, model.ErrConflict)
}

func TestNobodyLocksThemselvesOut(t *testing.T) {
	e := tenants(t)
	acme, acmeSecret := e.as("acme-admin")
	op, _ := e.as("acme-op")
	yes, no := true, false
	grants := []Grant{{RoleViewer, "/"}}
	for _, p := range []*Principal{e.admin, acme} {
		wantErr(t, e.svc.DeleteUser(e.ctx, p, p.User), model.ErrConflict)
		_, err := e.svc.UpdateUser(e.ctx, p, p.User, UserUpdate{Disabled: &yes})
		wantErr(t, err, model.ErrConflict)
		_, err = e.svc.UpdateUser(e.ctx, p, p.User, UserUpdate{Grants: &grants})
		wantErr(t, err, model.ErrConflict)
		// Restating the same grants or enabled state is not a change.
		same := p.Grants
		if _, err := e.svc.UpdateUser(e.ctx, p, p.User, UserUpdate{Grants: &same, Disabled: &no}); err != nil {
			t.Fatal(err)
		}
	}
	e.auth(acmeSecret)
	// A plain user cannot raise its own grants either.
	admin := []Grant{{RoleAdmin, "/"}}
	_, err := e.svc.UpdateUser(e.ctx, op, "acme-op", UserUpdate{Grants: &admin})
	wantErr(t, err, model.ErrConflict)
	// But anyone may change its own password.
	pw := "my new password"
	if _, err := e.svc.UpdateUser(e.ctx, op, "acme-op", UserUpdate{Password: &pw}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "acme-op", pw, "10.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = e.svc.Login(e.ctx, "acme-op", "password-acme-op", "10.0.0.1", 0)
	wantErr(t, err, ErrUnauthorized)
}

func TestCreateUserValidation(t *testing.T) {
	e := newEnv(t)
	ok := UserSpec{Name: "a", Password: "12345678", Tenant: "acme"}
	if u := e.user(e.admin, ok); len(u.Grants) != 1 || u.Grants[0] != (Grant{RoleViewer, "/"}) {
		t.Fatalf("default grants = %+v", u.Grants)
	}
	good := []string{"z", "0day", "a.b_c-d", strings.Repeat("n", 64)}
	for _, name := range good {
		spec := ok
		spec.Name = name
		if name == "z" {
			spec.Grants = []Grant{{Role: RoleOperator}} // subtree "" is the root
		}
		u := e.user(e.admin, spec)
		if name == "z" && u.Grants[0].Subtree != "/" {
			t.Fatalf("subtree = %q", u.Grants[0].Subtree)
		}
	}
	tooMany := make([]Grant, MaxGrants+1)
	for i := range tooMany {
		tooMany[i] = Grant{RoleViewer, "/"}
	}
	bad := []func(*UserSpec){
		func(s *UserSpec) { s.Name = "" },
		func(s *UserSpec) { s.Name = "Alice" },
		func(s *UserSpec) { s.Name = "-x" },
		func(s *UserSpec) { s.Name = ".x" },
		func(s *UserSpec) { s.Name = "a b" },
		func(s *UserSpec) { s.Name = "a/b" },
		func(s *UserSpec) { s.Name = strings.Repeat("n", 65) },
		func(s *UserSpec) { s.Name = "é" },
		func(s *UserSpec) { s.Password = "1234567" },
		func(s *UserSpec) { s.Password = strings.Repeat("p", 257) },
		func(s *UserSpec) { s.Tenant = "Acme" },
		func(s *UserSpec) { s.Tenant = "ac_me" },
		func(s *UserSpec) { s.Tenant = strings.Repeat("t", 65) },
		func(s *UserSpec) { s.Grants = []Grant{{"root", "/"}} },
		func(s *UserSpec) { s.Grants = []Grant{{RoleAdmin, "/a/../b"}} },
		func(s *UserSpec) { s.Grants = []Grant{{RoleAdmin, "/a//b"}} },
		func(s *UserSpec) { s.Grants = tooMany },
	}
	for i, mod := range bad {
		spec := ok
		spec.Name = "valid-name"
		mod(&spec)
		_, err := e.svc.CreateUser(e.ctx, e.admin, spec)
		if !errors.Is(err, model.ErrInvalid) {
			t.Errorf("case %d (%+v): err = %v, want invalid", i, spec, err)
		}
	}
	p := strings.Repeat("p", MaxPasswordLen)
	e.user(e.admin, UserSpec{Name: "longpw", Password: p, Tenant: "acme"})
	if _, _, _, err := e.svc.Login(e.ctx, "longpw", p, "10.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.CreateUser(e.ctx, e.admin, ok)
	wantErr(t, err, model.ErrConflict)
	_, err = e.svc.CreateUser(e.ctx, nil, ok)
	wantErr(t, err, ErrUnauthorized)
}

func TestUserJSONHasNoSecrets(t *testing.T) {
	e := newEnv(t)
	u := e.user(e.admin, UserSpec{Name: "alice", Password: "hunter2hunter2", Tenant: "acme"})
	b, _ := json.Marshal(u)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	want := []string{"name", "tenant", "system", "grants", "disabled", "created"}
	if len(m) != len(want) {
		t.Fatalf("user JSON: %s", b)
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Fatalf("user JSON lacks %q: %s", k, b)
		}
	}
	raw := string(e.rec.raw(KindUser, "alice"))
	if strings.Contains(raw, "hunter2") || !strings.Contains(raw, `"password_hash":"$argon2id$v=19$m=16,t=1,p=2$`) {
		t.Fatalf("stored user: %s", raw)
	}
	// Every read path returns the public view.
	for _, f := range []func() (User, error){
		func() (User, error) { return e.svc.GetUser(e.ctx, e.admin, "alice") },
		func() (User, error) {
			no := false
			return e.svc.UpdateUser(e.ctx, e.admin, "alice", UserUpdate{Disabled: &no})
		},
	} {
		u, err := f()
		b, _ := json.Marshal(u)
		if err != nil || strings.Contains(string(b), "argon") {
			t.Fatalf("%s, %v", b, err)
		}
	}
}
