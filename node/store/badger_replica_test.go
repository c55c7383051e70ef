package store

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// appliedStore commits through CommitApplied, one Raft index per batch,
// as a replica does.
type appliedStore struct {
	*Badger
	index uint64
}

func (s *appliedStore) Commit(b *model.Batch) error {
	s.index++
	return s.CommitApplied(b, s.index)
}

func fillReplica(t *testing.T, s *Badger) *appliedStore {
	t.Helper()
	as := &appliedStore{Badger: s}
	m, err := model.New(model.Config{Store: as})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for i, p := range []model.Path{"/devices/a", "/devices/b", "/groups/g/x"} {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device", Tenant: "t1",
			Labels: map[string]string{"n": string(rune('a' + i))}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, level := range []model.Level{model.LevelInfo, model.LevelWarning} { // a warning goes to the event feed index too
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/devices/a",
			Event: &model.Event{Name: "boot", Level: level}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PutRecord(ctx, "k", "one", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/devices/b"}); err != nil {
		t.Fatal(err)
	}
	return as
}

// dump is everything a reader of the store can see.
func dump(t *testing.T, s *Badger) map[string]any {
	t.Helper()
	out := map[string]any{}
	last, err := s.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	out["last"] = last
	applied, err := s.Applied()
	if err != nil {
		t.Fatal(err)
	}
	out["applied"] = applied
	var ctxs []string
	if _, err := s.Snapshot("/", func(c *model.Context) error {
		b, err := model.Marshal(c)
		ctxs = append(ctxs, string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out["contexts"] = ctxs
	es, err := s.ReadLog(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range es {
		seqs = append(seqs, e.Seq)
	}
	out["log"] = seqs
	evs, err := s.Events("/devices/a", model.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	out["events"] = len(evs)
	keys := map[byte]int{}
	if err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			// Meta keys aside: opening the restored store may checkpoint.
			if k := it.Item().Key()[0]; k != pMeta {
				keys[k]++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out["keys by kind"] = keys
	v, err := s.Record("k", "one")
	if err != nil {
		t.Fatal(err)
	}
	out["record"] = string(v)
	return out
}

func TestSnapshotRestore(t *testing.T) {
	for _, ckpt := range []bool{false, true} {
		src := openTestBadger(t, t.TempDir(), nil)
		as := fillReplica(t, src)
		if ckpt {
			if err := src.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := src.Applied(); err != nil || got != as.index {
			t.Fatalf("applied = %d, %v; want %d", got, err, as.index)
		}
		var buf bytes.Buffer
		h, err := src.WriteSnapshot(&buf)
		if err != nil {
			t.Fatal(err)
		}
		want := dump(t, src)
		src.Close()
		if h.Applied != as.index || h.LastSeq != want["last"] {
			t.Fatalf("header %+v, want applied %d last %v", h, as.index, want["last"])
		}
		if rh, err := ReadSnapshotHeader(bytes.NewReader(buf.Bytes())); err != nil || rh != h {
			t.Fatalf("header read back: %+v, %v", rh, err)
		}
		dir := filepath.Join(t.TempDir(), "restored")
		if _, err := RestoreSnapshot(BadgerOptions{Dir: dir}, bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
		dst := openTestBadger(t, dir, nil)
		got := dump(t, dst)
		dst.Close()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("checkpoint %v: restored store differs:\n got %v\nwant %v", ckpt, got, want)
		}
	}
}

func TestSnapshotRestoreRefusesDamage(t *testing.T) {
	src := openTestBadger(t, t.TempDir(), nil)
	fillReplica(t, src)
	var buf bytes.Buffer
	if _, err := src.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	src.Close()
	good := buf.Bytes()
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x40
	for name, data := range map[string][]byte{
		"cut":     good[:len(good)-7],
		"flipped": flipped,
		"empty":   nil,
		"garbage": []byte("strata-snapshot\x00not really"),
	} {
		dir := filepath.Join(t.TempDir(), "restored")
		if _, err := RestoreSnapshot(BadgerOptions{Dir: dir}, bytes.NewReader(data)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: err = %v, want ErrBadSnapshot", name, err)
		}
	}
	// A directory already holding a store is never overwritten.
	dir := t.TempDir()
	openTestBadger(t, dir, nil).Close()
	if _, err := RestoreSnapshot(BadgerOptions{Dir: dir}, bytes.NewReader(good)); err == nil {
		t.Fatal("restored over an existing store")
	}
}

func FuzzSnapshotReader(f *testing.F) {
	var buf bytes.Buffer
	sw := newSnapshotWriter(&buf)
	sw.header(SnapshotHeader{Applied: 3, LastSeq: 9})
	sw.frame([]byte("mlast"), seqBytes(9))
	sw.frame([]byte("r\x00k"), []byte("v"))
	if err := sw.end(); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		sr := newSnapshotReader(bytes.NewReader(data))
		if _, err := sr.header(); err != nil {
			return
		}
		for n := uint64(0); ; n++ {
			k, _, err := sr.next(n)
			if err != nil {
				if !errors.Is(err, ErrBadSnapshot) {
					t.Fatalf("error not ErrBadSnapshot: %v", err)
				}
				return
			}
			if k == nil {
				return
			}
		}
	})
}
