package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/xid"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/store"
)

var sys = &auth.Principal{User: "root", System: true}

type env struct {
	m    *model.Model
	st   *store.Badger
	ds   *devices.Service
	js   *jobs.Service
	cs   *calls.Service
	devs []devices.Enrollment
}

func newEnv(t *testing.T, n int) *env {
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
	e := &env{m: m, st: st, ds: ds, js: js, cs: &calls.Service{Tree: m, Devices: ds, Jobs: js}}
	ctx := context.Background()
	tok, _, err := ds.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		en, err := ds.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: "hw-" + string(rune('a'+i))}, "10.0.0.1:1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: en.Path, Functions: []model.Function{{Name: "reboot"}}, SetFunctions: true}); err != nil {
			t.Fatal(err)
		}
		e.devs = append(e.devs, en)
	}
	return e
}

func (e *env) service(t *testing.T, reg prometheus.Registerer) *Service {
	t.Helper()
	s, err := New(Config{Tree: e.m, Search: e.st.Search, Calls: e.cs, Jobs: e.js, Logger: tstest.Logger(t), Tick: 10 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func (e *env) deviceJobs(t *testing.T, id string) int {
	t.Helper()
	n := 0
	if err := e.js.List(func(j jobs.Job) bool {
		if j.Bulk == id {
			n++
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// An expansion repeated after a restart (the record not yet marked
// expanded) makes no second job for any device, and a create received
// again is a no-op.
func TestExpansionIsIdempotent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 5)
	reg := prometheus.NewRegistry()
	s := e.service(t, reg)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "expanded and dispatched", func() (bool, error) {
		p, err := s.Get(part.ID)
		return err == nil && p.Expanded && e.deviceJobs(t, part.ID) == 5, err
	})
	s.Close()

	// As if the node stopped before it recorded the expansion.
	p, err := s.Get(part.ID)
	if err != nil {
		t.Fatal(err)
	}
	p.Expanded = false
	b, _ := json.Marshal(p)
	if err := e.m.PutRecord(ctx, KindBulk, p.ID, b); err != nil {
		t.Fatal(err)
	}
	reg2 := prometheus.NewRegistry()
	s2 := e.service(t, reg2)
	tstest.WaitForErr(t, 10*time.Second, "expanded again", func() (bool, error) {
		p, err := s2.Get(part.ID)
		return err == nil && p.Expanded, err
	})
	if n := e.deviceJobs(t, part.ID); n != 5 {
		t.Fatalf("%d device jobs after the repeated expansion, want 5", n)
	}
	if n := testutil.ToFloat64(s2.dispatched); n != 0 {
		t.Fatalf("the repeated expansion dispatched %v device jobs", n)
	}
	// Received again over a link: nothing new.
	req := Request{Action: ActionCreate, Spec: p.Spec}
	if err := s2.Receive(ctx, "hq", Identity{User: "root", System: true}, nil, req); err != nil {
		t.Fatal(err)
	}
	if n := e.deviceJobs(t, part.ID); n != 5 {
		t.Fatalf("%d device jobs after a repeated receive", n)
	}
	// Cancelled: every device job not final is cancelled, the job reads
	// cancelled.
	if _, err := s2.Cancel(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "cancelled", func() (bool, error) {
		v, err := s2.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkCancelled && v.Counters.Cancelled == 5, err
	})
}

// A device named by the target that cannot run the job is counted
// failed and listed with its reason, once.
func TestRefusedDevicesAreFailures(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 2)
	s := e.service(t, nil)
	if _, err := e.ds.Revoke(ctx, sys, e.devs[1].DeviceID); err != nil {
		t.Fatal(err)
	}
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{
		Paths: []string{string(e.devs[0].Path), string(e.devs[1].Path), "/devices/d-missing"}}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "counted", func() (bool, error) {
		v, err := s.View(ctx, part.ID)
		return err == nil && v.Counters == apitypes.BulkCounters{Total: 3, Queued: 1, Failed: 2}, err
	})
	pg, err := s.Failures(ctx, part.ID, "", 1)
	if err != nil || len(pg.Failures) != 1 || pg.Next == "" {
		t.Fatalf("first page: %+v %v", pg, err)
	}
	pg2, err := s.Failures(ctx, part.ID, pg.Next, 10)
	if err != nil || len(pg2.Failures) != 1 || pg2.Next != "" || pg2.Failures[0].Path == pg.Failures[0].Path {
		t.Fatalf("second page: %+v %v", pg2, err)
	}
}

// Authorize: the operator role on what the target selects, and no
// other tenant by name.
func TestAuthorize(t *testing.T) {
	op := &auth.Principal{User: "o", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/sites/a"}}}
	for _, c := range []struct {
		target apitypes.BulkTarget
		ok     bool
	}{
		{apitypes.BulkTarget{Subtree: "/sites/a"}, true},
		{apitypes.BulkTarget{Subtree: "/sites/a/b", Labels: map[string]string{"x": "y"}}, true},
		{apitypes.BulkTarget{Subtree: "/sites"}, false},
		{apitypes.BulkTarget{Labels: map[string]string{"x": "y"}}, false},
		{apitypes.BulkTarget{Paths: []string{"/sites/a/d1", "/sites/a/d2"}}, true},
		{apitypes.BulkTarget{Paths: []string{"/sites/a/d1", "/sites/b/d2"}}, false},
		{apitypes.BulkTarget{Filter: map[string]string{"path": "/sites/a", "tenant": "acme"}}, true},
		{apitypes.BulkTarget{Filter: map[string]string{"path": "/sites/a", "tenant": "globex"}}, false},
	} {
		tg, err := ParseTarget(c.target)
		if err != nil {
			t.Fatal(err)
		}
		if err := Authorize(op, tg, auth.RoleOperator); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.target, err)
		}
	}
}

// Every change of a part is decided against its record: a second create,
// a second cancel and a refusal already recorded are conflicts, and
// marking it expanded again keeps the links it has.
func TestUpdateDecidesAgainstTheRecord(t *testing.T) {
	do := func(cur []byte, c change) ([]byte, error) {
		arg, _ := json.Marshal(c)
		return Update("b1", cur, arg)
	}
	p := &Part{Spec: Spec{ID: "b1", Function: "reboot"}}
	rec, err := do(nil, change{Create: p})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := do(rec, change{Create: p}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("created twice: %v", err)
	}
	links := map[string]*Link{"eu": {Mount: "/peers/eu"}}
	if rec, err = do(rec, change{Expanded: &links}); err != nil {
		t.Fatal(err)
	}
	none := map[string]*Link{}
	if rec, err = do(rec, change{Expanded: &none}); err != nil {
		t.Fatal(err)
	}
	if rec, err = do(rec, change{Link: "eu", Sent: true}); err != nil {
		t.Fatal(err)
	}
	if rec, err = do(rec, change{Link: "eu", Error: "late"}); err != nil {
		t.Fatal(err)
	}
	if rec, err = do(rec, change{Refuse: &Refusal{Path: "/devices/x", Error: "gone"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := do(rec, change{Refuse: &Refusal{Path: "/devices/x", Error: "gone"}}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("refused twice: %v", err)
	}
	if rec, err = do(rec, change{Cancel: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := do(rec, change{Cancel: true}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("cancelled twice: %v", err)
	}
	var got Part
	if err := json.Unmarshal(rec, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Expanded || len(got.Links) != 1 || !got.Links["eu"].Sent || got.Links["eu"].Error != "" || len(got.Refused) != 1 || !got.Cancelled {
		t.Fatalf("part %+v", got)
	}
	if _, err := do(nil, change{Cancel: true}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a missing part: %v", err)
	}
}

// A part received with nothing in scope keeps nothing in scope across a
// restart (its record tells nowhere from everywhere).
func TestEmptyScopeSurvivesTheRecord(t *testing.T) {
	p := Part{Spec: Spec{ID: "b1", Scope: []model.Path{}}}
	b, _ := json.Marshal(p)
	var got Part
	if err := json.Unmarshal(b, &got); err != nil || got.Scope == nil || len(got.Scope) != 0 {
		t.Fatalf("%s → %+v %v", b, got.Scope, err)
	}
	b, _ = json.Marshal(Part{Spec: Spec{ID: "b2"}})
	if err := json.Unmarshal(b, &got); err != nil || got.Scope != nil {
		t.Fatalf("%s → %+v %v", b, got.Scope, err)
	}
}

// Devices that do not answer before the deadline count as expired and
// are listed among the failures.
func TestExpiredDevices(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 2)
	s := e.service(t, nil)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/"}}, time.Now().Add(1500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 20*time.Second, "expired and done", func() (bool, error) {
		v, err := s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone && v.Counters == apitypes.BulkCounters{Total: 2, Expired: 2}, err
	})
	pg, err := s.Failures(ctx, part.ID, "", 10)
	if err != nil || len(pg.Failures) != 2 || pg.Failures[0].State != apitypes.JobExpired || pg.Failures[0].Job == "" {
		t.Fatalf("failures %+v %v", pg, err)
	}
}

// Only the consumer a part came from controls or cancels it: another
// consumer granted operate here is refused, on a job it did not send and
// on one issued here, and nothing changes.
func TestControlOnlyFromTheSender(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 2)
	s := e.service(t, nil)
	local, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	sent := local.Spec
	sent.ID = "b" + xid.New().String()
	if err := s.Receive(ctx, "hq", Identity{User: "root", System: true}, nil, Request{Action: ActionCreate, Spec: sent}); err != nil {
		t.Fatal(err)
	}
	pause := &Control{Gen: 1, Paused: true}
	for _, c := range []struct {
		consumer, id string
		id2          Identity
	}{
		{"rogue", sent.ID, Identity{User: "root", System: true}},
		{"hq", local.ID, Identity{User: "root", System: true}},
		{"rogue", local.ID, Identity{User: "root", System: true}},
		{"hq", sent.ID, Identity{User: "eve", Tenant: "other"}},
	} {
		for _, req := range []Request{{Action: ActionCancel, Spec: Spec{ID: c.id}}, {Action: ActionControl, Spec: Spec{ID: c.id}, Control: pause}} {
			if err := s.Receive(ctx, c.consumer, c.id2, nil, req); !errors.Is(err, auth.ErrForbidden) {
				t.Errorf("%s %s on %s as %+v: %v, want forbidden", c.consumer, req.Action, c.id, c.id2, err)
			}
		}
	}
	for _, id := range []string{local.ID, sent.ID} {
		v, err := s.View(ctx, id)
		if err != nil || v.State == apitypes.BulkCancelled || v.State == apitypes.BulkPaused {
			t.Fatalf("%s after refused requests: %+v, %v", id, v, err)
		}
	}
	// The sender still cancels its own (unless it is done already).
	err = s.Receive(ctx, "hq", Identity{User: "root", System: true}, nil, Request{Action: ActionCancel, Spec: Spec{ID: sent.ID}})
	if errors.Is(err, model.ErrConflict) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "cancelled by its sender", func() (bool, error) {
		v, err := s.View(ctx, sent.ID)
		return err == nil && v.State == apitypes.BulkCancelled, err
	})
}

// A job's view counts the parts below the links it went down only: a
// provider it was never sent to cannot add a part of its own making.
func TestViewCountsOnlyTheLinksSentTo(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1)
	s := e.service(t, nil)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.progressMutation(part, Progress{State: apitypes.BulkDone, Counters: apitypes.BulkCounters{Total: 1000, Succeeded: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	m.Path = model.Path(string(federation.PeersRoot) + "/rogue" + string(m.Path))
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: model.Path(string(federation.PeersRoot) + "/rogue")}, m); err != nil {
		t.Fatal(err)
	}
	v, err := s.View(ctx, part.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Peers["/peers/rogue"]; ok || v.Counters.Total > 1 {
		t.Fatalf("a part from a provider the job was not sent to counts: %+v", v)
	}
}

// oneLink is a provider link that takes every request.
type oneLink struct{ sent atomic.Int32 }

func (l *oneLink) Providers() []Provider {
	return []Provider{{Name: "p1", Mount: model.Path(string(federation.PeersRoot) + "/p1")}}
}

func (l *oneLink) Send(context.Context, string, Identity, Request) error {
	l.sent.Add(1)
	return nil
}

// A link that took its part and never reports it done is given up a
// minute past the deadline: the job ends here, the link shows why.
func TestLinkGivenUpPastTheDeadline(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	var skew atomic.Int64
	link := &oneLink{}
	reg := prometheus.NewRegistry()
	s, err := New(Config{Tree: e.m, Search: e.st.Search, Calls: e.cs, Jobs: e.js, Links: link, Logger: tstest.Logger(t),
		Tick: 10 * time.Millisecond, Registerer: reg,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/"}}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, 10*time.Second, "sent to p1", func() bool { return link.sent.Load() > 0 })
	v, err := s.View(ctx, part.ID)
	if err != nil || v.State != apitypes.BulkRunning {
		t.Fatalf("before the deadline: %+v %v", v, err)
	}
	skew.Store(int64(time.Hour + reportGrace + time.Second))
	tstest.WaitForErr(t, 10*time.Second, "done without p1", func() (bool, error) {
		v, err = s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone, err
	})
	if p := v.Peers["/peers/p1"]; !strings.HasPrefix(p.Error, "given up: ") {
		t.Fatalf("p1 at the end: %+v", p)
	}
	if n := testutil.ToFloat64(s.giveUps); n != 1 {
		t.Fatalf("links given up: %v", n)
	}
}
