package api

import (
	"net/http"
	"slices"
	"strings"
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
		`{"function":"reboot","target":{"subtree":"/"},"rollout":{"health":{"online":true}}}`,
		`{"function":"reboot","target":{"subtree":"/"},"rollout":{"health":{"vars":{"fw":2},"within":"1m"}}}`,
		`[]`,
	} {
		r := e.do("POST", "/api/v1/jobs", e.admin, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	if r := e.do("POST", "/api/v1/jobs", e.admin, `{"function":"reboot","target":{"subtree":"/"},"rollout":{"health":{"online":true}}}`); !strings.Contains(string(r.body), "rollout health within: required") {
		t.Errorf("a health gate without within: %s", r.body)
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

// GET /api/v1/jobs?bulk=true lists the bulk jobs the caller may see,
// newest first, page by page; a viewer lists what it may not operate,
// and device jobs are listed as before without the parameter.
func TestBulkJobList(t *testing.T) {
	e := newServicesEnv(t, nil)
	e.want(e.do("GET", "/api/v1/jobs?bulk=true", e.admin, nil), http.StatusNotImplemented, "not_implemented")
	withBulk(e)
	alice := e.user(auth.UserSpec{Name: "alice", Password: "password-alice", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}})
	vera := e.user(auth.UserSpec{Name: "vera", Password: "password-vera", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}})
	bob := e.user(auth.UserSpec{Name: "bob", Password: "password-bob", Tenant: "globex", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}})
	create := func(p string, fn string) string {
		t.Helper()
		r := e.do("POST", "/api/v1/jobs", p, `{"function":"`+fn+`","target":{"subtree":"/devices"}}`)
		e.want(r, http.StatusAccepted, "")
		var b apitypes.BulkJob
		r.json(t, &b)
		return b.ID
	}
	sys := create(e.admin, "sys")
	a1, a2, a3 := create(alice, "one"), create(alice, "two"), create(alice, "three")
	g := create(bob, "theirs")
	list := func(p string, query string) apitypes.BulkJobPage {
		t.Helper()
		r := e.do("GET", "/api/v1/jobs?bulk=true"+query, p, nil)
		e.want(r, http.StatusOK, "")
		var pg apitypes.BulkJobPage
		r.json(t, &pg)
		return pg
	}
	ids := func(pg apitypes.BulkJobPage) []string {
		var out []string
		for _, j := range pg.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	if got := ids(list(e.admin, "")); !slices.Equal(got, []string{g, a3, a2, a1, sys}) {
		t.Errorf("system user lists %v, want all five", got)
	}
	// Another tenant's jobs and a system user's are not listed.
	if got := ids(list(bob, "")); !slices.Equal(got, []string{g}) {
		t.Errorf("bob lists %v, want %v", got, g)
	}
	pg := list(vera, "&limit=2")
	if got := ids(pg); !slices.Equal(got, []string{a3, a2}) || pg.Next != a2 {
		t.Errorf("vera's first page %v next %q, want [%s %s] next %s", got, pg.Next, a3, a2, a2)
	}
	j := pg.Jobs[0]
	if !j.Bulk || j.Function != "three" || j.State == "" || j.CreatedBy != "alice" || j.Tenant != "acme" || j.Created.IsZero() {
		t.Errorf("summary %+v", j)
	}
	if pg = list(vera, "&limit=2&before="+pg.Next); !slices.Equal(ids(pg), []string{a1}) || pg.Next != "" {
		t.Errorf("vera's second page %v next %q", ids(pg), pg.Next)
	}
	// The viewer lists it but may not act on it.
	for _, action := range []string{"cancel", "pause", "resume", "retry"} {
		e.want(e.do("POST", "/api/v1/jobs/"+a1+"/"+action, vera, nil), http.StatusForbidden, "forbidden")
	}
	if pg = list(vera, "&consistent=true"); len(pg.Jobs) != 3 {
		t.Errorf("a consistent read lists %v", ids(pg))
	}
	e.want(e.do("GET", "/api/v1/jobs?bulk=yes", vera, nil), http.StatusBadRequest, "invalid")
	e.want(e.do("GET", "/api/v1/jobs?bulk=true&state=running", vera, nil), http.StatusBadRequest, "invalid")
	e.want(e.do("GET", "/api/v1/jobs?bulk=true&limit=0", vera, nil), http.StatusBadRequest, "invalid")
	// Without the parameter (or with bulk=false) the device job listing
	// is unchanged: no bulk job in it.
	for _, q := range []string{"", "?bulk=false"} {
		r := e.do("GET", "/api/v1/jobs"+q, alice, nil)
		e.want(r, http.StatusOK, "")
		var dp apitypes.JobPage
		r.json(t, &dp)
		for _, dj := range dp.Jobs {
			if bulk.IsID(dj.ID) {
				t.Errorf("device job listing %q has bulk job %s", q, dj.ID)
			}
		}
	}
	// A revoked token reaches no bulk route.
	p := e.principal(alice)
	if err := e.auth.RevokeToken(e.ctx, p, p.TokenID); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][3]string{
		{"GET", "/api/v1/jobs?bulk=true", ""}, {"GET", "/api/v1/jobs/" + a1, ""}, {"GET", "/api/v1/jobs/" + a1 + "/failures", ""},
		{"POST", "/api/v1/jobs", `{"function":"x","target":{"subtree":"/devices"}}`},
		{"POST", "/api/v1/jobs/" + a1 + "/pause", ""}, {"POST", "/api/v1/jobs/" + a1 + "/cancel", ""},
	} {
		var body any
		if r[2] != "" {
			body = r[2]
		}
		e.want(e.do(r[0], r[1], alice, body), http.StatusUnauthorized, codeUnauthorized)
	}
}
