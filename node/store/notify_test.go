package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// waitResult is one WaitLog's answer.
type waitResult struct {
	seq uint64
	err error
}

func waitLogAsync(ctx context.Context, s *Postgres, after uint64) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		seq, err := s.WaitLog(ctx, after)
		ch <- waitResult{seq, err}
	}()
	return ch
}

func newModel(t *testing.T, s model.Store) *model.Model {
	t.Helper()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func putContext(t *testing.T, m *model.Model, p model.Path) uint64 {
	t.Helper()
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "device"})
	if err != nil {
		t.Fatal(err)
	}
	return es[len(es)-1].Seq
}

// expectWake waits for a WaitLog answer at least want, within a bound
// that a polling implementation with a sensible period would miss only
// barely, but a wakeup by notification meets by far.
func expectWake(t *testing.T, ch <-chan waitResult, want uint64) {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil || r.seq < want {
			t.Fatalf("WaitLog = %d, %v; want >= %d", r.seq, r.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("WaitLog did not return after a commit of seq %d", want)
	}
}

// TestWaitLogAcrossStores: a commit through one store wakes a waiter on
// another store of the same database.
func TestWaitLogAcrossStores(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	writer := openTestPostgres(t, dsn)
	defer writer.Close()
	reader := openTestPostgres(t, dsn)
	defer reader.Close()
	m := newModel(t, writer)
	first := putContext(t, m, "/devices/a")

	// Already beyond: at once.
	ctx := context.Background()
	if seq, err := reader.WaitLog(ctx, 0); err != nil || seq != first {
		t.Fatalf("WaitLog(0) = %d, %v; want %d", seq, err, first)
	}
	ch := waitLogAsync(ctx, reader, first)
	select {
	case r := <-ch:
		t.Fatalf("WaitLog returned without a commit: %+v", r)
	default:
	}
	start := time.Now()
	next := putContext(t, m, "/devices/b")
	expectWake(t, ch, next)
	t.Logf("woken %v after the commit", time.Since(start))
	if n := reader.listenerConns(); n != 1 {
		t.Fatalf("%d listening connections, want 1", n)
	}

	// A context that ends first.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := reader.WaitLog(cctx, next); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLog with an ended context: %v", err)
	}
	// Closing the store ends the waits.
	ch = waitLogAsync(ctx, reader, next)
	reader.Close()
	select {
	case r := <-ch:
		if !errors.Is(r.err, model.ErrClosed) {
			t.Fatalf("WaitLog on close = %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitLog still waiting after Close")
	}
	if _, err := reader.WaitLog(ctx, next); !errors.Is(err, model.ErrClosed) {
		t.Fatalf("WaitLog after Close: %v", err)
	}
	// A store closed before anything waited starts no listener.
	idle := openTestPostgres(t, dsn)
	idle.Close()
	if _, err := idle.WaitLog(ctx, 0); !errors.Is(err, model.ErrClosed) || idle.listenerConns() != 0 {
		t.Fatalf("WaitLog on a closed store: %v, %d connections", err, idle.listenerConns())
	}
}

// TestWaitLogReconnects: the listening connection is terminated by the
// server; a commit made while it is down, and one made after it is back,
// both wake waiters.
func TestWaitLogReconnects(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	writer := openTestPostgres(t, dsn)
	defer writer.Close()
	reader := openTestPostgres(t, dsn)
	defer reader.Close()
	m := newModel(t, writer)
	seq := putContext(t, m, "/devices/a")
	if _, err := reader.WaitLog(context.Background(), 0); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	terminate := func() {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&n); err != nil || n != 1 {
			t.Fatalf("terminated %d listeners, %v", n, err)
		}
	}

	// Down, a commit, back: the check after LISTEN finds the commit. (The
	// commit most likely lands while the listener is down: it waits at
	// least 50 ms before reconnecting. Either way the waiter must wake.)
	terminate()
	ch := waitLogAsync(ctx, reader, seq)
	seq = putContext(t, m, "/devices/b")
	expectWake(t, ch, seq)
	tstest.WaitFor(t, 20*time.Second, "the listener to reconnect", func() bool { return reader.listenerConns() >= 2 })

	// Back: notifications flow again.
	terminate()
	tstest.WaitFor(t, 20*time.Second, "the listener to reconnect a second time", func() bool { return reader.listenerConns() >= 3 })
	ch = waitLogAsync(ctx, reader, seq)
	seq = putContext(t, m, "/devices/c")
	expectWake(t, ch, seq)
}
