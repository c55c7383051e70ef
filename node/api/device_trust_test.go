package api

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/jobs"
)

// guessDeviceID computes a device's id from its tenant and hardware id,
// as anyone who knows both can.
func guessDeviceID(tenant, hw string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + hw))
	return "d-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10]))
}

// TestDeviceContextSquatting has bob (globex) prepare contexts at the
// paths of devices of acme and of a shared device before they enroll:
// the API refuses, enrollment succeeds in the token's tenant, and a
// context found at the path anyway (written past the API, as before
// enrollment owned device contexts) is taken back whole: bob's function
// does not survive and never reaches the device.
func TestDeviceContextSquatting(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	acmeID := guessDeviceID("acme", "hw-a")
	sharedID := guessDeviceID("", "hw-s")
	for _, id := range []string{acmeID, sharedID} {
		for _, body := range []string{`{"type":"device"}`, `{"type":"gateway"}`, `{}`} {
			e.want(e.do("PUT", "/api/v1/contexts/devices/"+id, c.bob, body), 409, codeConflict)
			e.want(e.do("PUT", "/api/v1/contexts/devices/"+id+"/x", c.bob, body), 409, codeConflict)
		}
		e.want(e.do("PUT", "/api/v1/contexts/devices/"+id, e.admin, `{"tenant":"globex"}`), 409, codeConflict)
	}
	if _, err := e.model.Get("/devices/" + model.Path(acmeID)); err == nil {
		t.Fatal("a refused PUT left a context")
	}
	en := e.enroll(e.enrollToken(c.alice, `{"group":"g"}`).Secret, "hw-a")
	if en.DeviceID != acmeID || en.Tenant != "acme" {
		t.Fatalf("enrollment %+v", en)
	}
	// Once enrolled, the device's context can be labelled by its tenant,
	// but neither its type nor its tenant changes, and others see nothing.
	e.want(e.do("PUT", "/api/v1/contexts/devices/"+acmeID, c.alice, `{"labels":{"site":"n"}}`), 200, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/"+acmeID, c.alice, `{"type":"gateway"}`), 409, codeConflict)
	e.want(e.do("PUT", "/api/v1/contexts/devices/"+acmeID, e.admin, `{"tenant":"globex"}`), 409, codeConflict)
	hit := e.do("PUT", "/api/v1/contexts/devices/"+acmeID, c.bob, `{}`)
	miss := e.do("PUT", "/api/v1/contexts/devices/d-nothing", c.bob, `{}`)
	sameAnswer(t, "PUT on another tenant's device", hit, miss, acmeID, "d-nothing")

	// A squatted context (written past the API) at a shared device's path,
	// with a function bob would call.
	squat := model.Path("/devices/" + sharedID)
	if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: squat, Type: "device", Tenant: "globex",
		Labels: map[string]string{"evil": "1"}, Functions: []model.Function{{Name: "run-script"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/contexts"+string(squat)+"/functions/run-script", c.bob, `{}`), 501, codeNotImplemented)
	sen := e.enroll(e.enrollToken(e.admin, `{"group":"g"}`).Secret, "hw-s")
	if sen.DeviceID != sharedID || sen.Tenant != "" {
		t.Fatalf("shared enrollment %+v", sen)
	}
	got, err := e.model.Get(squat)
	if err != nil || got.Tenant != "" || got.Type != "device" || got.Labels["evil"] != "" || len(got.Functions) != 0 {
		t.Fatalf("the shared device's context after enrollment: %+v, %v", got, err)
	}
	e.want(e.do("POST", "/api/v1/contexts"+string(squat)+"/functions/run-script", c.bob, `{}`), 404, codeNotFound)
	if n := len(e.jobs.Pending(sharedID)); n != 0 {
		t.Fatalf("the shared device has %d jobs", n)
	}

	// Another tenant's squat at an acme device's path no longer makes
	// acme's enrollment fail.
	late := guessDeviceID("acme", "hw-late")
	if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: model.Path("/devices/" + late), Type: "device", Tenant: "globex"}); err != nil {
		t.Fatal(err)
	}
	if en := e.enroll(e.enrollToken(c.alice, `{"group":"g"}`).Secret, "hw-late"); en.DeviceID != late {
		t.Fatalf("enrollment %+v", en)
	}
	if got, err := e.model.Get(model.Path("/devices/" + late)); err != nil || got.Tenant != "acme" {
		t.Fatalf("acme's device context: %+v %v", got, err)
	}
}

// TestSharedDevices: a shared device (no tenant) is operated by system
// users only, and tenant users do not see its jobs.
func TestSharedDevices(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	id := e.device(e.admin, "hw-shared", "ping")
	r := e.call(e.admin, id, "ping", `{"args":{"token":"s3cret"}}`)
	e.want(r, 202, "")
	var j jobAnswer
	r.json(t, &j)
	e.want(e.call(c.alice, id, "ping", `{}`), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/devices/"+id+"/revoke", c.alice, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID, c.alice, nil), 404, codeNotFound)
	if r := e.do("GET", "/api/v1/jobs", c.alice, nil); strings.Contains(string(r.body), "s3cret") {
		t.Fatalf("a tenant user lists a shared device's job: %s", r.body)
	}
	if got, _ := e.devices.Get(e.sys(), id); got.Revoked {
		t.Fatal("a tenant user revoked a shared device")
	}
	e.want(e.do("POST", "/api/v1/devices/"+id+"/revoke", e.admin, nil), 200, "")
	e.want(e.do("POST", "/api/v1/devices/"+id+"/allow-enroll", c.alice, nil), 403, codeForbidden)
}

// TestReenrollRevoked: enrolling a revoked device again is refused until
// an operator allows it; then it enrolls and is no longer revoked.
func TestReenrollRevoked(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	tok := e.enrollToken(c.alice, `{"group":"g"}`).Secret
	en := e.enroll(tok, "hw-1")
	e.want(e.do("POST", "/api/v1/devices/"+en.DeviceID+"/revoke", c.alice, nil), 200, "")
	r := e.do("POST", "/api/v1/enroll", "", map[string]string{"token": tok, "hardware_id": "hw-1"})
	e.want(r, 403, codeForbidden)
	if !strings.Contains(string(r.body), "allow-enroll") {
		t.Fatalf("refusal %s", r.body)
	}
	if d, _ := e.devices.Get(e.sys(), en.DeviceID); !d.Revoked {
		t.Fatal("a refused enrollment lifted the revocation")
	}
	other := e.enroll(tok, "hw-2")
	e.want(e.do("POST", "/api/v1/devices/"+other.DeviceID+"/allow-enroll", c.alice, nil), 409, codeConflict)
	e.want(e.do("POST", "/api/v1/devices/"+en.DeviceID+"/allow-enroll", c.vera, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/devices/"+en.DeviceID+"/allow-enroll", c.bob, nil), 404, codeNotFound)
	r = e.do("POST", "/api/v1/devices/"+en.DeviceID+"/allow-enroll", c.alice, nil)
	e.want(r, 200, "")
	if !strings.Contains(string(r.body), `"enroll_allowed":true`) || !strings.Contains(string(r.body), `"revoked":true`) {
		t.Fatalf("allowed device %s", r.body)
	}
	again := e.enroll(tok, "hw-1")
	if d, _ := e.devices.Get(e.sys(), again.DeviceID); d.Revoked || d.EnrollAllowed || again.DeviceID != en.DeviceID {
		t.Fatalf("enrolled again: %+v", d)
	}
	// Revoking again withdraws the permission.
	e.want(e.do("POST", "/api/v1/devices/"+en.DeviceID+"/revoke", c.alice, nil), 200, "")
	e.want(e.do("POST", "/api/v1/enroll", "", map[string]string{"token": tok, "hardware_id": "hw-1"}), 403, codeForbidden)
}

// TestCallCrossings tries to cross the call rule on the API path: another
// tenant, a viewer, a tenant user on a shared device, a context that is
// not a device's own. Nothing creates a job.
func TestCallCrossings(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	acme := e.device(c.alice, "hw-a", "ping")
	shared := e.device(e.admin, "hw-s", "ping")
	e.want(e.call(c.bob, acme, "ping", `{}`), 404, codeNotFound)
	e.want(e.call(c.vera, acme, "ping", `{}`), 403, codeForbidden)
	e.want(e.call(c.alice, shared, "ping", `{}`), 403, codeForbidden)
	for _, id := range []string{acme, shared} {
		if n := len(e.jobs.Pending(id)); n != 0 {
			t.Fatalf("%s has %d jobs", id, n)
		}
	}
	r := e.call(c.alice, acme, "ping", `{}`)
	e.want(r, 202, "")
	var j jobAnswer
	r.json(t, &j)
	if j.Tenant != "acme" || j.State != jobs.Queued {
		t.Fatalf("job %+v", j.Job)
	}
}

// sys is a system principal, for reading the registry directly.
func (e *env) sys() *auth.Principal { return &auth.Principal{User: "admin", System: true} }

// TestSharedDeviceJobsHidden: a tenant user reading a shared device's
// events, or following its changes, sees none of its jobs' activity (the
// job event names the job, its function, who created it and its error);
// a tenant's own device keeps its job events for the tenant, and system
// users keep them for shared devices.
func TestSharedDeviceJobsHidden(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	shared := e.device(e.admin, "hw-shared", "ping")
	own := e.device(c.alice, "hw-own", "ping")
	for _, call := range []struct{ token, id string }{{e.admin, shared}, {c.alice, own}} {
		r := e.call(call.token, call.id, "ping", `{"args":{"token":"s3cret"}}`)
		e.want(r, 202, "")
		var j jobAnswer
		r.json(t, &j)
		if err := e.jobs.Report(e.ctx, call.id, j.ID, jobs.Failed, nil, "failed near s3cret"); err != nil {
			t.Fatal(err)
		}
	}
	// A marker after the jobs: the stream has shown everything before it.
	e.want(e.do("POST", "/api/v1/events/devices/"+shared, e.admin, `{"level":"info","name":"marker"}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/"+own, c.alice, `{"level":"info","name":"marker"}`), 201, "")

	for _, tc := range []struct {
		id      string
		wantJob bool
	}{{shared, false}, {own, true}} {
		r := e.do("GET", "/api/v1/events/devices/"+tc.id, c.alice, nil)
		e.want(r, 200, "")
		var page struct{ Events []model.Event }
		r.json(t, &page)
		seen := 0
		for _, ev := range page.Events {
			if ev.Name == "job" {
				seen++
			}
		}
		if got := seen > 0; got != tc.wantJob {
			t.Errorf("%s: a tenant user's event list shows %d job events, want any: %v: %s", tc.id, seen, tc.wantJob, r.body)
		}
		s := e.openChanges(c.alice, "?after=0&path=/devices/"+tc.id)
		seen = 0
		for {
			_, ch := s.change()
			if ch.Event == nil {
				continue
			}
			if ch.Event.Name == "marker" {
				break
			}
			if ch.Event.Name == "job" {
				seen++
			}
		}
		if got := seen > 0; got != tc.wantJob {
			t.Errorf("%s: a tenant user's change stream shows %d job events, want any: %v", tc.id, seen, tc.wantJob)
		}
	}
	// The system admin still follows the shared device's jobs, events included.
	if r := e.do("GET", "/api/v1/events/devices/"+shared, e.admin, nil); !strings.Contains(string(r.body), `"name":"job"`) {
		t.Errorf("the system admin lost the shared device's job events: %s", r.body)
	}
	if r := e.do("GET", "/api/v1/jobs?device="+shared, e.admin, nil); !strings.Contains(string(r.body), "s3cret") {
		t.Errorf("the system admin lost the shared device's job: %s", r.body)
	}
}
