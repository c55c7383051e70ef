package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// Two services over one model stand for two replicas of a cluster, the
// second one lagging: it never follows the log, so its view of a job is
// the one it loaded. Whatever it does from that stale view, a job's
// final state and result, once acknowledged, stay as they are, and no
// step of its lifecycle is undone: on either store.
func TestStaleViewCannotUndoATransition(t *testing.T) {
	t.Run("badger", func(t *testing.T) {
		m, closeStore := open(t, t.TempDir())
		defer closeStore()
		testStaleView(t, m)
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Shared(t)
		st, err := store.OpenPostgres(context.Background(), store.PostgresOptions{DSN: pg.NewDatabase(t), Logger: tstest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.New(model.Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { m.Close(); st.Close() }()
		testStaleView(t, m)
	})
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func testStaleView(t *testing.T, m *model.Model) {
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/d1", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	never := func() bool { return false }
	fresh, err := New(Config{Records: m, Leading: never})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	finish, err := fresh.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Function: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	progress, err := fresh.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Function: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	cancel, err := fresh.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Function: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	// The lagging replica loads the three jobs queued, and hears no more.
	var staleDeliveries []string
	var mu sync.Mutex
	stale, err := New(Config{Records: m, Leading: never, Deliver: func(j Job) {
		mu.Lock()
		staleDeliveries = append(staleDeliveries, j.ID)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()

	// Through the up-to-date replica: one job succeeds, one runs.
	if err := fresh.MarkDelivered(ctx, "d1", finish.ID); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Report(ctx, "d1", finish.ID, Succeeded, json.RawMessage(`{"pong":true}`), ""); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Report(ctx, "d1", progress.ID, Running, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Report(ctx, "d1", cancel.ID, Failed, nil, "no"); err != nil {
		t.Fatal(err)
	}

	// The lagging replica acts on its view.
	if err := stale.MarkDelivered(ctx, "d1", finish.ID); err != nil {
		t.Fatalf("stale delivery acknowledgement: %v", err)
	}
	if err := stale.MarkDelivered(ctx, "d1", progress.ID); err != nil {
		t.Fatalf("stale delivery acknowledgement: %v", err)
	}
	if _, err := stale.Cancel(ctx, cancel.ID, "bob"); !errors.Is(err, model.ErrConflict) {
		t.Errorf("cancelling a job failed elsewhere: %v; want a conflict", err)
	}
	// A late answer to the finished job is recorded, not applied.
	if err := stale.Report(ctx, "d1", finish.ID, Failed, nil, "late"); err != nil {
		t.Fatalf("late answer: %v", err)
	}

	for _, c := range []struct {
		id   string
		want State
	}{{finish.ID, Succeeded}, {progress.ID, Running}, {cancel.ID, Failed}} {
		var j Job
		b, err := m.Record(KindJob, c.id)
		if err == nil {
			err = json.Unmarshal(b, &j)
		}
		if err != nil || j.State != c.want {
			t.Errorf("job %s: %s, %v; want %s", c.id, j.State, err, c.want)
		}
		if c.id == finish.ID {
			if string(j.Result) != `{"pong":true}` {
				t.Errorf("result %s", j.Result)
			}
			if n := len(j.History); n != 4 || j.History[n-1].State != Failed || j.History[n-2].State != Succeeded {
				t.Errorf("history %+v; want queued, delivered, succeeded and the late answer", j.History)
			}
		}
	}
	// The lagging replica no longer offers the jobs it learnt are final.
	for _, j := range stale.Pending("d1") {
		if j.ID != progress.ID {
			t.Errorf("pending on the lagging replica: %s (%s)", j.ID, j.State)
		}
	}
}

// A job created and finished in the log a replica follows in one go is
// not delivered by that replica: it is already final.
func TestFollowDeliversNoFinalJob(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	ctx := context.Background()
	never := func() bool { return false }
	writer, err := New(Config{Records: m, Leading: never})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	var delivered []string
	follower, err := New(Config{Records: m, Leading: never, Deliver: func(j Job) { delivered = append(delivered, j.ID) }})
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	var mu sync.Mutex
	var es []model.Entry
	m.OnCommit(func(b []model.Entry) { mu.Lock(); es = append(es, b...); mu.Unlock() })
	done, err := writer.Create(ctx, Spec{Device: "d1", Function: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Report(ctx, "d1", done.ID, Succeeded, nil, ""); err != nil {
		t.Fatal(err)
	}
	open, err := writer.Create(ctx, Spec{Device: "d1", Function: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	follower.Follow(es)
	mu.Unlock()
	if len(delivered) != 1 || delivered[0] != open.ID {
		t.Fatalf("delivered %v; want only %s", delivered, open.ID)
	}
	if p := follower.Pending("d1"); len(p) != 1 || p[0].ID != open.ID {
		t.Fatalf("pending %+v", p)
	}
}
