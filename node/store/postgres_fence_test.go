package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// Two Postgres stores on one database are two replicas of a cluster in
// PostgreSQL mode: the fence lets only the one that claimed the newest
// term write.

func openFenced(t *testing.T, dsn string) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: dsn, Fenced: true, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startModel(t *testing.T, s model.Store) *model.Model {
	t.Helper()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func put(p model.Path) model.Mutation {
	return model.Mutation{Op: model.OpPut, Path: p, Type: "device"}
}

// rowCounts counts the rows of every table a commit writes.
func rowCounts(t *testing.T, s *Postgres) string {
	t.Helper()
	var ctxs, evs, logs, recs, last int64
	err := s.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM contexts), (SELECT count(*) FROM events),
		(SELECT count(*) FROM log), (SELECT count(*) FROM records), (SELECT last_seq FROM meta)`).
		Scan(&ctxs, &evs, &logs, &recs, &last)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("contexts %d, events %d, log %d, records %d, last_seq %d", ctxs, evs, logs, recs, last)
}

func wantFenced(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrFenced) || !errors.Is(err, model.ErrNotLeader) {
		t.Fatalf("%s: %v, want ErrFenced (model.ErrNotLeader)", what, err)
	}
}

// TestPostgresFenceTakeover: A claims term 1 and writes; B claims term 2;
// A's writes then fail with ErrFenced and write nothing; B's model
// continues the change log right after A's last entry.
func TestPostgresFenceTakeover(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	a, b := openFenced(t, dsn), openFenced(t, dsn)

	if err := a.Claim(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	ma := startModel(t, a)
	for i := range 3 {
		if _, err := ma.Apply(ctx, put(model.Path(fmt.Sprintf("/devices/a%d", i))),
			model.Mutation{Op: model.OpEvent, Path: model.Path(fmt.Sprintf("/devices/a%d", i)), Event: &model.Event{Level: model.LevelAlert}},
		); err != nil {
			t.Fatal(err)
		}
	}
	if err := ma.PutRecord(ctx, "k", "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	lastA := ma.LastSeq()

	if err := b.Claim(ctx, 2, "b"); err != nil {
		t.Fatal(err)
	}
	if term, replica, err := a.Fence(ctx); err != nil || term != 2 || replica != "b" {
		t.Fatalf("fence = %d %q, %v; want 2 b", term, replica, err)
	}
	before := rowCounts(t, a)
	_, err := ma.Apply(ctx, put("/devices/late"), model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "k", Key: "late"}})
	wantFenced(t, "A's commit after B's claim", err)
	if !strings.Contains(err.Error(), `term 2 of replica "b"`) {
		t.Errorf("error does not name the writer: %v", err)
	}
	_, err = a.CompactLog(0)
	wantFenced(t, "A's compaction", err)
	_, err = a.PruneEvents(0, time.Now())
	wantFenced(t, "A's event pruning", err)
	if after := rowCounts(t, a); after != before {
		t.Fatalf("a fenced writer wrote: before %s, after %s", before, after)
	}
	if st := a.FenceStatus(); !st.Fenced || st.Term != 1 || st.Replica != "a" || st.Refused != 3 {
		t.Fatalf("A's fence status %+v", st)
	}

	// Stale claims change nothing.
	wantFenced(t, "claim of an older term", a.Claim(ctx, 1, "a"))
	wantFenced(t, "claim of the same term by another replica", a.Claim(ctx, 2, "a"))
	if err := b.Claim(ctx, 2, "b"); err != nil {
		t.Fatalf("claiming again: %v", err)
	}
	if term, replica, _ := b.Fence(ctx); term != 2 || replica != "b" {
		t.Fatalf("fence = %d %q after refused claims", term, replica)
	}

	// B's model, started after its claim, continues A's log.
	mb := startModel(t, b)
	if mb.LastSeq() != lastA {
		t.Fatalf("B starts at %d, A's last entry is %d", mb.LastSeq(), lastA)
	}
	es, err := mb.Apply(ctx, put("/devices/b0"))
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Seq != lastA+1 {
		t.Fatalf("B's first entry has seq %d, want %d", es[0].Seq, lastA+1)
	}
	if _, err := b.CompactLog(1000); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PruneEvents(1000, time.Time{}); err != nil {
		t.Fatal(err)
	}
	checkLog(t, b, es[0].Seq)
	if _, err := b.Context("/devices/late"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("A's refused write is there: %v", err)
	}
}

// checkLog checks that the log holds exactly the entries 1..last.
func checkLog(t *testing.T, s *Postgres, last uint64) []model.Entry {
	t.Helper()
	es, err := s.ReadLog(0, int(last)+10)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(es)) != last {
		t.Fatalf("log has %d entries, want %d", len(es), last)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
	}
	return es
}

// TestPostgresFenceRestart: the fence is in the database, so it outlives
// the stores; an unclaimed fenced store writes nothing; an unfenced store
// refuses a claimed database.
func TestPostgresFenceRestart(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	a, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn, Fenced: true, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, 3, "a"); err != nil {
		t.Fatal(err)
	}
	writeOneAndClose(t, a)

	a = openFenced(t, dsn)
	if st := a.FenceStatus(); !st.Fenced || st.Term != 0 {
		t.Fatalf("status after reopen %+v", st)
	}
	ma := startModel(t, a)
	before := rowCounts(t, a)
	_, err = ma.Apply(ctx, put("/devices/unclaimed"))
	wantFenced(t, "commit before the claim", err)
	if after := rowCounts(t, a); after != before {
		t.Fatalf("an unclaimed store wrote: before %s, after %s", before, after)
	}
	wantFenced(t, "claim of an older term after restart", a.Claim(ctx, 2, "z"))
	if err := a.Claim(ctx, 3, "a"); err != nil {
		t.Fatalf("the holder claiming its term again after restart: %v", err)
	}
	if es, err := ma.Apply(ctx, put("/devices/b")); err != nil || es[0].Seq != 3 {
		t.Fatalf("commit after claiming again: %v, %v", es, err)
	}

	_, err = OpenPostgres(ctx, PostgresOptions{DSN: dsn, Logger: tstest.Logger(t)})
	wantFenced(t, "unfenced open of a claimed database", err)

	// Released by hand (docs/operations.md), a single node may use it.
	if _, err := a.Pool().Exec(ctx, `UPDATE fence SET term = 0, replica = ''`); err != nil {
		t.Fatal(err)
	}
	s, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatalf("unfenced open of a released database: %v", err)
	}
	s.Close()
}

// TestPostgresFenceRace: one replica commits from many callers while the
// other claims, ten times over, alternating. No commit of the deposed
// writer lands after the claim: every entry after the log's end at claim
// time is the new writer's, every acknowledged write is in the log, and
// every refused one wrote nothing.
func TestPostgresFenceRace(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	stores := [2]*Postgres{openFenced(t, dsn), openFenced(t, dsn)}
	names := [2]string{"a", "b"}
	if err := stores[0].Claim(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	const callers = 8
	holder := 0 // the store that claimed last
	for round := range 10 {
		w, next := round%2, (round+1)%2
		m, err := model.New(model.Config{Store: stores[w]})
		if err != nil {
			t.Fatal(err)
		}
		prefix := fmt.Sprintf("/r%d", round)
		var (
			acked    sync.Map // path -> seq
			nAcked   atomic.Int64
			maxAcked atomic.Uint64
			stopped  atomic.Int64
			wg       sync.WaitGroup
			quit     = make(chan struct{})
			once     sync.Once
		)
		// Stops the callers: at the end of the round, or should the test
		// fail before (Cleanup: before the stores close).
		stop := func() { once.Do(func() { close(quit); wg.Wait(); m.Close() }) }
		t.Cleanup(stop)
		for c := range callers {
			wg.Go(func() {
				defer stopped.Add(1)
				for k := 0; ; k++ {
					select {
					case <-quit:
						return
					default:
					}
					p := model.Path(fmt.Sprintf("%s/c%d-%d", prefix, c, k))
					es, err := m.Apply(ctx, put(p))
					if err != nil {
						if !errors.Is(err, ErrFenced) {
							t.Errorf("round %d: %v", round, err)
						}
						return
					}
					acked.Store(p, es[len(es)-1].Seq)
					nAcked.Add(1)
					raise(&maxAcked, es[len(es)-1].Seq)
				}
			})
		}
		tstest.WaitFor(t, 30*time.Second, "writes to be acknowledged", func() bool { return nAcked.Load() >= 50 })
		term := uint64(round + 2)
		if err := stores[next].Claim(ctx, term, names[next]); err != nil {
			t.Fatal(err)
		}
		holder = next
		last, err := stores[next].LastSeq()
		if err != nil {
			t.Fatal(err)
		}
		// Every caller stops at its first refused write.
		tstest.WaitFor(t, 30*time.Second, "every caller of the deposed writer to be refused", func() bool {
			return stopped.Load() == callers
		})
		stop()
		if maxAcked.Load() > last {
			t.Fatalf("round %d: a write of seq %d was acknowledged after the claim, when the log ended at %d", round, maxAcked.Load(), last)
		}
		if later, err := stores[next].ReadLog(last, 10); err != nil || len(later) != 0 {
			t.Fatalf("round %d: entries after the claim: %v, %v", round, later, err)
		}
		var written int64
		if _, err := stores[next].Snapshot(model.Path(prefix), func(c *model.Context) error {
			if c.Path == model.Path(prefix) {
				return nil
			}
			written++
			if _, ok := acked.Load(c.Path); !ok {
				return fmt.Errorf("%s is written but its write failed", c.Path)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if written != nAcked.Load() {
			t.Fatalf("round %d: %d writes acknowledged, %d written", round, nAcked.Load(), written)
		}
		t.Logf("round %d: %d writes of term %d before term %d's claim at seq %d", round, written, term-1, term, last)
	}
	// The new writer continues the log without a gap.
	m := startModel(t, stores[holder])
	es, err := m.Apply(ctx, put("/end"))
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, stores[holder], es[0].Seq)
}

// TestPostgresClaimEndsStuckWriter: a deposed writer whose commit holds
// the fence and never ends (cut off from the database mid-transaction)
// does not hold up a claim past the claim wait: its session is ended,
// its write rolled back.
func TestPostgresClaimEndsStuckWriter(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	a := openFenced(t, dsn)
	if err := a.Claim(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	// The stuck commit: the fence read as a's commits read it, a write,
	// and no end.
	stuck, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close(ctx)
	tx, err := stuck.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{term: 1, replica: "a"}
	if err := a.check(w, tx.QueryRow(ctx, sqlFence)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO records (kind, key, value) VALUES ('k', 'stuck', '')`); err != nil {
		t.Fatal(err)
	}

	b, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn, Fenced: true, ClaimWait: 100 * time.Millisecond, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Claim(cctx, 2, "b"); err != nil {
		t.Fatalf("claim past a stuck writer: %v", err)
	}
	if st := b.FenceStatus(); st.Ended != 1 || st.Term != 2 {
		t.Fatalf("claimer's status %+v, want 1 session ended", st)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("the stuck writer's transaction committed after the claim")
	}
	if _, err := b.Record("k", "stuck"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("the stuck write is there: %v", err)
	}
}
