package federation

import (
	"context"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// FuzzMirrorBounds feeds arbitrary entries (as a batch, or as the
// contexts of a snapshot) through a mount's real apply path on a real
// store, and checks the change log afterwards: nothing is ever written
// outside /peers/p1/<its granted subtrees> (the only other write allowed
// is the mount's own cursor record).
func FuzzMirrorBounds(f *testing.F) {
	s, err := store.OpenBadger(store.BadgerOptions{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	md, err := model.New(model.Config{Store: s, CacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { md.Close() })
	svc, err := New(Config{Name: "hq", Model: md})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	// Neighbours an escape would reach: another provider's mirror whose
	// name extends p1's, and the node's own tree.
	for _, p := range []model.Path{"/peers", "/peers/p1", "/peers/p10", "/peers/p10/devices", "/peers/p1x", "/devices", "/groups"} {
		if _, err := md.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "folder"}); err != nil {
			f.Fatal(err)
		}
	}
	m := newMount(svc, peerRecord{Name: "p1", Grant: GrantRead, Subtrees: []model.Path{"/devices", "/groups/g"}})
	publish := []model.Path{"/devices", "/groups"}
	m.subtrees = effective(publish, m.accept)
	m.bounds = newBounds(m.path, publish, m.accept)
	allowed := []model.Path{"/peers/p1/devices", "/peers/p1/groups/g"}

	seed := func(paths ...model.Path) {
		var b batch
		for i, p := range paths {
			b.Entries = append(b.Entries, model.Entry{Seq: uint64(i + 1), Time: time.Unix(1, 0), Mutation: model.Mutation{
				Op: model.OpPut, Path: p, Type: "device", Tenant: "t",
				Variables: map[string]model.Variable{"v": {Value: []byte("1"), Type: model.TypeNumber}},
			}})
		}
		b.Entries = append(b.Entries, model.Entry{Seq: 99, Mutation: model.Mutation{Op: model.OpEvent, Path: "0/devices/x", Event: &model.Event{Name: "e", Level: model.LevelInfo}}})
		data, err := model.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
		f.Add(data, true)
	}
	seed("/devices/a", "0/devices/a", "/", "devices/b", "/groups/g/x", "/groups/h", "/devices/../peers/p10")
	seed("/devices", "/devices/", "//devices", "/peers/p10/devices", "x/devices/a")

	f.Fuzz(func(t *testing.T, data []byte, asSnapshot bool) {
		var b batch
		if model.Unmarshal(data, &b) != nil || len(b.Entries) > 64 {
			return
		}
		start := md.LastSeq()
		if asSnapshot {
			cs := make([]*model.Context, 0, len(b.Entries))
			for _, e := range b.Entries {
				mu := e.Mutation
				cs = append(cs, &model.Context{Path: mu.Path, Type: mu.Type, Tenant: mu.Tenant, Labels: mu.Labels, Variables: mu.Variables, Functions: mu.Functions})
			}
			if err := m.applyChunk(&snapshotState{seen: map[model.Path]bool{}}, cs, func() {}); err != nil {
				t.Fatal(err)
			}
		} else {
			// Renumber after the mount's cursor so that every entry is applied.
			cur := m.rec.Cursor
			for i := range b.Entries {
				b.Entries[i].Seq = cur + uint64(i) + 1
			}
			b.Last, b.Head = cur+uint64(len(b.Entries))+1, 0
			if _, err := m.applyBatch(b, "log", func() {}); err != nil {
				t.Fatal(err)
			}
		}
		if md.LastSeq() == start {
			return // nothing written
		}
		es, err := md.ReadLog(ctx, start, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			mu := e.Mutation
			if e.Local() {
				if mu.Record == nil || mu.Record.Kind != recMount || mu.Record.Key != "p1" {
					t.Fatalf("a mirror wrote record %+v", mu.Record)
				}
				continue
			}
			if ancestor(mu.Path, allowed) && mu.Path.Within("/peers/p1") && mu.Path != "/peers/p1" &&
				mu.Op == model.OpPut && len(mu.Variables) == 0 && mu.Event == nil {
				continue // a folder the model creates on the way to a granted subtree
			}
			if mu.Path == "/peers/p1" || !within(mu.Path, allowed) {
				t.Fatalf("entry %d (%v) wrote %q, outside %v", e.Seq, mu.Op, mu.Path, allowed)
			}
			if mu.Event != nil && mu.Event.Path != "" && mu.Event.Path != mu.Path {
				t.Fatalf("event at %q carries path %q", mu.Path, mu.Event.Path)
			}
		}
	})
}

// ancestor reports whether p is above one of the paths.
func ancestor(p model.Path, ps []model.Path) bool {
	for _, q := range ps {
		if q != p && q.Within(p) {
			return true
		}
	}
	return false
}
