package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// replicaFixture is a test database on the shared primary, a streaming
// replica of the primary, and a store reading from it.
type replicaFixture struct {
	replica    *pgtest.Cluster
	replicaDSN string
	store      *Postgres
	model      *model.Model
}

func newReplicaFixture(t *testing.T, maxLag time.Duration) *replicaFixture {
	t.Helper()
	return newReplicaFixtureWith(t, func(o *PostgresOptions) { o.MaxReplicaLag = maxLag })
}

// newReplicaFixtureWith is newReplicaFixture with the store's options
// adjusted by opt.
func newReplicaFixtureWith(t *testing.T, opt func(*PostgresOptions)) *replicaFixture {
	t.Helper()
	primary := pgtest.Shared(t)
	dsn := primary.NewDatabase(t)
	replica, err := primary.StartReplica()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Stop)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	f := &replicaFixture{replica: replica, replicaDSN: replica.DSN(cfg.Database)}
	opts := PostgresOptions{
		DSN: dsn, ReadDSNs: []string{f.replicaDSN}, Logger: tstest.Logger(t),
		ReplicaCheckInterval: 50 * time.Millisecond,
	}
	opt(&opts)
	f.store, err = OpenPostgres(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	f.model, err = model.New(model.Config{Store: f.store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.model.Close() })
	f.put(t, "/devices/a")
	if _, err := f.model.Apply(context.Background(), model.Mutation{Op: model.OpEvent, Path: "/devices/a",
		Event: &model.Event{Level: model.LevelInfo}}); err != nil {
		t.Fatal(err)
	}
	f.waitHealthy(t, true)
	// In rotation, and replayed past the writes above.
	tstest.WaitFor(t, 20*time.Second, "the replica to catch up", func() bool {
		_, name := f.store.ReadPool()
		return name != "primary"
	})
	return f
}

func (f *replicaFixture) put(t *testing.T, p model.Path) {
	t.Helper()
	if _, err := f.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "device"}); err != nil {
		t.Fatal(err)
	}
}

func (f *replicaFixture) status(t *testing.T) ReplicaStatus {
	t.Helper()
	st := f.store.ReplicaStatus()
	if len(st) != 1 {
		t.Fatalf("status of %d replicas, want 1", len(st))
	}
	return st[0]
}

func (f *replicaFixture) waitHealthy(t *testing.T, healthy bool) ReplicaStatus {
	t.Helper()
	var st ReplicaStatus
	tstest.WaitForErr(t, 20*time.Second, fmt.Sprintf("the replica's health to be %v", healthy), func() (bool, error) {
		if st = f.status(t); st.Healthy == healthy {
			return true, nil
		}
		return false, errors.New(st.LastError)
	})
	return st
}

// children lists /devices and reports whether the replica served it.
func (f *replicaFixture) children(t *testing.T) (names []string, fromReplica bool) {
	t.Helper()
	before := f.status(t).Reads
	cs, err := f.store.Children("/devices", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names, f.status(t).Reads > before
}

// exec runs sql on the replica directly.
func (f *replicaFixture) exec(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.replicaDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

func TestReplicaServesReads(t *testing.T) {
	f := newReplicaFixture(t, 0)
	st := f.status(t)
	if strings.Contains(st.Name, "@") || !strings.HasPrefix(st.Name, "127.0.0.1:") {
		t.Fatalf("replica name %q", st.Name)
	}
	names, fromReplica := f.children(t)
	if !fromReplica || !slices.Equal(names, []string{"a"}) {
		t.Fatalf("children = %v, from replica %v", names, fromReplica)
	}
	before := f.status(t).Reads
	evs, err := f.store.Events("/devices/a", model.EventQuery{})
	if err != nil || len(evs) == 0 {
		t.Fatalf("events = %v, %v", evs, err)
	}
	if f.status(t).Reads != before+1 {
		t.Fatal("events not read from the replica")
	}
	// ReadPool hands out the replica's pool: it is in recovery.
	pool, name := f.store.ReadPool()
	if name != st.Name {
		t.Fatalf("read pool %q, want %q", name, st.Name)
	}
	var standby bool
	if err := pool.QueryRow(context.Background(), `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil || !standby {
		t.Fatalf("read pool in recovery = %v, %v", standby, err)
	}
	// State-machine reads stay on the primary.
	before = f.status(t).Reads
	if _, err := f.store.Context("/devices/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.LastSeq(); err != nil {
		t.Fatal(err)
	}
	if f.status(t).Reads != before {
		t.Fatal("context or last seq read from the replica")
	}
}

func TestReplicaDownAndBack(t *testing.T) {
	f := newReplicaFixture(t, 0)
	f.replica.Shutdown()
	// At once (the replica may still look healthy: the read fails over)
	// and after the check has noticed.
	for range 2 {
		names, fromReplica := f.children(t)
		if fromReplica || !slices.Equal(names, []string{"a"}) {
			t.Fatalf("children with the replica down = %v, from replica %v", names, fromReplica)
		}
		f.waitHealthy(t, false)
	}
	if st := f.status(t); st.LastError == "" {
		t.Fatal("no error for a replica that is down")
	}
	f.put(t, "/devices/b")
	if err := f.replica.Restart(); err != nil {
		t.Fatal(err)
	}
	f.waitHealthy(t, true)
	var names []string
	tstest.WaitFor(t, 20*time.Second, "reads back on the replica", func() bool {
		var fromReplica bool
		names, fromReplica = f.children(t)
		return fromReplica
	})
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("children from the replica = %v", names)
	}
}

// TestReplicaReadYourWrites: with replay paused, the replica stays in
// rotation (the bound is long) but lacks the write, so the read that
// follows the write goes to the primary.
func TestReplicaReadYourWrites(t *testing.T) {
	f := newReplicaFixture(t, time.Minute)
	f.exec(t, `SELECT pg_wal_replay_pause()`)
	f.put(t, "/devices/b")
	names, fromReplica := f.children(t)
	if fromReplica || !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("children after a write = %v, from replica %v", names, fromReplica)
	}
	var n int
	conn, err := pgx.Connect(context.Background(), f.replicaDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM contexts WHERE path = '/devices/b'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("replica with replay paused has the write: %d, %v", n, err)
	}
	if !f.status(t).Healthy {
		t.Fatal("replica left rotation within the lag bound")
	}
	f.exec(t, `SELECT pg_wal_replay_resume()`)
	tstest.WaitFor(t, 20*time.Second, "reads back on the replica after replay resumed", func() bool {
		names, fromReplica = f.children(t)
		return fromReplica
	})
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("children from the replica = %v", names)
	}
}

func TestReplicaLagBound(t *testing.T) {
	const bound = 200 * time.Millisecond
	f := newReplicaFixture(t, bound)
	f.exec(t, `SELECT pg_wal_replay_pause()`)
	f.put(t, "/devices/b")
	st := f.waitHealthy(t, false)
	if st.Lag <= bound || !strings.Contains(st.LastError, "lag") {
		t.Fatalf("status = %+v", st)
	}
	if names, fromReplica := f.children(t); fromReplica || !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("children = %v, from replica %v", names, fromReplica)
	}
	f.exec(t, `SELECT pg_wal_replay_resume()`)
	if st := f.waitHealthy(t, true); st.Lag > bound || st.LastError != "" {
		t.Fatalf("status = %+v", st)
	}
}

// TestReplicaLag: lag is how long ago the primary was at the newest
// sample the replica has replayed past.
func TestReplicaLag(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rs := &replicas{interval: time.Second, samples: []lsnSample{{t0, 10}, {t0.Add(time.Second), 20}, {t0.Add(2 * time.Second), 30}}}
	now := t0.Add(2500 * time.Millisecond)
	for _, c := range []struct {
		replay uint64
		want   time.Duration
	}{{30, 0}, {40, 0}, {25, 500 * time.Millisecond}, {20, 500 * time.Millisecond}, {15, 1500 * time.Millisecond}, {5, 3500 * time.Millisecond}} {
		if got := rs.lag(now, c.replay); got != c.want {
			t.Errorf("lag at replay %d = %v, want %v", c.replay, got, c.want)
		}
	}
}
