package audit

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

func newLog(t *testing.T) (*Log, *model.Model) {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{Dir: t.TempDir(), CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := model.New(model.Config{Store: st, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	l, err := New(Config{Records: m, Logger: tstest.Logger(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return l, m
}

func TestPrune(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		l.Write(Record{Time: base.Add(time.Duration(i) * time.Hour), Op: "context.put", Outcome: OK})
	}
	l.WriteCall(Record{Op: "call", Job: "j1", Outcome: Pending}, base.Add(30*time.Minute))
	k, err := l.Prune(ctx, base.Add(90*time.Minute))
	if err != nil || k != 3 {
		t.Fatalf("pruned %d, %v", k, err)
	}
	left, err := l.List(ctx, 10, nil)
	if err != nil || len(left) != 1 || !left[0].Time.Equal(base.Add(2*time.Hour)) || left[0].ID != Key(base.Add(2*time.Hour), 3) {
		t.Fatalf("left %+v, %v", left, err)
	}
	var m dto.Metric
	if err := l.written.WithLabelValues("ok").Write(&m); err != nil || m.GetCounter().GetValue() != 4 {
		t.Fatalf("written ok = %v, %v", m.GetCounter().GetValue(), err)
	}
}

// A call's record and its job's end may be written in either order; the
// final outcome wins and the call's who and via are kept.
func TestCallAndJobEndInEitherOrder(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	call := Record{User: "admin", Consumer: "eu", Via: []string{"hq", "eu"}, Op: "call", Path: "/devices/d1", Job: "j1"}

	l.JobFinished(Job{ID: "j1", Created: created, State: "failed", Error: "boom", CreatedBy: "admin@eu", Path: "/devices/d1"})
	l.WriteCall(call, created) // the call's answer comes second
	l.WriteCall(Record{User: "bob", Op: "call", Job: "j2"}, created.Add(time.Second))
	l.JobFinished(Job{ID: "j2", Created: created.Add(time.Second), State: "succeeded"})

	recs, err := l.List(ctx, 10, nil)
	if err != nil || len(recs) != 2 {
		t.Fatalf("records %+v, %v", recs, err)
	}
	j2, j1 := recs[0], recs[1]
	if j1.Outcome != "failed" || j1.Error != "boom" || j1.User != "admin" || len(j1.Via) != 2 || j1.ID != JobKey(created, "j1") {
		t.Fatalf("j1: %+v", j1)
	}
	if j2.Outcome != "succeeded" || j2.User != "bob" || j2.Updated.IsZero() {
		t.Fatalf("j2: %+v", j2)
	}
}

// A call left pending (the node stopped between the job's end and the
// record's update) is completed by Reconcile.
func TestReconcile(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.WriteCall(Record{User: "admin", Op: "call", Job: "j1"}, created)
	l.WriteCall(Record{User: "admin", Op: "call", Job: "j2"}, created.Add(time.Second))
	jobs := map[string]Job{
		"j1": {ID: "j1", Created: created, State: "expired"},
		"j2": {ID: "j2", Created: created.Add(time.Second), State: "running"},
	}
	n, err := l.Reconcile(ctx, func(id string) (Job, bool) { j, ok := jobs[id]; return j, ok })
	if err != nil || n != 1 {
		t.Fatalf("reconciled %d, %v", n, err)
	}
	recs, _ := l.List(ctx, 10, nil)
	if len(recs) != 2 || recs[1].Outcome != "expired" || recs[1].User != "admin" || recs[0].Outcome != Pending {
		t.Fatalf("records %+v", recs)
	}
}

// walkGuard is a Records that fails a read made inside a walk of the
// records, as a cluster's store would deadlock on it while a snapshot is
// being installed.
type walkGuard struct {
	*model.Model
	walking bool
	nested  int
}

func (g *walkGuard) Record(kind, key string) ([]byte, error) {
	if g.walking {
		g.nested++
	}
	return g.Model.Record(kind, key)
}

func (g *walkGuard) Records(kind string, fn func(key string, value []byte) error) error {
	if g.walking {
		g.nested++
	}
	g.walking = true
	defer func() { g.walking = false }()
	return g.Model.Records(kind, fn)
}

// TestReconcileReadsOutsideTheWalk: the job lookup, which reads the
// store, runs after the walk of the audit records, not inside it.
func TestReconcileReadsOutsideTheWalk(t *testing.T) {
	_, m := newLog(t)
	g := &walkGuard{Model: m}
	l, err := New(Config{Records: g, Logger: tstest.Logger(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.WriteCall(Record{User: "admin", Op: "call", Job: "j1"}, created)
	n, err := l.Reconcile(ctx, func(id string) (Job, bool) {
		g.Record("job", id) // as the jobs service loads a job it does not hold
		return Job{ID: id, Created: created, State: "succeeded"}, true
	})
	if err != nil || n != 1 {
		t.Fatalf("reconciled %d, %v", n, err)
	}
	if g.nested != 0 {
		t.Fatalf("%d reads inside the walk of the records", g.nested)
	}
}
