package store

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// A follower of a cluster in PostgreSQL mode opens the shared database
// read-only: it migrates nothing, writes nothing, and reads what the
// writer commits.

func openReadOnly(t *testing.T, opts PostgresOptions) *Postgres {
	t.Helper()
	opts.ReadOnly = true
	opts.Logger = tstest.Logger(t)
	s, err := OpenPostgres(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// selectOnlyRole creates a role that may only read dsn's tables and
// returns dsn as that role.
func selectOnlyRole(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	role := "reader_" + conn.Config().Database
	ident := pgx.Identifier{role}.Sanitize()
	for _, sql := range []string{
		`CREATE ROLE ` + ident + ` LOGIN`,
		`GRANT CONNECT ON DATABASE ` + pgx.Identifier{conn.Config().Database}.Sanitize() + ` TO ` + ident,
		`GRANT USAGE ON SCHEMA public TO ` + ident,
		`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ` + ident,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() { // before the database is dropped
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		for _, sql := range []string{`DROP OWNED BY ` + ident, `DROP ROLE ` + ident} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

func wantReadOnly(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrReadOnly) || !errors.Is(err, model.ErrNotLeader) {
		t.Fatalf("%s: %v, want ErrReadOnly (model.ErrNotLeader)", what, err)
	}
}

// TestPostgresReadOnlyFollower: a read-only store opens with a role that
// can only SELECT (so its open writes nothing), reads everything the
// writer committed, hears of new commits, and refuses every write, the
// server included.
func TestPostgresReadOnlyFollower(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	w := openFenced(t, dsn)
	if err := w.Claim(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	mw := startModel(t, w)
	if _, err := mw.Apply(ctx, put("/devices/a"),
		model.Mutation{Op: model.OpEvent, Path: "/devices/a", Event: &model.Event{Level: model.LevelWarning}}); err != nil {
		t.Fatal(err)
	}
	if err := mw.PutRecord(ctx, "k", "x", []byte("v")); err != nil {
		t.Fatal(err)
	}

	f := openReadOnly(t, PostgresOptions{DSN: selectOnlyRole(t, dsn)})
	if last, err := f.LastSeq(); err != nil || last != mw.LastSeq() {
		t.Fatalf("follower's last seq %d, %v; writer's %d", last, err, mw.LastSeq())
	}
	if _, err := f.Context("/devices/a"); err != nil {
		t.Fatal(err)
	}
	if cs, err := f.Children("/devices", "", 0); err != nil || len(cs) != 1 {
		t.Fatalf("children %v, %v", cs, err)
	}
	if evs, err := f.Events("/devices/a", model.EventQuery{}); err != nil || len(evs) != 1 {
		t.Fatalf("events %v, %v", evs, err)
	}
	if v, err := f.Record("k", "x"); err != nil || string(v) != "v" {
		t.Fatalf("record %q, %v", v, err)
	}
	if es, err := f.ReadLog(0, 100); err != nil || uint64(len(es)) != mw.LastSeq() {
		t.Fatalf("log %d entries, %v", len(es), err)
	}
	if term, replica, err := f.Fence(ctx); err != nil || term != 1 || replica != "a" {
		t.Fatalf("fence %d %q, %v", term, replica, err)
	}

	// A new commit of the writer reaches the follower's WaitLog.
	last := mw.LastSeq()
	got := make(chan uint64, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wg.Go(func() {
		seq, err := f.WaitLog(wctx, last)
		if err != nil {
			t.Error(err)
		}
		got <- seq
	})
	if _, err := mw.Apply(ctx, put("/devices/b")); err != nil {
		t.Fatal(err)
	}
	if seq := <-got; seq <= last {
		t.Fatalf("WaitLog after %d returned %d", last, seq)
	}

	// Every write is refused, and nothing is written.
	before := rowCounts(t, w)
	mf := startModel(t, f)
	_, err := mf.Apply(ctx, put("/devices/c"))
	wantReadOnly(t, "commit", err)
	wantReadOnly(t, "claim", f.Claim(ctx, 5, "f"))
	_, err = f.CompactLog(0)
	wantReadOnly(t, "compaction", err)
	_, err = f.PruneEvents(0, time.Now())
	wantReadOnly(t, "event pruning", err)
	_, err = f.CopyContexts(ctx, []*model.Context{{Path: "/devices/d", Type: "device"}})
	wantReadOnly(t, "copy", err)
	if after := rowCounts(t, w); after != before {
		t.Fatalf("a read-only store wrote: before %s, after %s", before, after)
	}
	if st := f.FenceStatus(); !st.ReadOnly || st.Fenced {
		t.Fatalf("follower's fence status %+v", st)
	}

	// The server refuses a write on its connections too, whatever the
	// role may do.
	su := openReadOnly(t, PostgresOptions{DSN: dsn})
	_, err = su.Pool().Exec(ctx, `UPDATE meta SET last_seq = last_seq + 1`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" { // read_only_sql_transaction
		t.Fatalf("a write on a read-only store's connection: %v", err)
	}
}

// TestPostgresReadOnlySchema: a read-only store never migrates. On a
// database the writer has not migrated yet it fails with ErrSchemaBehind
// and leaves no trace; opening beside a migrating writer, it either waits
// for nothing and fails so, or finds the whole schema.
func TestPostgresReadOnlySchema(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	_, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn, ReadOnly: true, Logger: tstest.Logger(t)})
	if !errors.Is(err, ErrSchemaBehind) {
		t.Fatalf("read-only open of an empty database: %v, want ErrSchemaBehind", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d tables after a read-only open, %v", tables, err)
	}
	if _, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn, ReadOnly: true, Fenced: true}); err == nil {
		t.Fatal("opened both read-only and fenced")
	}

	var (
		wg        sync.WaitGroup
		followers = make([]*Postgres, 4)
		ferrs     = make([]error, 4)
		writer    *Postgres
		werr      error
	)
	wg.Go(func() {
		writer, werr = OpenPostgres(ctx, PostgresOptions{DSN: dsn, Fenced: true, Logger: tstest.Logger(t)})
	})
	for i := range followers {
		wg.Go(func() {
			followers[i], ferrs[i] = OpenPostgres(ctx, PostgresOptions{DSN: dsn, ReadOnly: true, Logger: tstest.Logger(t)})
		})
	}
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	defer writer.Close()
	for i, err := range ferrs {
		if err == nil {
			followers[i].Close()
		} else if !errors.Is(err, ErrSchemaBehind) {
			t.Fatalf("follower %d: %v", i, err)
		}
	}
	openReadOnly(t, PostgresOptions{DSN: dsn}) // now the schema is there
}

// TestPostgresFollowerReadsReplica: a follower opened with read replicas
// serves tree browsing from them, as the writer's store does.
func TestPostgresFollowerReadsReplica(t *testing.T) {
	fx := newReplicaFixture(t, 5*time.Second)
	f := openReadOnly(t, PostgresOptions{
		DSN:                  fx.store.Pool().Config().ConnString(),
		ReadDSNs:             []string{fx.replicaDSN},
		ReplicaCheckInterval: 50 * time.Millisecond,
	})
	tstest.WaitFor(t, 20*time.Second, "the follower's replica to be in rotation", func() bool {
		return f.ReplicaStatus()[0].Healthy
	})
	cs, err := f.Children("/devices", "", 0)
	if err != nil || len(cs) != 1 || cs[0].Name != "a" {
		t.Fatalf("children %v, %v", cs, err)
	}
	if _, err := f.Events("/devices/a", model.EventQuery{}); err != nil {
		t.Fatal(err)
	}
	if reads := f.ReplicaStatus()[0].Reads; reads != 2 {
		t.Fatalf("the replica served %d of the follower's 2 reads", reads)
	}
}
