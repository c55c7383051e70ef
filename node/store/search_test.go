package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
	"github.com/strata-dm/strata/node/store/storetest"
)

// searcher is the search both stores offer.
type searcher interface {
	model.Store
	Search(ctx context.Context, q SearchQuery) (SearchPage, error)
}

// Interface guards.
var (
	_ searcher = (*Badger)(nil)
	_ searcher = (*Postgres)(nil)
)

// searchFunc adapts a store's Search to the conformance suite's types.
func searchFunc(s searcher) storetest.SearchFunc {
	return func(ctx context.Context, q storetest.SearchQuery) (storetest.SearchPage, error) {
		p, err := s.Search(ctx, SearchQuery(q))
		return storetest.SearchPage(p), err
	}
}

func TestBadgerSearch(t *testing.T) {
	storetest.RunSearch(t, func(t *testing.T) (model.Store, storetest.SearchFunc) {
		s := openTestBadger(t, t.TempDir(), nil)
		return s, searchFunc(s)
	})
}

func TestPostgresSearch(t *testing.T) {
	pg := pgtest.Shared(t)
	storetest.RunSearch(t, func(t *testing.T) (model.Store, storetest.SearchFunc) {
		s := openTestPostgres(t, pg.NewDatabase(t))
		return s, searchFunc(s)
	})
}

// TestPostgresSearchReplica: searches go to a replica in rotation that has
// replayed the store's writes, and to the primary when none fits.
func TestPostgresSearchReplica(t *testing.T) {
	f := newReplicaFixture(t, time.Minute)
	ctx := context.Background()
	if _, err := f.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/b", Type: "device",
		Variables: map[string]model.Variable{"os": mustVar(t, `"linux"`)}}); err != nil {
		t.Fatal(err)
	}
	// Once the replica has replayed the write, searches go there.
	tstest.WaitFor(t, 20*time.Second, "the replica to catch up", func() bool {
		_, name := f.store.ReadPool()
		return name != "primary"
	})
	reads := func() uint64 { return f.store.ReplicaStatus()[0].Reads }
	before := reads()
	q := SearchQuery{Prefix: "/devices", Vars: map[string]json.RawMessage{"os": json.RawMessage(`"linux"`)}}
	page, err := f.store.Search(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	// Read-your-writes: the write above is in the answer, wherever it
	// came from.
	if len(page.Contexts) != 1 || page.Contexts[0].Path != "/devices/b" {
		t.Fatalf("search = %+v", page.Contexts)
	}
	if reads() != before+1 {
		t.Fatalf("replica reads %d -> %d: the search did not go to the replica", before, reads())
	}
	plan, served, err := f.store.ExplainSearch(ctx, q, true)
	if err != nil || served == "primary" || plan == "" {
		t.Fatalf("explain on %s: %v\n%s", served, err, plan)
	}

	// Without the replica, the primary answers.
	f.replica.Shutdown()
	page, err = f.store.Search(ctx, q)
	if err != nil || len(page.Contexts) != 1 {
		t.Fatalf("search with the replica down: %+v, %v", page.Contexts, err)
	}
}

func mustVar(t *testing.T, js string) model.Variable {
	t.Helper()
	v, err := model.NewVariable(json.RawMessage(js), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPostgresSearchBackfill: rows written before the search columns
// existed get them at the next open.
func TestPostgresSearchBackfill(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	s := openTestPostgres(t, dsn)
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range backfillBatch + 5 {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: model.MustPath(fmt.Sprintf("/devices/d%04d", i)),
			Type: "device", Variables: map[string]model.Variable{"n": mustVar(t, fmt.Sprint(i%3))}}); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	// Rows from before migration 0002 (neither column), and from before
	// 0003 (vars only).
	if _, err := s.Pool().Exec(ctx, `UPDATE contexts SET props = NULL,
		vars = CASE WHEN path < '/devices/d0500' THEN NULL ELSE vars END`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTestPostgres(t, dsn)
	defer s.Close()
	var missing int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM contexts WHERE vars IS NULL OR props IS NULL`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("rows without search columns after open: %d, %v", missing, err)
	}
	page, err := s.Search(ctx, SearchQuery{Vars: map[string]json.RawMessage{"n": json.RawMessage("2")}, Limit: 1000})
	if err != nil || len(page.Contexts) != (backfillBatch+5)/3 || page.Next != "" {
		t.Fatalf("search after backfill: %d contexts, next %q, %v", len(page.Contexts), page.Next, err)
	}
}

// TestPostgresSearchUnsafeValues: a variable value jsonb cannot hold does
// not fail the commit; it is left out of the search column only.
func TestPostgresSearchUnsafeValues(t *testing.T) {
	s := openTestPostgres(t, pgtest.Shared(t).NewDatabase(t))
	defer s.Close()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/x", Type: "device",
		Variables: map[string]model.Variable{
			"nul": mustVar(t, `{"k":"a\u0000b"}`), "os": mustVar(t, `"linux"`),
		}}); err != nil {
		t.Fatal(err)
	}
	// A number out of float64's range is refused now (model.CheckValue),
	// but an earlier version stored it: written to the store directly.
	c, err := s.Context("/devices/x")
	if err != nil {
		t.Fatal(err)
	}
	c.Variables["huge"] = model.Variable{Value: json.RawMessage("1e999999"), Type: model.TypeNumber}
	last, err := s.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	c.Version = last + 1
	if err := s.Commit(&model.Batch{
		Entries:  []model.Entry{{Seq: last + 1, Time: time.Now(), Mutation: model.Mutation{Op: model.OpPut, Path: "/devices/x", Variables: map[string]model.Variable{"huge": c.Variables["huge"]}}}},
		Contexts: []model.ContextWrite{{Context: c, Index: true}},
	}); err != nil {
		t.Fatal(err)
	}
	page, err := s.Search(ctx, SearchQuery{Vars: map[string]json.RawMessage{"os": json.RawMessage(`"linux"`)}})
	if err != nil || len(page.Contexts) != 1 || len(page.Contexts[0].Variables) != 3 {
		t.Fatalf("search: %+v, %v", page.Contexts, err)
	}
}

func TestNumericSafe(t *testing.T) {
	for n, want := range map[string]bool{
		"0": true, "-1.5e10": true, "1e15999": true, "1e16001": false, "1e-16001": false,
		"12345678901234567890": true, "1e99999999999999999999": false,
	} {
		if got := numericSafe(n); got != want {
			t.Errorf("numericSafe(%s) = %v", n, got)
		}
	}
}

// TestCopyToPostgresSearch: contexts copied from Badger are found by the
// same searches as on Badger, with nothing left for the backfill.
func TestCopyToPostgresSearch(t *testing.T) {
	src := openTestBadger(t, t.TempDir(), nil)
	defer src.Close()
	m := newModel(t, src)
	ctx := context.Background()
	for i := range 6 {
		os := []string{`"linux"`, `"windows"`}[i%2]
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: model.MustPath(fmt.Sprintf("/devices/d%d", i)),
			Type: "device", Tenant: []string{"acme", "globex", ""}[i%3], Labels: map[string]string{"site": fmt.Sprint("s", i%2)},
			Variables: map[string]model.Variable{"os": mustVar(t, os), "cpus": mustVar(t, "4")}}); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()

	dst := openTestPostgres(t, pgtest.Shared(t).NewDatabase(t))
	defer dst.Close()
	if _, err := CopyToPostgres(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	var missing int
	if err := dst.Pool().QueryRow(ctx, `SELECT count(*) FROM contexts WHERE props IS NULL OR vars IS NULL`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("copied rows without search columns: %d, %v", missing, err)
	}
	for _, q := range []SearchQuery{
		{Vars: map[string]json.RawMessage{"os": json.RawMessage(`"linux"`), "cpus": json.RawMessage("4.0")}},
		{Labels: map[string]string{"site": "s1"}, Tenants: []string{"globex"}},
		{Prefix: "/devices", Tenants: []string{""}},
		{Type: "device", Tenants: []string{"acme", ""}},
	} {
		want, err := src.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dst.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(want.Contexts) == 0 || len(got.Contexts) != len(want.Contexts) {
			t.Fatalf("search %+v: postgres found %d, badger %d", q, len(got.Contexts), len(want.Contexts))
		}
		for i := range want.Contexts {
			if got.Contexts[i].Path != want.Contexts[i].Path {
				t.Fatalf("search %+v: postgres found %s, badger %s", q, got.Contexts[i].Path, want.Contexts[i].Path)
			}
		}
	}
}
