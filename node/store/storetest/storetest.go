// Package storetest is the conformance suite every model.Store must pass.
// Each store's tests call Run with a constructor for an empty store.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// Run runs the suite; open returns a new empty store (closed by the suite).
func Run(t *testing.T, open func(t *testing.T) model.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, m *model.Model, s model.Store)
	}{
		{"PutGet", testPutGet},
		{"Ancestors", testAncestors},
		{"Children", testChildren},
		{"Reindex", testReindex},
		{"Delete", testDelete},
		{"Events", testEvents},
		{"Feed", testFeed},
		{"FeedScanBound", testFeedScanBound},
		{"Records", testRecords},
		{"Log", testLog},
		{"Snapshot", testSnapshot},
		{"AtomicProposal", testAtomicProposal},
		{"Concurrent", testConcurrent},
		{"Actor", testActor},
		{"BatchOrder", testBatchOrder},
		{"Replace", testReplace},
		{"UpdateRecord", testUpdateRecord},
	}
	t.Run("CommitFailure", func(t *testing.T) { testCommitFailure(t, open(t)) })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			m, err := model.New(model.Config{Store: s})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				m.Close()
				s.Close()
			})
			tc.fn(t, m, s)
		})
	}
}

func v(t *testing.T, js string) model.Variable {
	t.Helper()
	x, err := model.NewVariable(json.RawMessage(js), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func put(t *testing.T, m *model.Model, path, typ, tenant string, vars map[string]string) []model.Entry {
	t.Helper()
	mut := model.Mutation{Op: model.OpPut, Path: model.MustPath(path), Type: typ, Tenant: tenant}
	if vars != nil {
		mut.Variables = map[string]model.Variable{}
		for k, js := range vars {
			mut.Variables[k] = v(t, js)
		}
	}
	es, err := m.Apply(context.Background(), mut)
	if err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	return es
}

func testPutGet(t *testing.T, m *model.Model, s model.Store) {
	put(t, m, "/devices/pump-12", "device", "acme", map[string]string{"temp": "21.5", "state": `"on"`})
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/pump-12",
		Labels: map[string]string{"site": "north"}, Variables: map[string]model.Variable{"temp": v(t, "22")}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Context("/devices/pump-12")
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != "device" || c.Tenant != "acme" || c.Labels["site"] != "north" {
		t.Fatalf("context = %+v", c)
	}
	if got := string(c.Variables["temp"].Value); got != "22" {
		t.Fatalf("temp = %s", got)
	}
	if got := string(c.Variables["state"].Value); got != `"on"` {
		t.Fatalf("state = %s", got)
	}
	if c.Variables["temp"].Type != model.TypeNumber || c.Variables["temp"].Time.IsZero() {
		t.Fatalf("temp variable = %+v", c.Variables["temp"])
	}
	if c.Version != es[0].Seq {
		t.Fatalf("version %d, want %d", c.Version, es[0].Seq)
	}
	if _, err := s.Context("/devices/nope"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("missing context: err = %v", err)
	}
}

func testAncestors(t *testing.T, m *model.Model, s model.Store) {
	es := put(t, m, "/a/b/c", "device", "t1", nil)
	if len(es) != 3 {
		t.Fatalf("entries = %d, want 3 (two folders and the context)", len(es))
	}
	for i, p := range []model.Path{"/a", "/a/b"} {
		c, err := s.Context(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.Type != model.FolderType || c.Tenant != "" || c.Version != es[i].Seq {
			t.Fatalf("%s = %+v", p, c)
		}
	}
}

func testChildren(t *testing.T, m *model.Model, s model.Store) {
	for i := range 25 {
		put(t, m, fmt.Sprintf("/fleet/d%02d", i), "device", "t1", nil)
	}
	put(t, m, "/fleet-other/x", "device", "t1", nil)
	put(t, m, "/fleet/d00/sub", "sensor", "t1", nil)
	var all []model.Child
	after := ""
	for {
		kids, err := s.Children("/fleet", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, kids...)
		if len(kids) < 10 {
			break
		}
		after = kids[len(kids)-1].Name
	}
	if len(all) != 25 {
		t.Fatalf("children = %d, want 25", len(all))
	}
	for i, c := range all {
		if c.Name != fmt.Sprintf("d%02d", i) || c.Type != "device" || c.Tenant != "t1" {
			t.Fatalf("child %d = %+v", i, c)
		}
	}
	root, err := s.Children(model.Root, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(root) != 2 || root[0].Name != "fleet" || root[1].Name != "fleet-other" {
		t.Fatalf("root children = %+v", root)
	}
}

func testReindex(t *testing.T, m *model.Model, s model.Store) {
	put(t, m, "/x/y", "device", "t1", nil)
	put(t, m, "/x/y", "gateway", "t2", nil)
	kids, err := s.Children("/x", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) != 1 || kids[0].Type != "gateway" || kids[0].Tenant != "t2" {
		t.Fatalf("children = %+v", kids)
	}
}

func testDelete(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	put(t, m, "/d/leaf", "device", "t1", nil)
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/d/leaf", Event: &model.Event{Level: model.LevelInfo}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/d"}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("delete with children: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/d/leaf"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Context("/d/leaf"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if evs, _ := s.Events("/d/leaf", model.EventQuery{}); len(evs) != 0 {
		t.Fatalf("events survive delete: %v", evs)
	}
	if kids, _ := s.Children("/d", "", 10); len(kids) != 0 {
		t.Fatalf("index survives delete: %v", kids)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/d"}); err != nil {
		t.Fatalf("delete emptied folder: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/d"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	// Create and delete within one proposal leaves nothing behind.
	if _, err := m.Apply(ctx,
		model.Mutation{Op: model.OpPut, Path: "/e/tmp", Type: "device"},
		model.Mutation{Op: model.OpDelete, Path: "/e/tmp"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Context("/e/tmp"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("transient context stored: %v", err)
	}
}

func testEvents(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	put(t, m, "/dev/a", "device", "t1", nil)
	put(t, m, "/dev/a2", "device", "t1", nil)
	levels := []model.Level{model.LevelInfo, model.LevelWarning, model.LevelAlert}
	for i := range 30 {
		ev := &model.Event{Level: levels[i%3], Name: fmt.Sprintf("e%d", i), Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/dev/a", Event: ev}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/dev/a2", Event: &model.Event{Level: model.LevelInfo}}); err != nil {
		t.Fatal(err)
	}
	page, err := s.Events("/dev/a", model.EventQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 10 || page[0].Name != "e29" || page[9].Name != "e20" || page[0].Tenant != "t1" {
		t.Fatalf("first page = %v", names(page))
	}
	next, err := s.Events("/dev/a", model.EventQuery{Limit: 10, Before: page[9].Seq})
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 10 || next[0].Name != "e19" {
		t.Fatalf("second page = %v", names(next))
	}
	alerts, err := s.Events("/dev/a", model.EventQuery{Level: model.LevelAlert, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 10 {
		t.Fatalf("alerts = %d", len(alerts))
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/dev/none", Event: &model.Event{Level: model.LevelInfo}}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("event on missing context: %v", err)
	}
	if p, ok := s.(interface {
		PruneEvents(int, time.Time) (int, error)
	}); ok {
		n, err := p.PruneEvents(5, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if n != 25 {
			t.Fatalf("pruned %d, want 25", n)
		}
		left, _ := s.Events("/dev/a", model.EventQuery{Limit: 100})
		if len(left) != 5 || left[0].Name != "e29" {
			t.Fatalf("after prune = %v", names(left))
		}
		n, err = p.PruneEvents(100, time.Now().Add(time.Hour))
		if err != nil || n != 6 {
			t.Fatalf("prune by age: %d, %v", n, err)
		}
	}
}

func names(evs []model.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name)
	}
	return out
}

func testRecords(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	for _, k := range []string{"b", "a", "c"} {
		if err := m.PutRecord(ctx, "user", k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PutRecord(ctx, "users", "z", []byte("other kind")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Record("user", "a")
	if err != nil || string(got) != "va" {
		t.Fatalf("record = %q, %v", got, err)
	}
	var keys []string
	if err := s.Records("user", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[a b c]" {
		t.Fatalf("keys = %v", keys)
	}
	if err := m.DeleteRecord(ctx, "user", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record("user", "b"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("deleted record: %v", err)
	}
}

func testLog(t *testing.T, m *model.Model, s model.Store) {
	for i := range 20 {
		put(t, m, fmt.Sprintf("/l/%d", i), "device", "", nil)
	}
	last, err := s.LastSeq()
	if err != nil || last != 21 || m.LastSeq() != 21 {
		t.Fatalf("last = %d (model %d), %v", last, m.LastSeq(), err)
	}
	es, err := s.ReadLog(5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 10 || es[0].Seq != 6 || es[9].Seq != 15 {
		t.Fatalf("log page = %d entries from %d", len(es), es[0].Seq)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq != es[i-1].Seq+1 {
			t.Fatal("log not contiguous")
		}
	}
	got, err := m.ReadLog(context.Background(), 0, 100)
	if err != nil || len(got) != 21 {
		t.Fatalf("model log: %d, %v", len(got), err)
	}
	if c, ok := s.(interface{ CompactLog(uint64) (int, error) }); ok {
		if _, err := c.CompactLog(5); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadLog(3, 10); !errors.Is(err, model.ErrCompacted) {
			t.Fatalf("read compacted: %v", err)
		}
		es, err := s.ReadLog(16, 10)
		if err != nil || len(es) != 5 {
			t.Fatalf("tail after compaction: %d, %v", len(es), err)
		}
	}
}

func testSnapshot(t *testing.T, m *model.Model, s model.Store) {
	put(t, m, "/s/a", "device", "", nil)
	put(t, m, "/s/a/x", "device", "", nil)
	put(t, m, "/s-b/c", "device", "", nil)
	var paths []model.Path
	seq, err := s.Snapshot("/s", func(c *model.Context) error { paths = append(paths, c.Path); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(paths) != "[/s /s/a /s/a/x]" || seq != m.LastSeq() {
		t.Fatalf("snapshot = %v at %d (last %d)", paths, seq, m.LastSeq())
	}
}

func testAtomicProposal(t *testing.T, m *model.Model, s model.Store) {
	before := m.LastSeq()
	_, err := m.Apply(context.Background(),
		model.Mutation{Op: model.OpPut, Path: "/atomic/a", Type: "device"},
		model.Mutation{Op: model.OpEvent, Path: "/atomic/missing", Event: &model.Event{Level: model.LevelInfo}})
	if !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Context("/atomic/a"); !errors.Is(err, model.ErrNotFound) {
		t.Fatal("failed proposal left a context behind")
	}
	if m.LastSeq() != before {
		t.Fatal("failed proposal consumed sequence numbers")
	}
}

func testConcurrent(t *testing.T, m *model.Model, s model.Store) {
	const writers, each = 16, 50
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				_, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut,
					Path:      model.MustPath(fmt.Sprintf("/c/w%d", w)),
					Type:      "device",
					Variables: map[string]model.Variable{"n": {Value: json.RawMessage(fmt.Sprint(i)), Type: model.TypeNumber}}})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for w := range writers {
		c, err := s.Context(model.MustPath(fmt.Sprintf("/c/w%d", w)))
		if err != nil {
			t.Fatal(err)
		}
		if string(c.Variables["n"].Value) != fmt.Sprint(each-1) {
			t.Fatalf("w%d n = %s", w, c.Variables["n"].Value)
		}
	}
	es, err := m.ReadLog(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != writers*each+1 {
		t.Fatalf("log has %d entries, want %d", len(es), writers*each+1)
	}
}

// testActor: a tenant's mutation is refused when the target or an
// ancestor belongs to another tenant, whatever the caller checked before.
func testActor(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/dev/a", Type: "device", Actor: "t1"}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Context("/dev/a")
	if err != nil || c.Tenant != "t1" {
		t.Fatalf("created context = %+v, %v", c, err)
	}
	for _, mut := range []model.Mutation{
		{Op: model.OpPut, Path: "/dev/a", Actor: "t2"},
		{Op: model.OpPut, Path: "/dev/a/sub", Actor: "t2"},
		{Op: model.OpDelete, Path: "/dev/a", Actor: "t2"},
		{Op: model.OpEvent, Path: "/dev/a", Actor: "t2", Event: &model.Event{Level: model.LevelInfo}},
	} {
		if _, err := m.Apply(ctx, mut); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("%s %s by t2: err = %v, want ErrNotFound", mut.Op, mut.Path, err)
		}
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/dev", Labels: map[string]string{"x": "y"}, Actor: "t1"}); !errors.Is(err, model.ErrShared) {
		t.Errorf("tenant changed a shared folder: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/dev/a", Tenant: "t2", Actor: "t1"}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("tenant moved a context to another tenant: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/dev/a", Labels: map[string]string{"k": "v"}, Actor: "t1"}); err != nil {
		t.Errorf("owner update: %v", err)
	}
}

// testBatchOrder: what one batch does to a record or a context in several
// steps ends as the last step says, whatever the store's write order.
func testBatchOrder(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	if err := m.PutRecord(ctx, "k", "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	put(t, m, "/o/x", "device", "", nil)
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/o/x", Event: &model.Event{Level: model.LevelInfo, Name: "old"}}); err != nil {
		t.Fatal(err)
	}
	ev := func(name string) model.Mutation {
		return model.Mutation{Op: model.OpEvent, Path: "/o/x", Event: &model.Event{Level: model.LevelInfo, Name: name}}
	}
	if _, err := m.Apply(ctx,
		model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: "k", Key: "a"}},
		model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "k", Key: "a", Value: []byte("2")}},
		model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "k", Key: "b", Value: []byte("3")}},
		model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: "k", Key: "b"}},
		ev("doomed"),
		model.Mutation{Op: model.OpDelete, Path: "/o/x"},
		model.Mutation{Op: model.OpPut, Path: "/o/x", Type: "gateway"},
		ev("new"),
		model.Mutation{Op: model.OpPut, Path: "/o/y", Type: "device"},
		model.Mutation{Op: model.OpEvent, Path: "/o/y", Event: &model.Event{Level: model.LevelInfo}},
		model.Mutation{Op: model.OpDelete, Path: "/o/y"},
	); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Record("k", "a"); err != nil || string(v) != "2" {
		t.Errorf("record a = %q, %v; want 2", v, err)
	}
	if _, err := s.Record("k", "b"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("record b survives its deletion: %v", err)
	}
	c, err := s.Context("/o/x")
	if err != nil || c.Type != "gateway" {
		t.Fatalf("/o/x = %+v, %v", c, err)
	}
	evs, err := s.Events("/o/x", model.EventQuery{})
	if err != nil || len(evs) != 1 || evs[0].Name != "new" {
		t.Errorf("events of re-created /o/x = %v, %v; want [new]", names(evs), err)
	}
	if evs, _ := s.Events("/o/y", model.EventQuery{}); len(evs) != 0 {
		t.Errorf("events of deleted /o/y survive: %v", names(evs))
	}
	kids, err := s.Children("/o", "", 10)
	if err != nil || len(kids) != 1 || kids[0].Type != "gateway" {
		t.Errorf("children of /o = %+v, %v", kids, err)
	}
}

// failingStore fails every commit whose batch touches a path named
// "fail", as a full or broken disk would, without writing anything.
type failingStore struct{ model.Store }

func (f failingStore) Commit(b *model.Batch) error {
	for _, e := range b.Entries {
		if e.Mutation.Path.Name() == "fail" {
			return errors.New("disk on fire")
		}
	}
	return f.Store.Commit(b)
}

// testCommitFailure: with many writers and batches committed while the
// next is built on top of them, a failed commit fails exactly its own
// callers (and writes nothing), the batch built on it is rebuilt on the
// committed state, and the log stays contiguous and equal to the state.
func testCommitFailure(t *testing.T, s model.Store) {
	m, err := model.New(model.Config{Store: failingStore{s}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		s.Close()
	})
	ctx := context.Background()
	const writers, each = 32, 60
	type result struct {
		w, i int
		err  error
	}
	results := make(chan result, writers*each)
	for w := range writers {
		go func() {
			for i := range each {
				mut := model.Mutation{Op: model.OpPut, Path: model.MustPath(fmt.Sprintf("/f/w%d", w)), Type: "device",
					Variables: map[string]model.Variable{"n": {Value: json.RawMessage(fmt.Sprint(i)), Type: model.TypeNumber}}}
				muts := []model.Mutation{mut}
				if w%8 == 0 && i%10 == 5 { // this proposal's batch will fail
					muts = append(muts, model.Mutation{Op: model.OpPut, Path: "/f/fail", Type: "device"})
				}
				_, err := m.Apply(ctx, muts...)
				results <- result{w, i, err}
			}
		}()
	}
	last := make(map[int]int) // writer -> last value acknowledged
	failed := 0
	for range writers * each {
		r := <-results
		if r.err != nil {
			failed++
			continue
		}
		if r.w%8 == 0 && r.i%10 == 5 {
			t.Fatalf("w%d/%d: a proposal touching /f/fail was acknowledged", r.w, r.i)
		}
		last[r.w] = max(last[r.w], r.i)
	}
	if failed == 0 {
		t.Fatal("no commit failed; the test did not test anything")
	}
	// The log is contiguous, and replaying it rebuilds the stored state.
	es, err := s.ReadLog(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	state := map[model.Path]*model.Context{}
	for i := range es {
		if es[i].Seq != uint64(i+1) {
			t.Fatalf("log entry %d has seq %d", i, es[i].Seq)
		}
		c, changed := model.ReplayEntry(state[es[i].Mutation.Path], &es[i])
		if changed {
			state[es[i].Mutation.Path] = c
		}
	}
	if got, _ := s.LastSeq(); got != uint64(len(es)) || m.LastSeq() != got {
		t.Fatalf("last seq: store %d, model %d, log %d", got, m.LastSeq(), len(es))
	}
	if _, err := s.Context("/f/fail"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("context of a failed commit: %v", err)
	}
	for w := range writers {
		p := model.MustPath(fmt.Sprintf("/f/w%d", w))
		c, err := s.Context(p)
		if err != nil {
			t.Fatal(err)
		}
		// Writes of one writer are sequential, and a failed one leaves
		// nothing: its last acknowledged value is the stored one.
		if got := string(c.Variables["n"].Value); got != fmt.Sprint(last[w]) {
			t.Fatalf("w%d: stored n = %s, last acknowledged %d", w, got, last[w])
		}
		if r := state[p]; r == nil || string(r.Variables["n"].Value) != string(c.Variables["n"].Value) || r.Version != c.Version {
			t.Fatalf("w%d: replayed log disagrees with the store", w)
		}
	}
}
