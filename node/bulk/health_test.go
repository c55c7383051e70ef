package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/jobs"
)

func TestParseHealth(t *testing.T) {
	r, err := ParseRollout(json.RawMessage(`{"health":{"online":true,"vars":{"fw":"2.1.0","cpus":"4"},"within":"10m"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Health; h == nil || !h.Online || h.Within != 10*time.Minute || h.Vars["fw"] != "2.1.0" || h.Vars["cpus"] != "4" {
		t.Fatalf("%+v", r.Health)
	}
	for _, ok := range []string{
		`{"health":{"online":true,"within":"1s"}}`,
		`{"health":{"vars":{"fw":"2.1.0"},"within":"720h"}}`,
		`{"waves":[1],"health":{"online":false,"vars":{"model":"{\"a\":1}"},"within":"1h30m"}}`,
	} {
		if _, err := ParseRollout(json.RawMessage(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		`{"health":null}`:                                                              "want an object",
		`{"health":[]}`:                                                                "fields: online, vars, within",
		`{"health":{"online":true}}`:                                                   "within: required",
		`{"health":{"within":"10m"}}`:                                                  "give the condition",
		`{"health":{"online":false,"within":"10m"}}`:                                   "give the condition",
		`{"health":{"online":true,"within":"10"}}`:                                     "want a duration",
		`{"health":{"online":true,"within":"0s"}}`:                                     "want 1s to 720h0m0s",
		`{"health":{"online":true,"within":"721h"}}`:                                   "want 1s to 720h0m0s",
		`{"health":{"online":true,"within":"-1m"}}`:                                    "want 1s to",
		`{"health":{"online":true,"within":600}}`:                                      "fields: online, vars, within",
		`{"health":{"online":"yes","within":"1m"}}`:                                    "fields: online, vars, within",
		`{"health":{"online":true,"within":"1m","timeout":"2m"}}`:                      "unknown field",
		`{"health":{"vars":{"fw":2},"within":"1m"}}`:                                   "want a string",
		`{"health":{"vars":{"bad name":"x"},"within":"1m"}}`:                           "var name",
		`{"health":{"vars":{"fw":"` + strings.Repeat("x", 1025) + `"},"within":"1m"}}`: "longer than",
	} {
		_, err := ParseRollout(json.RawMessage(bad))
		if err == nil || !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want invalid with %q", bad, err, want)
		}
	}
}

func FuzzParseRollout(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"waves":["5%","25%","70%"],"max_failures":"2%","min_finished":20}`,
		`{"rate":{"per_second":0.5,"factor":2,"every":100,"max_per_second":50},"max_concurrency":10}`,
		`{"success_threshold":"95%","approval":true}`,
		`{"health":{"online":true,"vars":{"fw":"2.1.0","cpus":"4"},"within":"10m"}}`,
		`{"health":{"vars":{"model":"{\"a\":[1,2]}"},"within":"1h"}}`,
		`{"health":{"online":true,"within":"-5s"}}`, `{"health":null}`, `{"waves":[1e400]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRollout(b)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("%q: %v does not wrap ErrInvalid", b, err)
			}
			return
		}
		if h := r.Health; h != nil {
			if h.Within < MinHealthWithin || h.Within > MaxHealthWithin || (!h.Online && len(h.Vars) == 0) {
				t.Fatalf("%q: accepted gate %+v", b, h)
			}
			h.unmet(&model.Context{}) // never panics
		}
		_ = r.Bounds(7)
	})
}

// clock is a clock the test moves, counting its reads (the loop reads it
// at least once a round).
type clock struct {
	mu     sync.Mutex
	offset time.Duration
	reads  int
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.offset += d; c.mu.Unlock() }

// rounds waits until the loop read the clock n more times.
func (c *clock) rounds(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	until := c.reads + n
	c.mu.Unlock()
	tstest.WaitFor(t, 10*time.Second, "rounds of the loop", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.reads >= until })
}

func (e *env) clocked(t *testing.T, c *clock, reg prometheus.Registerer) *Service {
	t.Helper()
	s, err := New(Config{Tree: e.m, Search: e.st.Search, Calls: e.cs, Jobs: e.js, Logger: tstest.Logger(t), Tick: 10 * time.Millisecond, Now: c.now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// show sets variables of device i's context (JSON values).
func (e *env) show(t *testing.T, i int, vars map[string]string) {
	t.Helper()
	vs := map[string]model.Variable{}
	for k, v := range vars {
		vs[k] = model.Variable{Value: json.RawMessage(v), Time: time.Now().UTC()}
	}
	if _, err := e.m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: e.devs[i].Path, Variables: vs}); err != nil {
		t.Fatal(err)
	}
}

// memberIndex maps e's devices to their index in part's members.
func (e *env) byMember(t *testing.T, s *Service, id string) []int {
	t.Helper()
	p, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(p.Members))
	for i, m := range p.Members {
		out[i] = -1
		for j, d := range e.devs {
			if d.Path == m.Path {
				out[i] = j
			}
		}
	}
	return out
}

func (e *env) failureEvents(t *testing.T, s *Service, id string) []apitypes.BulkFailure {
	t.Helper()
	pg, err := s.Failures(context.Background(), id, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return pg.Failures
}

const gate = `"health":{"online":true,"vars":{"fw":"2.1.0"},"within":"10m"}`

// A device whose job succeeded counts as verifying until its context
// shows the gate's condition (then succeeded), or, past within, failed,
// with its bulk.failure event once; a retry runs the gate's failures
// again.
func TestHealthGatePassFailRetry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4)
	c := &clock{}
	reg := prometheus.NewRegistry()
	s := e.clocked(t, c, reg)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{` + gate + `}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var v View
	tstest.WaitForErr(t, 10*time.Second, "every device verifying", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err = s.View(ctx, part.ID)
		return err == nil && v.Counters.Verifying == 4, err
	})
	if v.State != apitypes.BulkRunning || v.Counters != (apitypes.BulkCounters{Total: 4, Verifying: 4}) || v.Waves[0].Counters.Verifying != 4 {
		t.Fatalf("verifying: %+v", v)
	}
	ix := e.byMember(t, s, part.ID)
	// Member 0 shows the condition: it passes. Member 1 runs the old
	// firmware, member 2 is offline, member 3 shows nothing.
	e.show(t, ix[0], map[string]string{"online": "true", "fw": `"2.1.0"`, "model": `"rk3"`})
	e.show(t, ix[1], map[string]string{"online": "true", "fw": `"2.0.9"`})
	e.show(t, ix[2], map[string]string{"online": "false", "fw": `"2.1.0"`})
	tstest.WaitForErr(t, 10*time.Second, "one passed", func() (bool, error) {
		v, err = s.View(ctx, part.ID)
		return err == nil && v.Counters.Succeeded == 1, err
	})
	c.rounds(t, 20)
	if v, _ = s.View(ctx, part.ID); v.Counters != (apitypes.BulkCounters{Total: 4, Succeeded: 1, Verifying: 3}) || v.State != apitypes.BulkRunning {
		t.Fatalf("before within: %+v", v)
	}
	c.advance(10 * time.Minute)
	tstest.WaitForErr(t, 10*time.Second, "done", func() (bool, error) {
		v, err = s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone, err
	})
	if v.Counters != (apitypes.BulkCounters{Total: 4, Succeeded: 1, Failed: 3}) {
		t.Fatalf("after within: %+v", v)
	}
	p, _ := s.Get(part.ID)
	want := map[string]string{
		p.Members[1].Device: `health gate: fw is "2.0.9", want "2.1.0" after 10m`,
		p.Members[2].Device: `health gate: online is false, want true after 10m`,
		p.Members[3].Device: `health gate: online is not set, want true; fw is not set, want "2.1.0" after 10m`,
	}
	check := func(attempt int) {
		t.Helper()
		fs := e.failureEvents(t, s, part.ID)
		n := 0
		for _, f := range fs {
			if f.Job == AttemptJobID(part.ID, f.Device, attempt) {
				n++
				if f.Error != want[f.Device] || f.State != jobs.Failed || f.Path != string(p.Members[slicesIndex(p.Members, f.Device)].Path) {
					t.Errorf("failure %+v, want %q", f, want[f.Device])
				}
			}
		}
		if n != len(want) {
			t.Fatalf("%d failures of attempt %d, want %d: %+v", n, attempt, len(want), fs)
		}
	}
	check(0)
	if n := testutil.ToFloat64(s.gated.WithLabelValues("passed")); n != 1 {
		t.Errorf("passed: %v", n)
	}
	if n := testutil.ToFloat64(s.gated.WithLabelValues("failed")); n != 3 {
		t.Errorf("failed: %v", n)
	}
	// The device jobs themselves succeeded.
	for _, id := range e.jobIDs(t, part.ID) {
		if j, _ := e.js.Get(id); j.State != jobs.Succeeded {
			t.Fatalf("device job %s %s", id, j.State)
		}
	}

	// Retry: the three gate failures run again; member 1 has the new
	// firmware by now, the others still fail their gate.
	e.show(t, ix[1], map[string]string{"fw": `"2.1.0"`})
	if _, err := s.Retry(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "retried", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err = s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone && v.Local.Attempt == 1, err
	})
	if v.Counters != (apitypes.BulkCounters{Total: 4, Succeeded: 2, Failed: 2}) || len(e.jobIDs(t, part.ID)) != 7 {
		t.Fatalf("after the retry: %+v, %v", v, e.jobIDs(t, part.ID))
	}
	delete(want, p.Members[1].Device)
	check(1)
}

func slicesIndex(ms []Member, device string) int {
	for i, m := range ms {
		if m.Device == device {
			return i
		}
	}
	return -1
}

// A restart between a job's success and its gate's decision: a gate
// passed stays passed (whatever the device shows since), one pending is
// decided from the job's success time, and a failure is recorded once
// across restarts.
func TestHealthGateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 3)
	c := &clock{}
	s := e.clocked(t, c, nil)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{` + gate + `}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "every device verifying", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err := s.View(ctx, part.ID)
		return err == nil && v.Counters.Verifying == 3, err
	})
	ix := e.byMember(t, s, part.ID)
	e.show(t, ix[0], map[string]string{"online": "true", "fw": `"2.1.0"`})
	tstest.WaitForErr(t, 10*time.Second, "one passed", func() (bool, error) {
		v, err := s.View(ctx, part.ID)
		return err == nil && v.Counters.Succeeded == 1, err
	})
	s.Close()
	e.show(t, ix[0], map[string]string{"online": "false"}) // since it passed
	c.advance(9 * time.Minute)

	s2 := e.clocked(t, c, nil)
	c.rounds(t, 20)
	v, err := s2.View(ctx, part.ID)
	if err != nil || v.Counters != (apitypes.BulkCounters{Total: 3, Succeeded: 1, Verifying: 2}) || v.State != apitypes.BulkRunning {
		t.Fatalf("after the restart: %+v %v", v, err)
	}
	e.show(t, ix[1], map[string]string{"online": "true", "fw": `"2.1.0"`})
	c.advance(time.Minute) // 10 minutes after the jobs' success
	tstest.WaitForErr(t, 10*time.Second, "done", func() (bool, error) {
		v, err = s2.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone, err
	})
	if v.Counters != (apitypes.BulkCounters{Total: 3, Succeeded: 2, Failed: 1}) {
		t.Fatalf("done: %+v", v)
	}
	if fs := e.failureEvents(t, s2, part.ID); len(fs) != 1 || !strings.HasPrefix(fs[0].Error, "health gate: ") {
		t.Fatalf("failures: %+v", fs)
	}
	// A decision repeated (a restart between the commit and memory, or
	// another replica) is refused by the log: no second event, alone or
	// in a batch with an undecided one, which is recorded.
	p, _ := s2.Get(part.ID)
	jid := AttemptJobID(part.ID, p.Members[2].Device, 0)
	fresh := AttemptJobID(part.ID, p.Members[0].Device, 5)
	again := []gateDecision{{p.Members[2], jid, "health gate: again"}, {p.Members[0], fresh, "health gate: fresh"}}
	if err := s2.decideGates(ctx, part.ID, again[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s2.decideGates(ctx, part.ID, again); err != nil {
		t.Fatal(err)
	}
	fs := e.failureEvents(t, s2, part.ID)
	if len(fs) != 2 || fs[0].Job != fresh || fs[1].Job != jid || fs[1].Error == "health gate: again" {
		t.Fatalf("failures after a repeated decision: %+v", fs)
	}
	if p, _ := s2.Get(part.ID); p.Gates[jid] == "health gate: again" || p.Gates[fresh] != "health gate: fresh" ||
		p.Gates[AttemptJobID(part.ID, p.Members[1].Device, 0)] != "" {
		t.Fatalf("gates after a repeated decision: %v", p.Gates)
	}
}

// Thresholds count the gated outcomes: a wave whose jobs succeeded does
// not open the next while its gates are pending, and gate failures trip
// success_threshold and max_failures; devices verifying count against
// max_concurrency.
func TestHealthGateThresholds(t *testing.T) {
	ctx := context.Background()
	// run starts rollout on six devices, offline, and waits until the
	// device jobs made succeeded and await their gate, two of them.
	run := func(rollout string) (*env, *Service, *clock, *Part, []int) {
		t.Helper()
		e := newEnv(t, 6)
		for i := range e.devs {
			e.show(t, i, map[string]string{"online": "false"})
		}
		c := &clock{}
		s := e.clocked(t, c, nil)
		part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
			Rollout: json.RawMessage(rollout)}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		tstest.WaitForErr(t, 10*time.Second, "two devices verifying", func() (bool, error) {
			e.answer(t, part.ID, nil)
			v, err := s.View(ctx, part.ID)
			return err == nil && v.Counters.Verifying == 2, err
		})
		c.rounds(t, 20)
		if n := e.deviceJobs(t, part.ID); n != 2 {
			t.Fatalf("%s: %d device jobs while two verify, want 2", rollout, n)
		}
		return e, s, c, part, e.byMember(t, s, part.ID)
	}
	paused := func(s *Service, id string) View {
		t.Helper()
		var v View
		tstest.WaitForErr(t, 10*time.Second, "paused", func() (bool, error) {
			var err error
			v, err = s.View(ctx, id)
			// The state reads from the record, the counters from the
			// progress written at the end of a round.
			return err == nil && v.State == apitypes.BulkPaused && v.Counters.Verifying == 0, err
		})
		return v
	}

	// success_threshold 100%: one of the first wave passes, one fails.
	e, s, c, part, ix := run(`{"waves":[2,4],"success_threshold":"100%",` + gate + `}`)
	e.show(t, ix[0], map[string]string{"online": "true", "fw": `"2.1.0"`})
	c.advance(10 * time.Minute)
	v := paused(s, part.ID)
	if !strings.Contains(v.Reason, "1 of 2 devices succeeded, below success_threshold") || e.deviceJobs(t, part.ID) != 2 ||
		v.Counters != (apitypes.BulkCounters{Total: 6, Pending: 4, Succeeded: 1, Failed: 1}) {
		t.Fatalf("success_threshold: %+v", v)
	}

	// max_failures 1: both of the first wave fail their gate.
	e, s, c, part, _ = run(`{"waves":[2,4],"max_failures":1,` + gate + `}`)
	c.advance(10 * time.Minute)
	v = paused(s, part.ID)
	if !strings.Contains(v.Reason, "2 devices failed, more than max_failures 1") || e.deviceJobs(t, part.ID) != 2 ||
		v.Counters != (apitypes.BulkCounters{Total: 6, Pending: 4, Failed: 2}) {
		t.Fatalf("max_failures: %+v", v)
	}

	// max_concurrency 2: two devices verifying hold the others.
	e, s, _, part, ix = run(`{"max_concurrency":2,` + gate + `}`)
	for _, i := range ix {
		e.show(t, i, map[string]string{"online": "true", "fw": `"2.1.0"`})
	}
	tstest.WaitForErr(t, 10*time.Second, "done", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err := s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone, err
	})
	if v, _ := s.View(ctx, part.ID); v.Counters != (apitypes.BulkCounters{Total: 6, Succeeded: 6}) {
		t.Fatalf("max_concurrency: %+v", v)
	}
}
