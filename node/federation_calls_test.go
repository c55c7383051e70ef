package node

import (
	"context"
	"errors"
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// TestFederationCallCrossings tries to cross the call rule on the path
// of calls arriving over a link (the API's path has TestCallCrossings in
// node/api): another tenant, a tenant user on a shared device, a context
// that is not an enrolled device's own. Only the allowed call makes a
// job, with its device's tenant.
func TestFederationCallCrossings(t *testing.T) {
	ctx := context.Background()
	p := startFedNode(t, "plant7", "")
	n := p.n
	acme := enrollDevice(t, n, "acme", "hw-a", "ping")
	shared := enrollDevice(t, n, "", "hw-s", "ping")
	fake := model.Path("/devices/d-fake")
	if _, err := n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: fake, Type: "device", Tenant: "acme",
		Functions: []model.Function{{Name: "ping"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	local := &fedLocal{n: n}
	call := func(id federation.Identity, path model.Path) error {
		_, err := local.Call(ctx, "hq", federation.CallRequest{Path: path, Function: "ping", Identity: id})
		return err
	}
	acmeOp := federation.Identity{User: "alice", Tenant: "acme"}
	for _, c := range []struct {
		what string
		id   federation.Identity
		path model.Path
		want error
	}{
		{"another tenant's device", federation.Identity{User: "bob", Tenant: "globex"}, acme, model.ErrNotFound},
		{"a shared device by a tenant user", acmeOp, shared, auth.ErrForbidden},
		{"a context that is no enrolled device's", acmeOp, fake, model.ErrInvalid},
		{"a context that is no enrolled device's, by a system user", federation.Identity{User: "admin", System: true}, fake, model.ErrInvalid},
	} {
		if err := call(c.id, c.path); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	if js := n.jobs.Pending("d-fake"); len(js) != 0 {
		t.Fatalf("a context that is no device's sent commands: %+v", js)
	}
	res, err := local.Call(ctx, "hq", federation.CallRequest{Path: acme, Function: "ping", Identity: acmeOp})
	if err != nil {
		t.Fatal(err)
	}
	if j, err := n.jobs.Get(res.Job); err != nil || j.Tenant != "acme" || j.CreatedBy != "alice@hq" {
		t.Fatalf("job %+v, %v", j, err)
	}
	if _, err := local.Call(ctx, "hq", federation.CallRequest{Path: shared, Function: "ping",
		Identity: federation.Identity{User: "admin", System: true}}); err != nil {
		t.Fatalf("a system user on a shared device: %v", err)
	}
}
