package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/strata-dm/strata/model"
)

// Replaying the whole log with model.ReplayEntry rebuilds every context
// exactly as the state machine left it, from nothing and also from the
// final state itself (the furthest a c key can be ahead of a checkpoint).
func TestReplayEntryRebuildsContexts(t *testing.T) {
	s, err := OpenBadger(BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := newModel(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []model.Path{"/a", "/a/b", "/a/b/c", "/a/d", "/e", "/e/f/g", "/h"}
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	for i := range 3000 {
		p := paths[rng.IntN(len(paths))]
		var mu model.Mutation
		switch rng.IntN(10) {
		case 0:
			mu = model.Mutation{Op: model.OpDelete, Path: p}
		case 1:
			mu = model.Mutation{Op: model.OpEvent, Path: p, Event: &model.Event{Name: "e", Level: "info"}}
		default:
			mu = model.Mutation{Op: model.OpPut, Path: p, Type: pick("", "", "device", "gateway"), Tenant: pick("", "", "", "t1", "t2"),
				Labels:    map[string]string{pick("x", "y"): pick("", "1", "2")},
				Variables: map[string]model.Variable{pick("v", "w", "z"): {Value: json.RawMessage(fmt.Sprint(i))}},
				Replace:   rng.IntN(15) == 0}
			if rng.IntN(8) == 0 {
				mu.SetFunctions = true
				mu.Functions = []model.Function{{Name: pick("reboot", "ping")}, {Name: "a"}}
			}
		}
		// Refusals (a delete with children, a missing context) are part
		// of the game: they leave no entry.
		_, _ = m.Apply(context.Background(), mu)
	}
	want := map[model.Path][]byte{}
	// JSON: map keys sorted, so equal contexts encode equally.
	if _, err := s.Snapshot(model.Root, func(c *model.Context) error {
		b, err := json.Marshal(c)
		want[c.Path] = b
		return err
	}); err != nil {
		t.Fatal(err)
	}
	log, err := s.ReadLog(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []string{"nothing", "the final state"} {
		state := map[model.Path]*model.Context{}
		if start == "the final state" {
			for p, b := range want {
				c := new(model.Context)
				if err := json.Unmarshal(b, c); err != nil {
					t.Fatal(err)
				}
				state[p] = c
			}
		}
		for i := range log {
			e := &log[i]
			if next, changed := model.ReplayEntry(state[e.Mutation.Path], e); changed {
				if next == nil {
					delete(state, e.Mutation.Path)
				} else {
					state[e.Mutation.Path] = next
				}
			}
		}
		if len(state) != len(want) {
			t.Errorf("from %s: %d contexts replayed, %d stored", start, len(state), len(want))
		}
		for p, c := range state {
			got, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[p]) {
				t.Errorf("from %s: %s replayed as\n%s\nstored\n%s", start, p, got, want[p])
			}
		}
	}
	t.Logf("%d entries, %d contexts", len(log), len(want))
}

// The model's encoded entries, from its in-memory tail and from the store,
// decode to the entries ReadLog returns.
func TestReadLogRawMatchesReadLog(t *testing.T) {
	s, err := OpenBadger(BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tail := range []int{1 << 16, 8} { // all in memory; mostly from the store
		m, err := model.New(model.Config{Store: s, TailSize: tail})
		if err != nil {
			t.Fatal(err)
		}
		first := m.LastSeq()
		for i := range 200 {
			if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/t%d/d%d", tail, i%7)),
				Type: "device", Tenant: "acme", Variables: map[string]model.Variable{"n": {Value: json.RawMessage(fmt.Sprint(i))}}}); err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		want, err := m.ReadLog(ctx, first, 1000)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.ReadLogRaw(ctx, first, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("tail %d: %d raw entries, %d entries", tail, len(got), len(want))
		}
		for i := range got {
			var e model.Entry
			if err := model.Unmarshal(got[i].Raw, &e); err != nil {
				t.Fatal(err)
			}
			wj, _ := json.Marshal(want[i])
			gj, _ := json.Marshal(e)
			if !bytes.Equal(wj, gj) || got[i].Seq != e.Seq || got[i].Path != e.Mutation.Path || got[i].Op != e.Mutation.Op {
				t.Fatalf("tail %d: raw entry %d decodes to %s, want %s", tail, i, gj, wj)
			}
		}
		m.Close()
	}
}
