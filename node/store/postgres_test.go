package store

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
	"github.com/strata-dm/strata/node/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openTestPostgres(t *testing.T, dsn string) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: dsn, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPostgresConformance(t *testing.T) {
	pg := pgtest.Shared(t)
	storetest.Run(t, func(t *testing.T) model.Store { return openTestPostgres(t, pg.NewDatabase(t)) })
}

func TestPostgresReopen(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	s := openTestPostgres(t, dsn)
	writeOneAndClose(t, s)
	if _, err := s.LastSeq(); err == nil {
		t.Fatal("read from a closed store")
	}

	s = openTestPostgres(t, dsn) // migrations already applied: a no-op
	defer s.Close()
	last, err := s.LastSeq()
	if err != nil || last != 2 {
		t.Fatalf("last = %d, %v", last, err)
	}
	if _, err := s.Context("/devices/a"); err != nil {
		t.Fatal(err)
	}
	var versions int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if ms, _ := loadMigrations(); versions != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d", versions, len(ms))
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/b", Type: "device"})
	if err != nil || es[0].Seq != 3 {
		t.Fatalf("sequence after reopen: %v, %v", es, err)
	}
}

// TestPostgresConcurrentOpen: several processes (replicas of a tier) may
// start at once on a fresh database; the migration lock lets all succeed.
func TestPostgresConcurrentOpen(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	const n = 4
	stores := make([]*Postgres, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = OpenPostgres(context.Background(), PostgresOptions{DSN: dsn, Logger: tstest.Logger(t)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var versions int
	if err := stores[0].Pool().QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if ms, _ := loadMigrations(); versions != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d", versions, len(ms))
	}
}

func TestPostgresOptions(t *testing.T) {
	if _, err := OpenPostgres(context.Background(), PostgresOptions{}); err == nil {
		t.Fatal("opened without a dsn")
	}
}

// TestCommitEdges holds Postgres to Badger's answers on the batch shapes
// the conformance suite does not build through the model: a key written
// twice in one batch, an empty record value, and Since falling inside one
// microsecond.
func TestCommitEdges(t *testing.T) {
	stores := map[string]func(t *testing.T) model.Store{
		"badger":   func(t *testing.T) model.Store { return openTestBadger(t, t.TempDir(), nil) },
		"postgres": func(t *testing.T) model.Store { return openTestPostgres(t, pgtest.Shared(t).NewDatabase(t)) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			base := time.Date(2026, 1, 2, 3, 4, 5, 100, time.UTC) // 100 ns past the microsecond
			c := &model.Context{Path: "/d", Type: "device", Version: 1}
			b := &model.Batch{
				Entries:  []model.Entry{{Seq: 1}, {Seq: 2}, {Seq: 3}},
				Contexts: []model.ContextWrite{{Context: c, Index: true}},
				Events: []model.Event{
					{Seq: 2, Path: "/d", Level: model.LevelInfo, Time: base},
					{Seq: 3, Path: "/d", Level: model.LevelInfo, Time: base.Add(200)},
				},
				Records: []model.Record{{Kind: "k", Key: "a", Value: []byte("2")}, {Kind: "k", Key: "empty"}},
			}
			if err := s.Commit(b); err != nil {
				t.Fatal(err)
			}
			if v, err := s.Record("k", "a"); err != nil || string(v) != "2" {
				t.Fatalf("record = %q, %v", v, err)
			}
			if v, err := s.Record("k", "empty"); err != nil || len(v) != 0 {
				t.Fatalf("empty record = %q, %v", v, err)
			}
			evs, err := s.Events("/d", model.EventQuery{Since: base.Add(150)})
			if err != nil || len(evs) != 1 || evs[0].Seq != 3 {
				t.Fatalf("events since = %+v, %v", evs, err)
			}
			evs, err = s.Events("/d", model.EventQuery{Since: base})
			if err != nil || len(evs) != 2 {
				t.Fatalf("events since = %+v, %v", evs, err)
			}
		})
	}
}

// TestPostgresColumns: the columns beside doc, which later inventory
// queries read without decoding, agree with the context.
func TestPostgresColumns(t *testing.T) {
	s := openTestPostgres(t, pgtest.Shared(t).NewDatabase(t))
	defer s.Close()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/sites/north/pump-1",
		Type: "device", Tenant: "acme", Labels: map[string]string{"site": "north"}}); err != nil {
		t.Fatal(err)
	}
	var parent, name, typ, tenant string
	var version int64
	err = s.Pool().QueryRow(context.Background(), `SELECT parent, name, type, tenant, version FROM contexts
		WHERE labels @> '{"site": "north"}'`).Scan(&parent, &name, &typ, &tenant, &version)
	if err != nil {
		t.Fatal(err)
	}
	if parent != "/sites/north" || name != "pump-1" || typ != "device" || tenant != "acme" || version != 3 {
		t.Fatalf("columns = %q %q %q %q %d", parent, name, typ, tenant, version)
	}
}
