package calls

import (
	"context"
	"errors"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/store"
)

var (
	sys   = &auth.Principal{User: "root", System: true}
	alice = &auth.Principal{User: "alice", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}}
	vera  = &auth.Principal{User: "vera", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}}
	bob   = &auth.Principal{User: "bob", Tenant: "globex", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}}
)

func newService(t *testing.T) (*Service, *model.Model) {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	ds, err := devices.New(devices.Config{Tree: m})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jobs.New(jobs.Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(js.Close)
	return &Service{Tree: m, Devices: ds, Jobs: js}, m
}

// enroll enrolls hw in tenant and declares function ping.
func enroll(t *testing.T, s *Service, m *model.Model, tenant, hw string) devices.Enrollment {
	t.Helper()
	ctx := context.Background()
	tok, _, err := s.Devices.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Devices.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: hw}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path, Functions: []model.Function{{Name: "ping"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCallRule tries every way across the rule; only the allowed calls
// make jobs, each with its device's tenant.
func TestCallRule(t *testing.T) {
	s, m := newService(t)
	ctx := context.Background()
	acme := enroll(t, s, m, "acme", "hw-a")
	shared := enroll(t, s, m, "", "hw-s")
	revoked := enroll(t, s, m, "acme", "hw-r")
	if _, err := s.Devices.Revoke(ctx, sys, revoked.DeviceID); err != nil {
		t.Fatal(err)
	}
	fake := model.Path("/devices/d-fake")
	other := model.Path("/sites/north")
	for _, p := range []model.Path{fake, other} {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: devices.DeviceType, Tenant: "acme",
			Functions: []model.Function{{Name: "ping"}}, SetFunctions: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		what string
		p    *auth.Principal
		path model.Path
		fn   string
		want error
	}{
		{"a viewer", vera, acme.Path, "ping", auth.ErrForbidden},
		{"another tenant", bob, acme.Path, "ping", model.ErrNotFound},
		{"a missing context", alice, "/devices/d-none", "ping", model.ErrNotFound},
		{"an undeclared function", alice, acme.Path, "explode", model.ErrNotFound},
		{"a shared device by a tenant user", alice, shared.Path, "ping", ErrShared},
		{"a device context without its device", alice, fake, "ping", ErrNotDevice},
		{"a context outside /devices", sys, other, "ping", ErrNotDevice},
		{"a revoked device", alice, revoked.Path, "ping", ErrRevoked},
	} {
		if _, err := s.Call(ctx, c.p, Request{Path: c.path, Function: c.fn, By: c.p.User}); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	if n := s.Jobs.Active(); n != 0 {
		t.Fatalf("refused calls made %d jobs", n)
	}
	// A context another tenant changed after enrollment is not the
	// device's own until it is taken back.
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: acme.Path, Tenant: "globex"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Call(ctx, bob, Request{Path: acme.Path, Function: "ping"}); !errors.Is(err, ErrNotDevice) {
		t.Fatalf("a call through a taken-over context: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: acme.Path, Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p      *auth.Principal
		path   model.Path
		tenant string
	}{{alice, acme.Path, "acme"}, {sys, acme.Path, "acme"}, {sys, shared.Path, ""}} {
		j, err := s.Call(ctx, c.p, Request{Path: c.path, Function: "ping", By: c.p.User})
		if err != nil || j.Tenant != c.tenant || j.CreatedBy != c.p.User {
			t.Fatalf("%s on %s: %+v, %v", c.p.User, c.path, j, err)
		}
	}
	// Calls over a link carry the operator's tenant and the link's grant.
	if _, err := s.Call(ctx, FederationPrincipal("bob", "globex", false), Request{Path: acme.Path, Function: "ping"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("another tenant over a link: %v", err)
	}
	if _, err := s.Call(ctx, FederationPrincipal("alice", "acme", false), Request{Path: shared.Path, Function: "ping"}); !errors.Is(err, ErrShared) {
		t.Fatalf("a shared device over a link: %v", err)
	}
}
