package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

type fakeCluster struct {
	role      string
	mu        sync.Mutex
	transfers int
	removed   []string
	barriers  int
	bounded   int // barriers whose context had a deadline
	readErr   error
}

func (f *fakeCluster) ReadBarrier(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.barriers++
	if _, ok := ctx.Deadline(); ok {
		f.bounded++
	}
	return f.readErr
}

func (f *fakeCluster) Status(context.Context) (apitypes.ClusterStatus, error) {
	return apitypes.ClusterStatus{Leader: "r1", Term: 2, Members: []apitypes.ClusterMember{
		{ID: "r1", Address: "10.0.0.1:7400", Role: "voter", State: "leader", AppliedIndex: 9}}}, nil
}

func (f *fakeCluster) Role() string { return f.role }

func (f *fakeCluster) TransferLeadership(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transfers++
	return nil
}

func (f *fakeCluster) RemoveReplica(_ context.Context, id string) error {
	if id != "r2" {
		return fmt.Errorf("%w: replica %q is not a member", model.ErrNotFound, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	return nil
}

// GET /api/v1/cluster is for system administrators: a tenant's admin is
// refused, and a node that is not a cluster answers 501.
func TestClusterStatusEndpoint(t *testing.T) {
	fc := &fakeCluster{role: "follower"}
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Cluster = fc })
	cast := e.tenants()
	r := e.do("GET", "/api/v1/cluster", e.admin, nil)
	e.want(r, http.StatusOK, "")
	var st apitypes.ClusterStatus
	r.json(t, &st)
	if st.Leader != "r1" || st.Term != 2 || len(st.Members) != 1 || st.Members[0].State != "leader" {
		t.Fatalf("status %+v", st)
	}
	for _, tok := range []string{cast.ada, cast.gina, cast.alice} {
		e.want(e.do("GET", "/api/v1/cluster", tok, nil), http.StatusForbidden, codeForbidden)
		e.want(e.do("POST", "/api/v1/cluster/transfer-leader", tok, nil), http.StatusForbidden, codeForbidden)
		e.want(e.do("DELETE", "/api/v1/cluster/members/r2", tok, nil), http.StatusForbidden, codeForbidden)
	}
	if fc.transfers != 0 || len(fc.removed) != 0 {
		t.Fatalf("a refused request acted: %d transfers, removed %v", fc.transfers, fc.removed)
	}
	e.want(e.do("POST", "/api/v1/cluster/transfer-leader", e.admin, nil), http.StatusNoContent, "")
	e.want(e.do("DELETE", "/api/v1/cluster/members/r2", e.admin, nil), http.StatusNoContent, "")
	e.want(e.do("DELETE", "/api/v1/cluster/members/r9", e.admin, nil), http.StatusNotFound, codeNotFound)
	if fc.transfers != 1 || len(fc.removed) != 1 {
		t.Fatalf("%d transfers, removed %v", fc.transfers, fc.removed)
	}
	e.want(e.do("GET", "/api/v1/cluster", "", nil), http.StatusUnauthorized, codeUnauthorized)
	ready := e.do("GET", "/readyz", "", nil)
	e.want(ready, http.StatusOK, "")
	if got := ready.header.Get(ClusterRoleHeader); got != "follower" {
		t.Fatalf("%s = %q", ClusterRoleHeader, got)
	}

	single := newEnv(t)
	single.want(single.do("GET", "/api/v1/cluster", single.admin, nil), http.StatusNotImplemented, codeNotImplemented)
	if got := single.do("GET", "/readyz", "", nil).header.Get(ClusterRoleHeader); got != "" {
		t.Fatalf("a single node names a cluster role: %q", got)
	}
}

// ?consistent=true on a context waits for the replica's read barrier
// (before the handler: its grant check follows), answers 503 when no
// leader confirms it, and refuses a value that is not a boolean.
func TestConsistentRead(t *testing.T) {
	fc := &fakeCluster{role: "follower"}
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Cluster = fc })
	e.want(e.do("GET", "/api/v1/contexts/?consistent=true", e.admin, nil), http.StatusOK, "")
	e.want(e.do("GET", "/api/v1/contexts/", e.admin, nil), http.StatusOK, "")
	if fc.barriers != 1 {
		t.Fatalf("%d read barriers, want 1 (the consistent read only)", fc.barriers)
	}
	e.want(e.do("GET", "/api/v1/contexts/?consistent=maybe", e.admin, nil), http.StatusBadRequest, codeInvalid)
	fc.readErr = fmt.Errorf("%w: read index: no answer", model.ErrNotLeader)
	e.want(e.do("GET", "/api/v1/contexts/?consistent=true", e.admin, nil), http.StatusServiceUnavailable, codeUnavailable)
	fc.readErr = nil
	cast := e.tenants()
	e.want(e.do("GET", "/api/v1/contexts/devices/pump-1?consistent=true", cast.alice, nil), http.StatusNotFound, codeNotFound)
}
