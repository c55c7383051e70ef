package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
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

func TestParseRollout(t *testing.T) {
	for _, ok := range []string{
		``, `null`, `{}`,
		`{"waves":["5%","25%","70%"]}`,
		`{"waves":[10, "50%"], "success_threshold":"95%", "max_failures":"2%", "min_finished":20}`,
		`{"waves":[1], "approval":true, "max_failures":3}`,
		`{"rate":{"per_second":5}}`,
		`{"rate":{"per_second":0.5,"factor":2,"every":100,"max_per_second":50}, "max_concurrency":10}`,
		`{"waves":["0.5%","99.5%"]}`,
	} {
		if _, err := ParseRollout(json.RawMessage(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		`[]`, `{"wave":[5]}`, `{"waves":["5"]}`, `{"waves":[0]}`, `{"waves":["0%"]}`, `{"waves":[-1]}`,
		`{"waves":[1.5]}`, `{"waves":["60%","50%"]}`, `{"waves":["101%"]}`, `{"waves":["x%"]}`, `{"waves":[" 5%"]}`,
		`{"success_threshold":"-1%"}`, `{"max_failures":"NaN%"}`, `{"max_failures":true}`,
		`{"min_finished":5}`, `{"max_failures":1,"min_finished":-1}`,
		`{"rate":{}}`, `{"rate":{"per_second":0}}`, `{"rate":{"per_second":1e9}}`, `{"rate":{"per_second":1,"factor":2}}`,
		`{"rate":{"per_second":1,"every":5}}`, `{"rate":{"per_second":1,"factor":0.5,"every":1}}`,
		`{"rate":{"per_second":5,"max_per_second":1}}`, `{"rate":{"per_second":1,"burst":3}}`,
		`{"max_concurrency":0}`, `{"max_concurrency":-3}`, `{"approval":"yes"}`, `{} {}`,
	} {
		_, err := ParseRollout(json.RawMessage(bad))
		if err == nil || !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", bad, err)
		}
	}
}

func TestBounds(t *testing.T) {
	for _, c := range []struct {
		rollout string
		n       int
		want    []int
	}{
		{`{}`, 7, []int{7}},
		{`{"waves":["5%","25%","70%"]}`, 100, []int{5, 30, 100}},
		{`{"waves":["5%","25%","70%"]}`, 3, []int{1, 1, 3}},
		{`{"waves":["5%","25%","70%"]}`, 0, []int{0, 0, 0}},
		{`{"waves":[2, "50%"]}`, 10, []int{2, 5, 10}},
		{`{"waves":[2, 2]}`, 3, []int{2, 3}},
		{`{"waves":[100]}`, 6, []int{6}},
	} {
		r, err := ParseRollout(json.RawMessage(c.rollout))
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Bounds(c.n); !slices.Equal(got, c.want) {
			t.Errorf("%s over %d: %v, want %v", c.rollout, c.n, got, c.want)
		}
	}
	r := Rate{PerSecond: 2, Factor: 3, Every: 10, Max: 30}
	for succeeded, want := range map[int]float64{0: 2, 9: 2, 10: 6, 25: 18, 30: 30, 1000: 30} {
		if got := r.At(succeeded); got != want {
			t.Errorf("rate after %d: %v, want %v", succeeded, got, want)
		}
	}
}

// answer answers every device job of bulk job id not final: failed for
// the devices in fail, succeeded for the others.
func (e *env) answer(t *testing.T, id string, fail map[string]bool) {
	t.Helper()
	var open []jobs.Job
	if err := e.js.List(func(j jobs.Job) bool {
		if j.Bulk == id && !j.State.Final() {
			open = append(open, j)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, j := range open {
		st, msg := jobs.Succeeded, ""
		if fail[j.Device] {
			st, msg = jobs.Failed, "disk full"
		}
		if err := e.js.Report(context.Background(), j.Device, j.ID, st, nil, msg); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) jobIDs(t *testing.T, id string) []string {
	t.Helper()
	var out []string
	if err := e.js.List(func(j jobs.Job) bool {
		if j.Bulk == id {
			out = append(out, j.ID)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Three waves over ten devices: the first opens the second; two failures
// in the second trip max_failures, the job pauses with the third wave
// not started; resume opens it; retry runs only the two failed again,
// as new device jobs, once each.
func TestWavesThresholdResumeRetry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 10)
	reg := prometheus.NewRegistry()
	s := e.service(t, reg)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{"waves":["20%","30%","50%"],"max_failures":1,"min_finished":2}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "expanded", func() (bool, error) {
		p, err := s.Get(part.ID)
		return err == nil && p.Expanded, err
	})
	p, _ := s.Get(part.ID)
	if len(p.Members) != 10 {
		t.Fatalf("%d members", len(p.Members))
	}
	// Two devices of the second wave fail.
	fail := map[string]bool{p.Members[2].Device: true, p.Members[4].Device: true}
	tstest.WaitForErr(t, 10*time.Second, "paused by max_failures", func() (bool, error) {
		e.answer(t, part.ID, fail)
		v, err := s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkPaused, err
	})
	v, _ := s.View(ctx, part.ID)
	if !strings.Contains(v.Reason, "max_failures") || len(v.Waves) != 3 ||
		v.Waves[0].State != apitypes.BulkDone || v.Waves[1].Counters.Failed != 2 || v.Waves[2].State != apitypes.BulkPending ||
		v.Waves[2].Counters.Pending != 5 || v.Counters.Pending != 5 || v.Counters.Total != 10 {
		t.Fatalf("paused: %+v", v)
	}
	if n := e.deviceJobs(t, part.ID); n != 5 {
		t.Fatalf("%d device jobs while the third wave waits, want 5", n)
	}
	if _, err := s.Pause(ctx, part.ID, "root"); err != nil { // the operator's hold on top
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, part.ID, "root"); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("paused twice: %v", err)
	}
	if _, err := s.Resume(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	done := func() {
		tstest.WaitForErr(t, 10*time.Second, "done", func() (bool, error) {
			e.answer(t, part.ID, fail)
			v, err = s.View(ctx, part.ID)
			return err == nil && v.State == apitypes.BulkDone, err
		})
	}
	done()
	if v.Counters != (apitypes.BulkCounters{Total: 10, Succeeded: 8, Failed: 2}) || v.Waves[2].State != apitypes.BulkDone {
		t.Fatalf("done: %+v", v)
	}
	if n := testutil.ToFloat64(s.wavesOpened); n != 2 {
		t.Errorf("waves opened: %v", n)
	}
	if n := testutil.ToFloat64(s.paused.WithLabelValues("max_failures")); n != 1 {
		t.Errorf("paused by max_failures: %v", n)
	}

	// Retry: the two failed devices only, as attempt 1.
	delete(fail, p.Members[2].Device)
	if _, err := s.Retry(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "retried", func() (bool, error) {
		e.answer(t, part.ID, fail)
		v, err = s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone && v.Local.Attempt == 1, err
	})
	if v.Counters != (apitypes.BulkCounters{Total: 10, Succeeded: 9, Failed: 1}) {
		t.Fatalf("after retry: %+v", v)
	}
	ids := e.jobIDs(t, part.ID)
	want := []string{AttemptJobID(part.ID, p.Members[2].Device, 1), AttemptJobID(part.ID, p.Members[4].Device, 1)}
	for _, w := range want {
		if !slices.Contains(ids, w) {
			t.Fatalf("retry job %s missing from %v", w, ids)
		}
	}
	if len(ids) != 12 {
		t.Fatalf("%d device jobs after one retry, want 12: %v", len(ids), ids)
	}
	// A second retry runs the one still failed.
	fail = map[string]bool{}
	if _, err := s.Retry(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "retried twice", func() (bool, error) {
		e.answer(t, part.ID, fail)
		v, err = s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkDone && v.Local.Attempt == 2, err
	})
	if v.Counters != (apitypes.BulkCounters{Total: 10, Succeeded: 10}) || len(e.jobIDs(t, part.ID)) != 13 {
		t.Fatalf("after the second retry: %+v %v", v, e.jobIDs(t, part.ID))
	}
	// Past its deadline, a job is not retried.
	deadline := time.Now().Add(time.Second)
	expired, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"}}, deadline)
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, 20*time.Second, "the deadline", func() bool { return time.Now().After(deadline) })
	if _, err := s.Retry(ctx, expired.ID, "root"); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("retry past the deadline: %v", err)
	}
	// Done jobs are neither paused nor resumed.
	if _, err := s.Pause(ctx, part.ID, "root"); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("pause a done job: %v", err)
	}
}

// With approval, each next wave waits for a resume; max_concurrency
// bounds the device jobs not final.
func TestApprovalAndConcurrency(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 6)
	s := e.service(t, nil)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{"waves":[1,5],"approval":true,"max_concurrency":2}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "waiting for approval", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err := s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkPaused && strings.Contains(v.Reason, "approval"), err
	})
	if n := e.deviceJobs(t, part.ID); n != 1 {
		t.Fatalf("%d device jobs before approval", n)
	}
	if _, err := s.Resume(ctx, part.ID, "root"); err != nil {
		t.Fatal(err)
	}
	// Answered one at a time: never more than two open at once.
	tstest.WaitForErr(t, 10*time.Second, "done", func() (bool, error) {
		v, err := s.View(ctx, part.ID)
		if err != nil {
			return false, err
		}
		if open := v.Counters.Queued + v.Counters.Delivered + v.Counters.Running; open > 2 {
			t.Fatalf("more than max_concurrency open: %+v", v.Counters)
		}
		for _, id := range e.jobIDs(t, part.ID) {
			if j, _ := e.js.Get(id); !j.State.Final() {
				if err := e.js.Report(ctx, j.Device, j.ID, jobs.Succeeded, nil, ""); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		return v.State == apitypes.BulkDone && v.Counters.Succeeded == 6, nil
	})
}

// The rate paces a node's dispatch: one device job at once, then rate a
// second as time passes (a clock the test moves), at most a second's
// worth at once.
func TestRatePacesDispatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 6)
	var (
		mu    sync.Mutex
		now   = time.Now()
		reads int
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); reads++; return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	// rounds waits until the loop read the clock n more times.
	rounds := func(n int) {
		mu.Lock()
		until := reads + n
		mu.Unlock()
		tstest.WaitFor(t, 10*time.Second, "rounds of the loop", func() bool { mu.Lock(); defer mu.Unlock(); return reads >= until })
	}
	s, err := New(Config{Tree: e.m, Search: e.st.Search, Calls: e.cs, Jobs: e.js, Logger: tstest.Logger(t), Tick: 10 * time.Millisecond, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{"rate":{"per_second":2}}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, 10*time.Second, "the first device job", func() bool { return e.deviceJobs(t, part.ID) == 1 })
	rounds(30)
	if n := e.deviceJobs(t, part.ID); n != 1 {
		t.Fatalf("%d device jobs with the clock still, want 1", n)
	}
	advance(time.Second)
	tstest.WaitFor(t, 10*time.Second, "two more a second later", func() bool { return e.deviceJobs(t, part.ID) == 3 })
	advance(10 * time.Second)
	tstest.WaitFor(t, 10*time.Second, "two more after ten seconds", func() bool { return e.deviceJobs(t, part.ID) == 5 })
	rounds(30)
	if n := e.deviceJobs(t, part.ID); n != 5 {
		t.Fatalf("%d device jobs after ten seconds, want 5 (a second's worth at once)", n)
	}
}

// A node restarted mid-rollout takes it up where its record says: still
// waiting for approval, then the next waves, with no device job made
// twice.
func TestRolloutSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 6)
	s := e.service(t, nil)
	part, err := s.Create(ctx, sys, apitypes.NewBulkJob{Function: "reboot", Target: apitypes.BulkTarget{Subtree: "/devices"},
		Rollout: json.RawMessage(`{"waves":[2,2,2],"approval":true}`)}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 10*time.Second, "waiting for approval", func() (bool, error) {
		e.answer(t, part.ID, nil)
		v, err := s.View(ctx, part.ID)
		return err == nil && v.State == apitypes.BulkPaused && v.Counters.Succeeded == 2, err
	})
	s.Close()
	s2 := e.service(t, nil)
	if v, err := s2.View(ctx, part.ID); err != nil || v.State != apitypes.BulkPaused || e.deviceJobs(t, part.ID) != 2 {
		t.Fatalf("after the restart: %+v %v, %d device jobs", v, err, e.deviceJobs(t, part.ID))
	}
	for range 2 {
		if _, err := s2.Resume(ctx, part.ID, "root"); err != nil {
			t.Fatal(err)
		}
		want := e.deviceJobs(t, part.ID) + 2
		tstest.WaitForErr(t, 10*time.Second, "the next wave", func() (bool, error) {
			e.answer(t, part.ID, nil)
			v, err := s2.View(ctx, part.ID)
			return err == nil && v.State != apitypes.BulkRunning && v.Counters.Succeeded == want, err
		})
	}
	v, _ := s2.View(ctx, part.ID)
	if v.State != apitypes.BulkDone || v.Counters != (apitypes.BulkCounters{Total: 6, Succeeded: 6}) || e.deviceJobs(t, part.ID) != 6 {
		t.Fatalf("done: %+v, %d device jobs", v, e.deviceJobs(t, part.ID))
	}
}
