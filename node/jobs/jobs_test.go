package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

func open(t testing.TB, dir string) (*model.Model, func()) {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return m, func() { m.Close(); st.Close() }
}

func TestLifecycleAndRestart(t *testing.T) {
	dir := t.TempDir()
	m, closeStore := open(t, dir)
	var mu sync.Mutex
	var delivered []string
	s, err := New(Config{Records: m, Deliver: func(j Job) { mu.Lock(); delivered = append(delivered, j.ID); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j, err := s.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Tenant: "a", Function: "ping", By: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != Queued || string(j.Args) != "{}" || len(delivered) != 1 {
		t.Fatalf("job %+v delivered %v", j, delivered)
	}
	j2, _ := s.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Function: "reboot", Args: json.RawMessage(`{"now": true}`)})
	if err := s.MarkDelivered(ctx, "d1", j.ID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	closeStore()

	// After a restart both are still pending.
	m, closeStore = open(t, dir)
	defer closeStore()
	s, err = New(Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.Pending("d1")
	if len(p) != 2 || p[0].ID != j.ID || p[0].State != Delivered || p[1].ID != j2.ID {
		t.Fatalf("pending after restart: %+v", p)
	}
	// Another device cannot answer.
	if err := s.Report(ctx, "d2", j.ID, Succeeded, nil, ""); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("foreign report: %v", err)
	}
	waited := make(chan Job)
	go func() {
		got, _ := s.Wait(ctx, j.ID)
		waited <- got
	}()
	if err := s.Report(ctx, "d1", j.ID, Running, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Report(ctx, "d1", j.ID, Succeeded, json.RawMessage(`{"pong":true}`), ""); err != nil {
		t.Fatal(err)
	}
	got := <-waited
	if got.State != Succeeded || string(got.Result) != `{"pong":true}` || len(got.History) != 4 {
		t.Fatalf("waited %+v", got)
	}
	// A late answer changes nothing but history.
	if err := s.Report(ctx, "d1", j.ID, Failed, nil, "late"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Get(j.ID)
	if got.State != Succeeded || got.History[len(got.History)-1].State != Failed {
		t.Fatalf("after late answer %+v", got)
	}
	// Cancel.
	c, err := s.Cancel(ctx, j2.ID, "alice")
	if err != nil || c.State != Cancelled {
		t.Fatalf("cancel %+v %v", c, err)
	}
	if _, err := s.Cancel(ctx, j2.ID, "alice"); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("cancel twice: %v", err)
	}
	if len(s.Pending("d1")) != 0 || s.Active() != 0 {
		t.Fatal("final jobs still pending")
	}
}

func TestExpiryAndValidation(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := New(Config{Records: m, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, spec := range []Spec{
		{Device: "d", Function: "f", Args: json.RawMessage(`[1]`)},
		{Device: "d", Function: "f", Args: json.RawMessage(`{`)},
		{Device: "d", Function: "f", Deadline: now.Add(-time.Second)},
		{Device: "d", Function: "f", Deadline: now.Add(MaxDeadline + time.Hour)},
	} {
		if _, err := s.Create(ctx, spec); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("%+v: %v", spec, err)
		}
	}
	j, err := s.Create(ctx, Spec{Device: "d", Function: "f", Deadline: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if len(s.Pending("d")) != 0 {
		t.Fatal("a job past its deadline is pending")
	}
	s.expire()
	got, _ := s.Get(j.ID)
	if got.State != Expired {
		t.Fatalf("state %s", got.State)
	}
	if n, err := s.Prune(ctx, now.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("prune %d %v", n, err)
	}
	if _, err := s.Get(j.ID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("pruned job: %v", err)
	}
}

// Every state change is also an event on the device's context, in the
// same commit, so the change log (and consumers of this node) see it.
func TestStateChangesAreEvents(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/d1", Type: "device", Tenant: "a"}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j, err := s.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Tenant: "a", Function: "ping", By: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, "d1", j.ID); err != nil {
		t.Fatal(err)
	}
	// No answer: the delivery is written on its own after DeliveredGrace.
	var evs []model.Event
	tstest.WaitForErr(t, tstest.DefaultTimeout, "the delivery written", func() (bool, error) {
		var err error
		evs, err = m.Events("/devices/d1", model.EventQuery{})
		return len(evs) == 2, err
	})
	var last JobEvent
	if err := json.Unmarshal(evs[0].Payload, &last); err != nil || evs[0].Name != "job" || last.Job != j.ID || last.State != Delivered || last.By != "alice" {
		t.Fatalf("newest event %+v: %+v %v", evs[0], last, err)
	}
	// A job whose context is gone is still stored.
	j2, err := s.Create(ctx, Spec{Path: "/devices/gone", Device: "gone", Function: "ping"})
	if err != nil {
		t.Fatalf("job without context: %v", err)
	}
	if got, err := s.Get(j2.ID); err != nil || got.State != Queued {
		t.Fatalf("get %+v %v", got, err)
	}
}

// A job created with a chosen id is made once: creating it again is
// refused whatever its state, and its failure is recorded on its bulk
// job's context in the commit of the failure.
func TestChosenIDAndBulkFailure(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	ctx := context.Background()
	for _, p := range []model.Path{"/devices/d1", BulkPath("b1")} {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device", Tenant: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := BulkJobID("b1", "d1")
	spec := Spec{ID: id, Bulk: "b1", Path: "/devices/d1", Device: "d1", Tenant: "a", Function: "ping"}
	j, err := s.Create(ctx, spec)
	if err != nil || j.ID != id || j.Bulk != "b1" {
		t.Fatalf("create: %+v %v", j, err)
	}
	if _, err := s.Create(ctx, spec); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("created twice: %v", err)
	}
	if err := s.Report(ctx, "d1", id, Failed, nil, "disk full"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, spec); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("created again once final: %v", err)
	}
	evs, err := m.Events(BulkPath("b1"), model.EventQuery{})
	if err != nil || len(evs) != 1 || evs[0].Name != BulkFailureEventName {
		t.Fatalf("bulk events %+v %v", evs, err)
	}
	var f BulkFailureEvent
	if err := json.Unmarshal(evs[0].Payload, &f); err != nil || f.Job != id || f.Device != "d1" || f.State != Failed || f.Error != "disk full" || f.Path != "/devices/d1" {
		t.Fatalf("failure %+v %v", f, err)
	}
	if got, _ := s.Get(id); got.Bulk != "b1" || got.State != Failed {
		t.Fatalf("job %+v", got)
	}
}

// A device that answers within DeliveredGrace costs one write for the
// delivery and the answer: the answer's record and events carry both.
func TestDeliveryWrittenWithTheAnswer(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/d1", Type: "device", Tenant: "a"}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j, err := s.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Tenant: "a", Function: "ping", By: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	seq0 := m.LastSeq()
	if err := s.MarkDelivered(ctx, "d1", j.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(j.ID); err != nil || got.State != Delivered {
		t.Fatalf("after the acknowledgement: %+v %v", got, err)
	}
	if err := s.Report(ctx, "d1", j.ID, Succeeded, []byte(`{"ok":true}`), ""); err != nil {
		t.Fatal(err)
	}
	stored, err := s.Stored(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []State
	for _, h := range stored.History {
		states = append(states, h.State)
	}
	if !slices.Equal(states, []State{Queued, Delivered, Succeeded}) {
		t.Fatalf("history %v", states)
	}
	evs, err := m.Events("/devices/d1", model.EventQuery{})
	if err != nil || len(evs) != 3 || evs[0].Seq != evs[1].Seq+1 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	// One commit: the record and the two events, nothing before.
	if n := m.LastSeq() - seq0; n != 3 {
		t.Fatalf("%d entries logged for the delivery and the answer, want 3", n)
	}
}
