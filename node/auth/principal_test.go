package auth

import (
	"testing"

	"github.com/strata-dm/strata/model"
)

func TestCanMatrix(t *testing.T) {
	p := &Principal{User: "u", Tenant: "acme", Grants: []Grant{
		{Role: RoleViewer, Subtree: "/"},
		{Role: RoleOperator, Subtree: "/devices"},
		{Role: RoleAdmin, Subtree: "/devices/line-3"},
	}}
	cases := []struct {
		role Role
		path string
		want bool
	}{
		{RoleViewer, "/", true},
		{RoleViewer, "/groups/x", true},
		{RoleOperator, "/", false},
		{RoleOperator, "/groups", false},
		{RoleOperator, "/devices", true},
		{RoleOperator, "/devices/pump-12", true},
		{RoleOperator, "/devicesx", false}, // prefix of a name is not a subtree
		{RoleOperator, "/devices-old/a", false},
		{RoleAdmin, "/devices", false},
		{RoleAdmin, "/devices/line-3", true},
		{RoleAdmin, "/devices/line-3/pump", true},
		{RoleAdmin, "/devices/line-30", false},
		{RoleAdmin, "/", false},
		{"superuser", "/", false},
		{"", "/", false},
	}
	for _, c := range cases {
		if got := p.Can(c.role, model.MustPath(c.path)); got != c.want {
			t.Errorf("Can(%s, %s) = %v, want %v", c.role, c.path, got, c.want)
		}
	}
	if p.Can(RoleViewer, "") {
		t.Error("zero path allowed")
	}

	sys := &Principal{User: "root", System: true}
	if !sys.Can(RoleAdmin, model.MustPath("/anything/at/all")) {
		t.Error("system principal denied")
	}
	var nilP *Principal
	if nilP.Can(RoleViewer, model.Root) || nilP.SeesTenant("") {
		t.Error("nil principal allowed")
	}
	none := &Principal{User: "n", Tenant: "acme"}
	if none.Can(RoleViewer, model.Root) {
		t.Error("principal without grants allowed")
	}
	// Malformed grants (never stored, but a hand-made Principal may hold
	// them) allow nothing; "" is the root as in a missing JSON field.
	bad := &Principal{User: "b", Tenant: "acme", Grants: []Grant{
		{Role: "root", Subtree: "/"},
		{Role: RoleAdmin, Subtree: "/a/../b"},
		{Role: RoleAdmin, Subtree: "/x/"},
	}}
	if bad.Can(RoleViewer, model.MustPath("/a")) || bad.Can(RoleViewer, model.MustPath("/b")) {
		t.Error("malformed grant allowed")
	}
	if !bad.Can(RoleAdmin, model.MustPath("/x/y")) {
		t.Error("trailing slash tolerated by ParsePath should still match")
	}
	empty := &Principal{User: "e", Tenant: "acme", Grants: []Grant{{Role: RoleViewer}}}
	if !empty.Can(RoleViewer, model.MustPath("/a")) {
		t.Error(`subtree "" should be the root`)
	}
}

func TestSeesTenant(t *testing.T) {
	p := &Principal{User: "u", Tenant: "acme"}
	for tenant, want := range map[string]bool{"acme": true, "": true, "globex": false, "acme2": false} {
		if got := p.SeesTenant(tenant); got != want {
			t.Errorf("SeesTenant(%q) = %v", tenant, got)
		}
	}
	sys := &Principal{User: "root", System: true}
	if !sys.SeesTenant("globex") {
		t.Error("system principal must see every tenant")
	}
}

func TestManagesUsers(t *testing.T) {
	cases := []struct {
		name string
		p    Principal
		want bool
	}{
		{"system", Principal{System: true}, true},
		{"tenant admin", Principal{Tenant: "acme", Grants: []Grant{{RoleAdmin, "/"}}}, true},
		{"subtree admin", Principal{Tenant: "acme", Grants: []Grant{{RoleAdmin, "/devices"}}}, false},
		{"operator on root", Principal{Tenant: "acme", Grants: []Grant{{RoleOperator, "/"}}}, false},
		{"admin without tenant", Principal{Grants: []Grant{{RoleAdmin, "/"}}}, false},
	}
	for _, c := range cases {
		if got := c.p.managesUsers(); got != c.want {
			t.Errorf("%s: managesUsers = %v", c.name, got)
		}
	}
}

func TestMayGiveNoEscalation(t *testing.T) {
	p := &Principal{Tenant: "acme", Grants: []Grant{
		{RoleOperator, "/devices"},
		{RoleAdmin, "/groups/a"},
	}}
	cases := []struct {
		give []Grant
		want bool
	}{
		{[]Grant{{RoleViewer, "/devices"}}, true},
		{[]Grant{{RoleOperator, "/devices/x"}}, true},
		{[]Grant{{RoleAdmin, "/groups/a/b"}, {RoleViewer, "/devices"}}, true},
		{[]Grant{{RoleAdmin, "/devices"}}, false},                          // role above held
		{[]Grant{{RoleViewer, "/"}}, false},                                // subtree above held
		{[]Grant{{RoleViewer, "/groups"}}, false},                          // parent of held
		{[]Grant{{RoleViewer, "/devices"}, {RoleViewer, "/other"}}, false}, // one bad grant spoils all
		{[]Grant{{"root", "/devices"}}, false},
	}
	for _, c := range cases {
		if got := p.mayGive(c.give); got != c.want {
			t.Errorf("mayGive(%v) = %v, want %v", c.give, got, c.want)
		}
	}
	if !(&Principal{System: true}).mayGive([]Grant{{RoleAdmin, "/"}}) {
		t.Error("system may give anything")
	}
}
