package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/storetest"
)

// The scan, which the index is checked against, passes the same suite.
func TestBadgerScanSearch(t *testing.T) {
	storetest.RunSearch(t, func(t *testing.T) (model.Store, storetest.SearchFunc) {
		s := openTestBadger(t, t.TempDir(), nil)
		return s, func(ctx context.Context, q storetest.SearchQuery) (storetest.SearchPage, error) {
			p, err := s.ScanSearch(ctx, SearchQuery(q))
			return storetest.SearchPage(p), err
		}
	})
}

func TestCanonJSON(t *testing.T) {
	same := [][]string{
		{`4`, `4.0`, `0.4e1`, `40e-1`, `4.000E+0`, ` 4 `},
		{`0`, `-0`, `0.0`, `0e10`, `-0.0e-3`},
		{`-12.5`, `-1.25e1`, `-125e-1`},
		{`"A"`, `"\u0041"`},
		{`{"a":1,"b":[1,"x"]}`, `{"b":[1.0,"x"],"a":10e-1}`},
		{`null`}, {`true`}, {`false`}, {`""`}, {`[]`}, {`{}`},
		{`"4"`}, {`[4]`}, {`{"a":4}`}, {`1e100000000000000000000`},
		{`1e-5`, `0.00001`},
	}
	for i, group := range same {
		want, ok := canonJSON([]byte(group[0]))
		if !ok {
			t.Fatalf("canonJSON(%s) failed", group[0])
		}
		for _, v := range group[1:] {
			if got, _ := canonJSON([]byte(v)); !bytes.Equal(got, want) {
				t.Errorf("canonJSON(%s) = %q, want %q as for %s", v, got, want, group[0])
			}
		}
		for j, other := range same {
			if j == i {
				continue
			}
			if got, _ := canonJSON([]byte(other[0])); bytes.Equal(got, want) {
				t.Errorf("canonJSON(%s) = canonJSON(%s) = %q", other[0], group[0], got)
			}
		}
	}
	for _, bad := range []string{``, `nul`, `{`, `"x`, `1.`, `--1`} {
		if _, ok := canonJSON([]byte(bad)); ok {
			t.Errorf("canonJSON(%q) accepted", bad)
		}
	}
}

// FuzzCanonJSON: two values have the same canonical form exactly when
// the search's JSON equality (the scan's) says they are equal. Variable
// values come from devices.
func FuzzCanonJSON(f *testing.F) {
	for _, p := range [][2]string{{`4`, `4.0`}, {`-0`, `0`}, {`{"a":[1,2]}`, `{"a":[1,2.0]}`}, {`"\u00e9"`, `"é"`},
		{`1e5`, `100000`}, {`[1,{"x":null}]`, `[1,{"x":null}]`}, {`"a"`, `"b"`}, {`0.1`, `1e-1`}} {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ca, oka := canonJSON(a)
		cb, okb := canonJSON(b)
		va, erra := model.DecodeValue(a)
		vb, errb := model.DecodeValue(b)
		if oka != (erra == nil && json.Valid(a)) || okb != (errb == nil && json.Valid(b)) {
			t.Fatalf("canonJSON accepts %q: %v, %q: %v; json.Valid: %v, %v", a, oka, b, okb, json.Valid(a), json.Valid(b))
		}
		if !oka || !okb || !jsonbSafe(a) || !jsonbSafe(b) {
			return // big.Rat on a huge exponent would run out of time
		}
		if eq := model.EqualDecoded(va, vb); eq != bytes.Equal(ca, cb) {
			t.Fatalf("%q vs %q: EqualDecoded %v, canonical forms %q, %q", a, b, eq, ca, cb)
		}
	})
}

// searchFleet applies random mutations: contexts under several subtrees
// (with a sibling sharing a prefix), types, tenants, labels and variable
// values of every JSON kind, some written the same in other ways (4 and
// 4.0), some too long for a plain term, updates and deletions.
type searchFleet struct {
	r     *rand.Rand
	m     *model.Model
	paths []model.Path
}

var (
	fleetTypes   = []string{"device", "gateway", "sensor"}
	fleetTenants = []string{"acme", "globex", ""}
	fleetSites   = []string{"north", "south", "east", strings.Repeat("far-", 63)}
	fleetValues  = []string{`"linux"`, `"windows"`, `4`, `4.0`, `8`, `0.4e1`, `true`, `false`, `null`, `"4"`,
		`{"a":1,"b":[1,2]}`, `{"b":[1,2.0],"a":1}`, `[1,"x"]`, `"\u0041"`, `"A"`,
		`"` + strings.Repeat("long-", 80) + `"`, `"` + strings.Repeat("long-", 80) + `x"`}
	fleetPrefixes = []model.Path{"/", "/devices", "/devices/g1", "/devices/g1/d1", "/dev", "/devices-old", "/none"}
)

func newSearchFleet(m *model.Model, seed uint64) *searchFleet {
	return &searchFleet{r: rand.New(rand.NewPCG(seed, 1)), m: m}
}

func (f *searchFleet) pick(xs []string) string { return xs[f.r.IntN(len(xs))] }

func (f *searchFleet) randomPath() model.Path {
	switch f.r.IntN(6) {
	case 0:
		return model.Path(fmt.Sprintf("/devices-old/d%d", f.r.IntN(5)))
	case 1:
		return model.Path(fmt.Sprintf("/devices/g1/d%d", f.r.IntN(8)))
	case 2:
		return model.Path(fmt.Sprintf("/devices/g1/d1/s%d", f.r.IntN(4)))
	default:
		return model.Path(fmt.Sprintf("/devices/d%02d", f.r.IntN(40)))
	}
}

// step applies n random mutations.
func (f *searchFleet) step(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	for range n {
		p := f.randomPath()
		if f.r.IntN(10) == 0 {
			_, err := f.m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: p})
			if err != nil && !errors.Is(err, model.ErrNotFound) && !errors.Is(err, model.ErrConflict) {
				t.Fatalf("delete %s: %v", p, err)
			}
			continue
		}
		mut := model.Mutation{Op: model.OpPut, Path: p, Type: f.pick(fleetTypes), Tenant: f.pick(fleetTenants),
			Labels: map[string]string{"site": f.pick(fleetSites)}, Variables: map[string]model.Variable{}}
		if f.r.IntN(3) == 0 {
			mut.Labels["rack"] = fmt.Sprint(f.r.IntN(2))
		}
		for _, name := range []string{"os", "cpus", "tags"} {
			if f.r.IntN(4) != 0 {
				mut.Variables[name] = model.Variable{Value: json.RawMessage(f.pick(fleetValues))}
			}
		}
		if _, err := f.m.Apply(ctx, mut); err != nil && !errors.Is(err, model.ErrConflict) {
			t.Fatalf("put %s: %v", p, err)
		}
	}
}

// randomQuery is a query of the fleet's vocabulary.
func (f *searchFleet) randomQuery() SearchQuery {
	q := SearchQuery{Prefix: fleetPrefixes[f.r.IntN(len(fleetPrefixes))], Limit: 1 + f.r.IntN(6)}
	if f.r.IntN(2) == 0 {
		q.Type = f.pick(fleetTypes)
	}
	switch f.r.IntN(4) {
	case 0:
		q.Tenants = []string{f.pick(fleetTenants)}
	case 1:
		q.Tenants = []string{"acme", ""}
	case 2:
		if f.r.IntN(8) == 0 {
			q.Tenants = []string{}
		}
	}
	if f.r.IntN(2) == 0 {
		q.Labels = map[string]string{"site": f.pick(fleetSites)}
	}
	if f.r.IntN(5) == 0 {
		q.Labels = map[string]string{"rack": "1"}
	}
	if f.r.IntN(2) == 0 {
		q.Vars = map[string]json.RawMessage{}
		for _, name := range []string{"os", "cpus", "tags"} {
			if f.r.IntN(2) == 0 {
				q.Vars[name] = json.RawMessage(f.pick(fleetValues))
			}
		}
	}
	return q
}

// compareSearches runs n random queries page by page through the index
// and the scan and fails on any difference in contexts or cursor.
func compareSearches(t *testing.T, s *Badger, f *searchFleet, n int) {
	t.Helper()
	ctx := context.Background()
	for range n {
		q := f.randomQuery()
		total := 0
		for pages := 0; ; pages++ {
			got, err := s.Search(ctx, q)
			if err != nil {
				t.Fatalf("search %+v: %v", q, err)
			}
			want, err := s.ScanSearch(ctx, q)
			if err != nil {
				t.Fatalf("scan %+v: %v", q, err)
			}
			if g, w := pathsOf(got), pathsOf(want); !slices.Equal(g, w) || got.Next != want.Next {
				t.Fatalf("query %+v page %d:\nindex %v next %q\n scan %v next %q", q, pages, g, got.Next, w, want.Next)
			}
			for i := range got.Contexts {
				if got.Contexts[i].Version != want.Contexts[i].Version {
					t.Fatalf("query %+v: %s version %d, scan has %d", q, got.Contexts[i].Path, got.Contexts[i].Version, want.Contexts[i].Version)
				}
			}
			total += len(want.Contexts)
			if got.Next == "" {
				break
			}
			q.After = got.Next
		}
		// The count is the pages' total, and stops at a limit below it.
		n, capped, err := s.CountSearch(ctx, q, 1<<30)
		if err != nil || n != total || capped {
			t.Fatalf("count %+v: %d (capped %v, %v), the pages hold %d", q, n, capped, err, total)
		}
		if total > 1 {
			if n, capped, err := s.CountSearch(ctx, q, total-1); err != nil || n != total-1 || !capped {
				t.Fatalf("count %+v limited to %d: %d (capped %v, %v)", q, total-1, n, capped, err)
			}
		}
	}
}

func pathsOf(p SearchPage) []model.Path {
	out := []model.Path{}
	for _, c := range p.Contexts {
		out = append(out, c.Path)
	}
	return out
}

// checkSearchIndex fails unless the postings are exactly those of the c
// keys, and the counts exactly theirs.
func checkSearchIndex(t *testing.T, s *Badger) {
	t.Helper()
	want := map[string]string{} // posting key → signature
	got := map[string]string{}
	wantCounts := map[string]uint64{}
	gotCounts := map[string]uint64{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pContext}, PrefetchValues: true})
		for it.Rewind(); it.Valid(); it.Next() {
			var c model.Context
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &c) }); err != nil {
				it.Close()
				return err
			}
			terms := contextTerms(&c)
			for _, tm := range terms {
				want[string(postingKey(tm, c.Path))] = string(termSignature(terms))
				wantCounts[string(countKey(tm))]++
			}
			wantCounts[string(countAll)]++
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pSearchIndex}})
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			got[string(it.Item().Key())] = string(v)
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pSearchCount}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			n, err := readCount(txn, k)
			if err != nil {
				return err
			}
			gotCounts[string(k)] = n
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, sig := range want {
		switch g, ok := got[k]; {
		case !ok:
			t.Errorf("posting missing: %q", k)
		case g != sig:
			t.Errorf("posting %q: signature %x, want %x", k, g, sig)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("stale posting: %q", k)
		}
	}
	for k, n := range wantCounts {
		if gotCounts[k] != n {
			t.Errorf("count %q: %d, want %d", k, gotCounts[k], n)
		}
	}
	for k, n := range gotCounts {
		if _, ok := wantCounts[k]; !ok {
			t.Errorf("stale count %q: %d", k, n)
		}
	}
}

// TestBadgerSearchIndexMatchesScan: the same random queries, paged to the
// end, find the same contexts and cursors through the index and the scan,
// with the changes in the overlay, checkpointed, partly both, after a
// restart, after a crash that lost Badger's unsynced writes, and after
// the index is rebuilt at open.
func TestBadgerSearchIndexMatchesScan(t *testing.T) {
	dir := t.TempDir()
	s, m := openWithModel(t, dir, nil)
	f := newSearchFleet(m, 1)
	f.step(t, 300)
	compareSearches(t, s, f, 150) // everything in the overlay

	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkSearchIndex(t, s)
	compareSearches(t, s, f, 150) // everything checkpointed

	f.step(t, 150)
	compareSearches(t, s, f, 150) // overlay over checkpointed contexts

	m.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, m = openWithModel(t, dir, nil)
	f.m = m
	checkSearchIndex(t, s)
	compareSearches(t, s, f, 100)

	// A machine crash: Badger's files go back to their last sync
	// (commits, new contexts' postings and a checkpoint's lost); the
	// write-ahead log brings everything back.
	if err := s.trimWAL(true); err != nil {
		t.Fatal(err)
	}
	synced := t.TempDir()
	copyBadgerFiles(t, dir, synced)
	f.step(t, 150)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	f.step(t, 50)
	m.Close()
	crash(t, s)
	copyBadgerFiles(t, synced, dir)
	if len(walFiles(t, dir)) == 0 {
		t.Fatal("nothing in the write-ahead log to replay")
	}
	s, m = openWithModel(t, dir, nil)
	f.m = m
	checkSearchIndex(t, s)
	compareSearches(t, s, f, 150)

	// No version marker (a store written before the index, or a build
	// interrupted): the index is built at open.
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(keySearchIndex); err != nil {
			return err
		}
		// A posting no context has, and one missing; a count that is
		// wrong, and one no term has.
		if err := txn.Set(postingKey(term(termType, []byte("ghost")), "/devices/ghost"), nil); err != nil {
			return err
		}
		if err := txn.Set(countKey(term(termType, []byte("device"))), seqBytes(1)); err != nil {
			return err
		}
		if err := txn.Set(countKey(term(termType, []byte("ghost"))), seqBytes(7)); err != nil {
			return err
		}
		return txn.Delete(postingKey(term(termType, []byte("device")), f.anyOfType(t, s, "device")))
	}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, m = openWithModel(t, dir, nil)
	defer func() {
		m.Close()
		s.Close()
	}()
	f.m = m
	checkSearchIndex(t, s)
	compareSearches(t, s, f, 150)
}

// copyBadgerFiles replaces Badger's files in dst (everything but the
// write-ahead log) with those in src.
func copyBadgerFiles(t *testing.T, src, dst string) {
	t.Helper()
	old, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range old {
		if e.Name() != "wal" {
			if err := os.RemoveAll(filepath.Join(dst, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range files {
		if e.Name() == "wal" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// anyOfType returns the path of a checkpointed context of type typ.
func (f *searchFleet) anyOfType(t *testing.T, s *Badger, typ string) model.Path {
	t.Helper()
	page, err := s.ScanSearch(context.Background(), SearchQuery{Type: typ, Limit: 1})
	if err != nil || len(page.Contexts) == 0 {
		t.Fatalf("no context of type %s: %v", typ, err)
	}
	return page.Contexts[0].Path
}

// TestBadgerSearchIndexTenants: a context that moves to another tenant
// leaves the old tenant's postings, in the overlay as after a checkpoint,
// and a search limited to one tenant never returns another's context
// however the filters are combined.
func TestBadgerSearchIndexTenants(t *testing.T) {
	s, m := openWithModel(t, t.TempDir(), nil)
	defer func() {
		m.Close()
		s.Close()
	}()
	ctx := context.Background()
	put := func(p model.Path, tenant string) {
		t.Helper()
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device", Tenant: tenant,
			Labels: map[string]string{"site": "north"}, Variables: map[string]model.Variable{"os": {Value: json.RawMessage(`"linux"`)}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		put(model.Path(fmt.Sprintf("/devices/d%02d", i)), []string{"acme", "globex"}[i%2])
	}
	check := func(when string) {
		t.Helper()
		for _, tenant := range []string{"acme", "globex"} {
			for _, q := range []SearchQuery{
				{Prefix: "/devices", Tenants: []string{tenant}},
				{Prefix: "/devices", Tenants: []string{tenant, ""}, Type: "device"},
				{Prefix: "/", Tenants: []string{tenant}, Labels: map[string]string{"site": "north"}},
				{Prefix: "/devices", Tenants: []string{tenant}, Vars: map[string]json.RawMessage{"os": json.RawMessage(`"linux"`)}, Limit: 3},
			} {
				for {
					page, err := s.Search(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range page.Contexts {
						if !slices.Contains(q.Tenants, c.Tenant) {
							t.Fatalf("%s: search for %v returned %s of tenant %q", when, q.Tenants, c.Path, c.Tenant)
						}
					}
					if page.Next == "" {
						break
					}
					q.After = page.Next
				}
			}
		}
	}
	check("new contexts")
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	// Every acme device moves to globex and back: the overlay, then the
	// postings, must follow.
	for i := 0; i < 20; i += 2 {
		put(model.Path(fmt.Sprintf("/devices/d%02d", i)), "globex")
	}
	check("moved, in the overlay")
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkSearchIndex(t, s)
	check("moved, checkpointed")
	page, err := s.Search(ctx, SearchQuery{Prefix: "/devices", Tenants: []string{"acme"}})
	if err != nil || len(page.Contexts) != 0 {
		t.Fatalf("acme still finds %v (%v)", pathsOf(page), err)
	}
}

// TestTermSignature holds a signature to every term it was made of, and
// to dropping most of the terms it was not.
func TestTermSignature(t *testing.T) {
	var terms [][]byte
	for i := range 40 {
		terms = append(terms, term(termVar, []byte("v"), []byte(strconv.Itoa(i))))
	}
	for n := 0; n <= len(terms); n += 7 {
		sig := termSignature(terms[:n])
		if len(sig)*8 < max(sigMinBits, n*sigBitsPerTerm) || len(sig)%8 != 0 {
			t.Fatalf("%d terms: signature of %d bytes", n, len(sig))
		}
		for _, tm := range terms[:n] {
			if !sigHolds(sig, tm) {
				t.Fatalf("%d terms: signature lacks %q", n, tm)
			}
		}
		passed := 0
		for i := range 1000 {
			if sigHolds(sig, term(termVar, []byte("w"), []byte(strconv.Itoa(i)))) {
				passed++
			}
		}
		if passed > 150 { // about 3 % expected
			t.Errorf("%d terms: %d of 1000 absent terms pass", n, passed)
		}
	}
	if !sigHolds(nil, terms[0]) {
		t.Error("an empty signature must hold anything")
	}
}
