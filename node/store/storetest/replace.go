package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/strata-dm/strata/model"
)

// testReplace: a replacing put sets the whole state (mirrors apply
// snapshots with it), while an ordinary put merges.
func testReplace(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{
		Op: model.OpPut, Path: "/r/a", Type: "device", Tenant: "acme",
		Labels:    map[string]string{"site": "p7", "old": "x"},
		Variables: map[string]model.Variable{"os": v(t, `"linux"`), "gone": v(t, `1`)},
		Functions: []model.Function{{Name: "reboot"}}, SetFunctions: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, model.Mutation{
		Op: model.OpPut, Path: "/r/a", Type: "device", Replace: true,
		Labels:    map[string]string{"site": "p8"},
		Variables: map[string]model.Variable{"os": v(t, `"bsd"`)},
	}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Context("/r/a")
	if err != nil {
		t.Fatal(err)
	}
	if c.Tenant != "" || len(c.Labels) != 1 || c.Labels["site"] != "p8" || len(c.Variables) != 1 ||
		string(c.Variables["os"].Value) != `"bsd"` || len(c.Functions) != 0 {
		t.Fatalf("after replace: %+v", c)
	}
	kids, err := s.Children("/r", "", 10)
	if err != nil || len(kids) != 1 || kids[0].Tenant != "" {
		t.Fatalf("child index after replace: %+v, %v", kids, err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/r/a", Replace: true, Actor: "acme"}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("replace on behalf of a tenant: %v", err)
	}
}
