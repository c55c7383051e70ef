package node

import (
	"context"
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/node/audit"
)

// A job read over a link that is refused (another tenant's job) leaves an
// audit record naming only the job id asked for: the reader's tenant
// administrator, who lists that record, learns nothing of the job's
// device or function.
func TestFederationJobReadRefusalLeaksNothing(t *testing.T) {
	ctx := context.Background()
	p := startFedNode(t, "plant7", "")
	n := p.n
	acme := enrollDevice(t, n, "acme", "hw-secret-pump", "open-valve")
	local := &fedLocal{n: n}
	res, err := local.Call(ctx, "hq", federation.CallRequest{Path: acme, Function: "open-valve",
		Identity: federation.Identity{User: "alice", Tenant: "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = local.Job(ctx, "hq", federation.Identity{User: "mallory", Tenant: "globex"}, res.Job); err == nil {
		t.Fatal("globex read acme's job")
	}
	recs, err := n.audit.List(ctx, 100, func(r *audit.Record) bool { return !r.System && r.Tenant == "globex" })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("globex's audit: %d records, want the refused read", len(recs))
	}
	if r := recs[0]; r.Path != "" || r.Function != "" || r.Target != res.Job || r.Outcome != "not_found" {
		t.Fatalf("globex's audit of the refused read: op=%s path=%q function=%q target=%q outcome=%s", r.Op, r.Path, r.Function, r.Target, r.Outcome)
	}
}
