package api

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/jobs"
)

// jobAnswer is the answer to a function call: a job with "job".
type jobAnswer struct {
	JobID string `json:"job"`
	jobs.Job
}

// device enrolls hardware hw with a fresh enrollment token of the holder
// of token and declares functions on its context, as its inventory would.
func (e *env) device(token, hw string, functions ...string) string {
	e.t.Helper()
	en := e.enroll(e.enrollToken(token, `{"group":"g"}`).Secret, hw)
	fns := make([]model.Function, len(functions))
	for i, f := range functions {
		fns[i] = model.Function{Name: f}
	}
	if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: en.Path, Functions: fns, SetFunctions: true}); err != nil {
		e.t.Fatal(err)
	}
	return en.DeviceID
}

// call calls function fn of device id.
func (e *env) call(token, id, fn string, body any) resp {
	e.t.Helper()
	return e.do("POST", "/api/v1/contexts/devices/"+id+"/functions/"+fn, token, body)
}

// answerer answers the first job of device as a device would, from a
// goroutine the test waits for.
func answerer(t *testing.T, e *env, device string, status jobs.State, result string) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if p := e.jobs.Pending(device); len(p) > 0 {
				var res json.RawMessage
				if result != "" {
					res = json.RawMessage(result)
				}
				if err := e.jobs.Report(context.Background(), device, p[0].ID, status, res, "it broke"); err != nil {
					t.Errorf("report: %v", err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("no job for %s to answer", device)
				return
			}
			time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
		}
	})
}

func TestFunctionCallAnswered(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	id := e.device(c.alice, "hw-1", "ping", "reboot")

	answerer(t, e, id, jobs.Succeeded, `{"pong":true}`)
	r := e.call(c.alice, id, "ping", `{"args":{"count":2},"wait":"10s","ttl":"5m"}`)
	e.want(r, 200, "")
	var j jobAnswer
	r.json(t, &j)
	if j.JobID == "" || j.JobID != j.ID || j.State != jobs.Succeeded || string(j.Result) != `{"pong":true}` ||
		j.Device != id || j.Tenant != "acme" || j.Function != "ping" || string(j.Args) != `{"count":2}` ||
		j.CreatedBy != "alice" || j.Deadline.Sub(j.Created) > 5*time.Minute || j.Deadline.Sub(j.Created) < 4*time.Minute {
		t.Fatalf("job %s", r.body)
	}
	if r.header.Get("Location") != "" {
		t.Errorf("Location on a final answer: %q", r.header.Get("Location"))
	}

	r = e.do("GET", "/api/v1/jobs/"+j.ID, c.vera, nil)
	e.want(r, 200, "")
	var got jobs.Job
	r.json(t, &got)
	if got.State != jobs.Succeeded || len(got.History) != 2 || got.History[0].State != jobs.Queued || got.History[1].State != jobs.Succeeded {
		t.Fatalf("job with history %s", r.body)
	}
	e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", c.alice, nil), 409, codeConflict)

	// A failure is a final answer too.
	answerer(t, e, id, jobs.Failed, "")
	r = e.call(c.alice, id, "reboot", `{"wait":"10s"}`)
	e.want(r, 200, "")
	j = jobAnswer{}
	r.json(t, &j)
	if j.State != jobs.Failed || j.Error != "it broke" {
		t.Fatalf("failed job %s", r.body)
	}
}

func TestFunctionCallPending(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	id := e.device(c.alice, "hw-1", "ping")

	for _, body := range []any{nil, ``, `{}`, `{"args":null,"wait":"50ms"}`, `{"wait":"0s","deadline":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`} {
		r := e.call(c.alice, id, "ping", body)
		e.want(r, 202, "")
		var j jobAnswer
		r.json(t, &j)
		if j.JobID == "" || j.JobID != j.ID || j.State != jobs.Queued || string(j.Args) != `{}` {
			t.Fatalf("body %v: job %s", body, r.body)
		}
		if loc := r.header.Get("Location"); loc != "/api/v1/jobs/"+j.ID {
			t.Fatalf("Location %q", loc)
		}
	}
	if n := len(e.jobs.Pending(id)); n != 5 {
		t.Fatalf("%d jobs pending", n)
	}

	// Cancelling: operators of the path only; twice is a conflict.
	j := e.jobs.Pending(id)[0]
	e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", c.vera, nil), 403, codeForbidden)
	r := e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", c.alice, nil)
	e.want(r, 200, "")
	var got jobs.Job
	r.json(t, &got)
	if got.State != jobs.Cancelled || got.History[len(got.History)-1].Detail != "by alice" {
		t.Fatalf("cancelled %s", r.body)
	}
	e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", c.alice, nil), 409, codeConflict)
	e.want(e.do("POST", "/api/v1/jobs/j-nothing/cancel", c.alice, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/jobs/j-nothing", c.alice, nil), 404, codeNotFound)
}

func TestFunctionCallShutdownEndsWait(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	id := e.device(c.alice, "hw-1", "ping")
	done := make(chan resp, 1)
	go func() { done <- e.call(c.alice, id, "ping", `{"wait":"5m"}`) }()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the job", func() bool { return len(e.jobs.Pending(id)) == 1 })
	e.api.Shutdown()
	select {
	case r := <-done:
		e.want(r, 202, "")
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not end the wait")
	}
}

func TestFunctionCallRefusals(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	id := e.device(c.alice, "hw-1", "ping")

	for _, body := range []string{`[]`, `{"wait":"6m"}`, `{"wait":"-1s"}`, `{"wait":"soon"}`, `{"ttl":"1h","deadline":"2099-01-01T00:00:00Z"}`,
		`{"deadline":"tomorrow"}`, `{"deadline":"2001-01-01T00:00:00Z"}`, `{"ttl":"-1h"}`, `{"ttl":"10000h"}`,
		`{"args":[1]}`, `{"args":"x"}`, `{"argz":{}}`, `{} {}`} {
		e.want(e.call(c.alice, id, "ping", body), 400, codeInvalid)
	}
	e.want(e.call(c.vera, id, "ping", `{}`), 403, codeForbidden)
	e.want(e.call(c.alice, id, "explode", `{}`), 404, codeNotFound)
	if n := len(e.jobs.Pending(id)); n != 0 {
		t.Fatalf("refused calls left %d jobs", n)
	}

	// Only the contexts of enrolled devices run functions. The API
	// gives no other context the type "device"; one that has it anyway
	// (written before enrollment owned device contexts) is not a device.
	for _, p := range []model.Path{"/sites/north", "/devices/" + model.Path(id) + "/sub"} {
		e.want(e.do("PUT", "/api/v1/contexts"+string(p), c.alice, `{"type":"device"}`), 409, codeConflict)
		e.want(e.do("PUT", "/api/v1/contexts"+string(p), c.alice, `{"type":"gateway"}`), 201, "")
		if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device",
			Functions: []model.Function{{Name: "ping"}}, SetFunctions: true}); err != nil {
			t.Fatal(err)
		}
		r := e.do("POST", "/api/v1/contexts"+string(p)+"/functions/ping", c.alice, `{}`)
		e.want(r, 501, codeNotImplemented)
		if !strings.Contains(string(r.body), "functions run only on the contexts of enrolled devices") {
			t.Fatalf("body %s", r.body)
		}
	}
	// The type of a device's context follows its device.
	e.want(e.do("PUT", "/api/v1/contexts/devices/"+id, c.alice, `{"type":"gateway"}`), 409, codeConflict)
	e.want(e.do("PUT", "/api/v1/contexts/devices/"+id, c.alice, `{"type":"device","labels":{"site":"n"}}`), 200, "")

	// A shared device (no tenant) is called by system users only, and
	// only they see its jobs (their arguments may hold secrets).
	shared := e.device(e.admin, "hw-shared", "ping")
	e.want(e.call(c.alice, shared, "ping", `{}`), 403, codeForbidden)
	r := e.call(e.admin, shared, "ping", `{"args":{"password":"s3cret"}}`)
	e.want(r, 202, "")
	var sj jobAnswer
	r.json(t, &sj)
	if sj.Tenant != "" {
		t.Fatalf("shared device's job has tenant %q", sj.Tenant)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+sj.ID, c.alice, nil), 404, codeNotFound)
	e.want(e.do("POST", "/api/v1/jobs/"+sj.ID+"/cancel", c.alice, nil), 404, codeNotFound)
	if r := e.do("GET", "/api/v1/jobs", c.alice, nil); strings.Contains(string(r.body), sj.ID) {
		t.Fatalf("alice lists a shared device's job: %s", r.body)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+sj.ID, e.admin, nil), 200, "")

	// A revoked device could never answer.
	e.want(e.do("POST", "/api/v1/devices/"+id+"/revoke", c.alice, nil), 200, "")
	e.want(e.call(c.alice, id, "ping", `{}`), 409, codeConflict)
}

// TestJobTenantIsolation has bob (globex) try acme's device and jobs by
// every route: each answer reads as for something missing.
func TestJobTenantIsolation(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	acme := e.device(c.alice, "hw-a", "ping")
	globex := e.device(c.bob, "hw-b", "ping")
	r := e.call(c.alice, acme, "ping", nil)
	e.want(r, 202, "")
	var j jobAnswer
	r.json(t, &j)

	hit := e.call(c.bob, acme, "ping", `{}`)
	miss := e.call(c.bob, "d-nothing", "ping", `{}`)
	e.want(hit, 404, codeNotFound)
	sameAnswer(t, "call on another tenant's device", hit, miss, acme, "d-nothing")
	for _, rt := range [][2]string{{"GET", ""}, {"POST", "/cancel"}} {
		hit := e.do(rt[0], "/api/v1/jobs/"+j.ID+rt[1], c.bob, nil)
		miss := e.do(rt[0], "/api/v1/jobs/jnothing"+rt[1], c.bob, nil)
		e.want(hit, 404, codeNotFound)
		sameAnswer(t, rt[0]+" another tenant's job", hit, miss, j.ID, "jnothing")
	}
	if got, _ := e.jobs.Get(j.ID); got.State != jobs.Queued {
		t.Fatalf("acme's job is now %s", got.State)
	}
	r = e.do("GET", "/api/v1/jobs", c.bob, nil)
	e.want(r, 200, "")
	if strings.Contains(string(r.body), acme) || strings.Contains(string(r.body), j.ID) {
		t.Fatalf("bob lists acme's jobs: %s", r.body)
	}
	e.want(e.call(c.bob, globex, "ping", nil), 202, "")
}

func TestListJobs(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	d1 := e.device(c.alice, "hw-1", "ping")
	d2 := e.device(c.alice, "hw-2", "ping")
	d3 := e.device(c.bob, "hw-3", "ping")
	var ids []string // acme's, oldest first
	for _, d := range []string{d1, d2, d1, d2, d1} {
		r := e.call(c.alice, d, "ping", nil)
		e.want(r, 202, "")
		var j jobAnswer
		r.json(t, &j)
		ids = append(ids, j.ID)
	}
	e.want(e.call(c.bob, d3, "ping", nil), 202, "")
	if _, err := e.jobs.Cancel(e.ctx, ids[1], "test"); err != nil {
		t.Fatal(err)
	}

	list := func(token, query string) ([]string, string) {
		t.Helper()
		r := e.do("GET", "/api/v1/jobs"+query, token, nil)
		e.want(r, 200, "")
		var page struct {
			Jobs []jobs.Job
			Next string
		}
		r.json(t, &page)
		out := make([]string, len(page.Jobs))
		for i, j := range page.Jobs {
			out[i] = j.ID
		}
		return out, page.Next
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	all, next := list(c.alice, "")
	eq("all, newest first", all, ids[4], ids[3], ids[2], ids[1], ids[0])
	if next != "" {
		t.Errorf("next %q", next)
	}
	vera, _ := list(c.vera, "")
	eq("viewer", vera, all...)
	got, _ := list(c.alice, "?device="+d1)
	eq("device", got, ids[4], ids[2], ids[0])
	got, _ = list(c.alice, "?path=/devices/"+d2)
	eq("path", got, ids[3], ids[1])
	got, _ = list(c.alice, "?path=sites")
	eq("other path", got)
	got, _ = list(c.alice, "?state=cancelled")
	eq("state", got, ids[1])
	got, next = list(c.alice, "?limit=2")
	eq("page 1", got, ids[4], ids[3])
	got, next = list(c.alice, "?limit=2&before="+next)
	eq("page 2", got, ids[2], ids[1])
	got, next = list(c.alice, "?limit=2&before="+next)
	eq("page 3", got, ids[0])
	if next != "" {
		t.Errorf("last page next %q", next)
	}
	bob, _ := list(c.bob, "")
	admin, _ := list(e.admin, "")
	if len(bob) != 1 || len(admin) != 6 {
		t.Errorf("bob lists %v, admin %v", bob, admin)
	}
	for _, q := range []string{"?state=done", "?limit=0", "?limit=1001", "?limit=x", "?path=/a//b", "?path=/a/../b"} {
		e.want(e.do("GET", "/api/v1/jobs"+q, c.alice, nil), 400, codeInvalid)
	}
}
