package devices

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// TestOwnerAndReclaim: Owner answers only for a device's own context; a
// context that is not its own is taken back when the device
// authenticates, and counted.
func TestOwnerAndReclaim(t *testing.T) {
	s, m := newService(t)
	ctx := context.Background()
	secret, _, err := s.CreateToken(ctx, tenantA, TokenSpec{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-1"}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.Owner(e.Path); err != nil || d.ID != e.DeviceID || d.Tenant != "a" {
		t.Fatalf("owner: %+v, %v", d, err)
	}
	if _, err := s.Owner("/devices/d-nothing"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("owner of nothing: %v", err)
	}
	if _, err := s.Owner("/elsewhere/x"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("owner of a path outside /devices: %v", err)
	}
	// Someone else's context at the device's path (written past the API).
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path, Tenant: "b",
		Functions: []model.Function{{Name: "run-script"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Owner(e.Path); !errors.Is(err, ErrNotOwnContext) {
		t.Fatalf("owner of a squatted context: %v", err)
	}
	if _, err := s.Authenticate(e.DeviceID, e.MQTTPassword, "10.0.0.1:2"); err != nil {
		t.Fatal(err)
	}
	c, err := m.Get(e.Path)
	if err != nil || c.Tenant != "a" || c.Type != DeviceType || len(c.Functions) != 0 || c.Labels["group"] != "g" {
		t.Fatalf("context after authentication: %+v, %v", c, err)
	}
	if got := counter(t, s.reclaimed); got != 1 {
		t.Fatalf("reclaimed %v", got)
	}
}

// TestFailureLimitsApart: failures of MQTT authentication and of
// enrollment are counted apart and per identity.
func TestFailureLimitsApart(t *testing.T) {
	s, _ := newService(t) // 3 failures per minute
	ctx := context.Background()
	secret, _, err := s.CreateToken(ctx, sys, TokenSpec{Group: "g", Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-1"}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	const nat = "10.0.0.1:9"
	for range 5 {
		s.Authenticate("d-gone", "sd_wrong", nat)
	}
	if _, err := s.Authenticate("d-gone", "sd_wrong", nat); !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("the failing identity: %v", err)
	}
	if _, err := s.Authenticate(e.DeviceID, e.MQTTPassword, nat); err != nil {
		t.Fatalf("another device behind the address: %v", err)
	}
	if _, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-2"}, nat); err != nil {
		t.Fatalf("an enrollment behind the address: %v", err)
	}
	if got := counter(t, s.limited.WithLabelValues("mqtt", "identity")); got < 1 {
		t.Fatalf("mqtt identity refusals %v", got)
	}
	if got := counter(t, s.limited.WithLabelValues("enroll", "identity")); got != 0 {
		t.Fatalf("enroll refusals %v", got)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
