package store

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// retentionView is what retention changes in a store: each context's
// events, the event feed, where the log starts and the log.
func retentionView(t *testing.T, s *Badger, paths ...model.Path) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, p := range paths {
		evs, err := s.Events(p, model.EventQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, e := range evs {
			seqs = append(seqs, e.Seq)
		}
		out["events "+string(p)] = seqs
	}
	out["feed"] = feedSeqs(t, s, model.FeedQuery{Prefix: "/"})
	first, err := s.FirstSeq()
	if err != nil {
		t.Fatal(err)
	}
	out["first"] = first
	es, err := s.ReadLog(first-1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range es {
		seqs = append(seqs, e.Seq)
	}
	out["log"] = seqs
	return out
}

// What a replica applies — the events the leader chose by name, the
// sequence number it chose to compact to — leaves the store as the
// node's own PruneEvents and CompactLog do, records the Raft index, and
// applied again changes nothing more.
func TestReplicaRetentionMatchesLocal(t *testing.T) {
	fill := func() (*Badger, *appliedStore) {
		s := openTestBadger(t, t.TempDir(), nil)
		as := fillReplica(t, s)
		m, err := model.New(model.Config{Store: as})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		old := time.Unix(1_000_000, 0)
		for i := range 12 {
			p := model.Path("/devices/a")
			if i%2 == 1 {
				p = "/groups/g/x"
			}
			at := time.Time{}
			if i < 4 {
				at = old
			}
			level := model.LevelInfo
			if i%3 == 0 {
				level = model.LevelWarning
			}
			if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpEvent, Path: p,
				Event: &model.Event{Name: "e", Level: level, Time: at}}); err != nil {
				t.Fatal(err)
			}
		}
		return s, as
	}
	paths := []model.Path{"/devices/a", "/groups/g/x"}
	local, _ := fill()
	repl, as := fill()
	if !reflect.DeepEqual(retentionView(t, local, paths...), retentionView(t, repl, paths...)) {
		t.Fatal("the two stores differ before retention")
	}
	cutoff := time.Unix(2_000_000, 0)
	some, err := repl.EventsToPrune(3, cutoff, 2)
	if err != nil || len(some) != 2 {
		t.Fatalf("limit 2: %v, %v", some, err)
	}
	refs, err := repl.EventsToPrune(3, cutoff, 0)
	if err != nil || len(refs) < 4 {
		t.Fatalf("to prune: %v, %v", refs, err)
	}
	want, err := local.PruneEvents(3, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	idx := as.index + 1
	if n, err := repl.DeleteEventsApplied(refs, idx); err != nil || n != want {
		t.Fatalf("deleted %d, %v; the local prune dropped %d", n, err, want)
	}
	if n, err := repl.DeleteEventsApplied(refs, idx); err != nil || n != 0 {
		t.Fatalf("applied again: deleted %d, %v", n, err)
	}
	last, err := local.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.CompactLog(5); err != nil {
		t.Fatal(err)
	}
	if _, err := repl.CompactLogApplied(last-5, idx+1); err != nil {
		t.Fatal(err)
	}
	if _, err := repl.CompactLogApplied(last-5, idx+1); err != nil {
		t.Fatal(err)
	}
	lv, rv := retentionView(t, local, paths...), retentionView(t, repl, paths...)
	if !reflect.DeepEqual(lv, rv) {
		t.Fatalf("after retention:\nlocal   %v\nreplica %v", lv, rv)
	}
	if lv["first"].(uint64) <= 1 {
		t.Fatalf("nothing compacted: %v", lv)
	}
	if got, err := repl.Applied(); err != nil || got != idx+1 {
		t.Fatalf("applied index %d, %v; want %d", got, err, idx+1)
	}
}
