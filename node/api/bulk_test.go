package api

import (
	"net/http"
	"testing"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/calls"
)

// withBulk gives e's API a bulk jobs service over its model and jobs.
func withBulk(e *env) *bulk.Service {
	e.t.Helper()
	bs, err := bulk.New(bulk.Config{Tree: e.model, Search: e.store.Search, Jobs: e.jobs,
		Calls: &calls.Service{Tree: e.model, Devices: e.devices, Jobs: e.jobs}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(bs.Close)
	e.api.cfg.Bulk = bs
	return bs
}

// The body of POST /api/v1/jobs is checked strictly, and the bulk
// routes answer 501 on a node without bulk jobs.
func TestBulkJobRequests(t *testing.T) {
	e := newServicesEnv(t, nil)
	e.want(e.do("POST", "/api/v1/jobs", e.admin, `{"function":"reboot","target":{"subtree":"/"}}`), http.StatusNotImplemented, "not_implemented")
	withBulk(e)
	for _, body := range []string{
		`{"function":"reboot"}`,
		`{"function":"reboot","target":{}}`,
		`{"target":{"subtree":"/"}}`,
		`{"function":"reboot","target":{"subtree":"/"},"extra":1}`,
		`{"function":"reboot","target":{"filter":{"sort":"path"}}}`,
		`{"function":"reboot","target":{"subtree":"/a","filter":{"path":"/b"}}}`,
		`{"function":"reboot","target":{"subtree":"/"},"ttl":"1h","deadline":"2030-01-01T00:00:00Z"}`,
		`{"function":"reboot","target":{"subtree":"/"},"ttl":"-1h"}`,
		`{"function":"reboot","target":{"subtree":"/"},"deadline":"2001-01-01T00:00:00Z"}`,
		`{"function":"reboot","target":{"subtree":"/"},"args":[1]}`,
		`{"function":"reboot","target":{"subtree":"/"},"rollout":{"waves":}}`,
		`[]`,
	} {
		r := e.do("POST", "/api/v1/jobs", e.admin, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	r := e.do("POST", "/api/v1/jobs", e.admin, `{"function":"reboot","target":{"subtree":"/devices"},"ttl":"2h","rollout":{"waves":[10,90]}}`)
	e.want(r, http.StatusAccepted, "")
	var b apitypes.BulkJob
	r.json(t, &b)
	if !b.Bulk || b.State != apitypes.BulkRunning || r.header.Get("Location") != "/api/v1/jobs/"+b.ID || string(b.Rollout) != `{"waves":[10,90]}` {
		t.Fatalf("created: %+v %v", b, r.header)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+b.ID, e.admin, nil), http.StatusOK, "")
	e.want(e.do("GET", "/api/v1/jobs/"+b.ID+"/failures?limit=0", e.admin, nil), http.StatusBadRequest, "invalid")
	e.want(e.do("GET", "/api/v1/jobs/"+b.ID+"/failures?after=nonsense", e.admin, nil), http.StatusBadRequest, "invalid")
	e.want(e.do("GET", "/api/v1/jobs/bnotajob/failures", e.admin, nil), http.StatusNotFound, "not_found")

	// A tenant's viewer reads its tenant's job, does not create nor
	// cancel; another tenant sees nothing of it, nor of a system user's.
	alice := e.user(auth.UserSpec{Name: "alice", Password: "password-alice", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}})
	vera := e.user(auth.UserSpec{Name: "vera", Password: "password-vera", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}})
	bob := e.user(auth.UserSpec{Name: "bob", Password: "password-bob", Tenant: "globex", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}})
	// An acme device that declares reboot and never answers.
	en := e.enroll(e.enrollToken(e.admin, `{"group":"g","tenant":"acme"}`).Secret, "hw-a")
	if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: en.Path, Functions: []model.Function{{Name: "reboot"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/api/v1/jobs", alice, `{"function":"reboot","target":{"subtree":"/devices"}}`)
	e.want(r, http.StatusAccepted, "")
	var ab apitypes.BulkJob
	r.json(t, &ab)
	if ab.Tenant != "acme" {
		t.Fatalf("acme's job: %+v", ab)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+ab.ID, vera, nil), http.StatusOK, "")
	e.want(e.do("GET", "/api/v1/jobs/"+b.ID, vera, nil), http.StatusNotFound, "not_found")
	e.want(e.do("POST", "/api/v1/jobs", vera, `{"function":"reboot","target":{"subtree":"/devices"}}`), http.StatusForbidden, "forbidden")
	e.want(e.do("POST", "/api/v1/jobs/"+ab.ID+"/cancel", vera, nil), http.StatusForbidden, "forbidden")
	for _, id := range []string{ab.ID, b.ID} {
		e.want(e.do("GET", "/api/v1/jobs/"+id, bob, nil), http.StatusNotFound, "not_found")
		e.want(e.do("GET", "/api/v1/jobs/"+id+"/failures", bob, nil), http.StatusNotFound, "not_found")
		e.want(e.do("POST", "/api/v1/jobs/"+id+"/cancel", bob, nil), http.StatusNotFound, "not_found")
	}
	e.want(e.do("POST", "/api/v1/jobs", bob, `{"function":"reboot","target":{"filter":{"tenant":"acme"}}}`), http.StatusForbidden, "forbidden")
	e.want(e.do("POST", "/api/v1/jobs/"+ab.ID+"/cancel", alice, nil), http.StatusOK, "")
	e.want(e.do("POST", "/api/v1/jobs/"+ab.ID+"/cancel", alice, nil), http.StatusConflict, "conflict")
}
