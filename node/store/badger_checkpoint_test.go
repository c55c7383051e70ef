package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/storetest"
)

// Every commit asks for a checkpoint, so checkpoints run all the time
// beside the conformance suite's writes and reads.
func TestBadgerConformanceCheckpointing(t *testing.T) {
	storetest.Run(t, func(t *testing.T) model.Store {
		s, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), CacheMB: 8, CheckpointContexts: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// checkpointedDevices opens a store in dir with a model on it (no cache,
// so reads go to the store), puts n=1 on /devices/d00.. and checkpoints.
func checkpointedDevices(t *testing.T, dir string, devices int) (*Badger, *model.Model) {
	t.Helper()
	s, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range devices {
		putVar(t, m, model.Path(fmt.Sprintf("/devices/d%02d", i)), "n", "1")
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	return s, m
}

func putVar(t *testing.T, m *model.Model, p model.Path, name, js string) uint64 {
	t.Helper()
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "device",
		Variables: map[string]model.Variable{name: {Value: json.RawMessage(js)}}})
	if err != nil {
		t.Fatal(err)
	}
	return es[len(es)-1].Seq
}

func varOf(t *testing.T, s model.Store, p model.Path, name string) string {
	t.Helper()
	c, err := s.Context(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(c.Variables[name].Value)
}

// A restart without the final checkpoint (as after kill -9) replays the
// log: updates, deletions and re-creations since the last checkpoint are
// all there, in reads, snapshots and search.
func TestBadgerReplaysLog(t *testing.T) {
	dir := t.TempDir()
	s, m := checkpointedDevices(t, dir, 50)
	putVar(t, m, "/devices/d01", "n", "2") // updated after the checkpoint
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/d02"}); err != nil {
		t.Fatal(err)
	}
	putVar(t, m, "/devices/d03", "n", "2")
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/d03"}); err != nil {
		t.Fatal(err)
	}
	putVar(t, m, "/devices/d03", "n", "3") // deleted, then created again
	last := putVar(t, m, "/devices/new", "n", "1")
	m.Close()
	s.skipFinalCheckpoint = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(when string) {
		t.Helper()
		if got := varOf(t, s, "/devices/d01", "n"); got != "2" {
			t.Errorf("%s: d01 n = %s, want 2", when, got)
		}
		if _, err := s.Context("/devices/d02"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("%s: deleted d02: %v", when, err)
		}
		if got := varOf(t, s, "/devices/d03", "n"); got != "3" {
			t.Errorf("%s: d03 n = %s, want 3", when, got)
		}
		if got := varOf(t, s, "/devices/new", "n"); got != "1" {
			t.Errorf("%s: new n = %s", when, got)
		}
		seen := map[model.Path]string{}
		seq, err := s.Snapshot("/devices", func(c *model.Context) error {
			seen[c.Path] = string(c.Variables["n"].Value)
			return nil
		})
		if err != nil || seq != last {
			t.Fatalf("%s: snapshot at %d (%v), want %d", when, seq, err, last)
		}
		if len(seen) != 1+50 || seen["/devices/d02"] != "" || seen["/devices/d01"] != "2" || seen["/devices/new"] != "1" {
			t.Errorf("%s: snapshot saw %d contexts: d01=%q d02=%q new=%q", when, len(seen), seen["/devices/d01"], seen["/devices/d02"], seen["/devices/new"])
		}
		page, err := s.Search(context.Background(), SearchQuery{Prefix: "/devices", Vars: map[string]json.RawMessage{"n": json.RawMessage("2")}})
		if err != nil || len(page.Contexts) != 1 || page.Contexts[0].Path != "/devices/d01" {
			t.Errorf("%s: search n=2: %v, %v", when, page.Contexts, err)
		}
	}
	if s.ov.dirty["/devices/d01"] == nil {
		t.Fatal("the overlay was not rebuilt from the log")
	}
	check("after restart")
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if n := len(s.ov.dirty); n != 0 {
		t.Fatalf("%d contexts left in the overlay after a checkpoint", n)
	}
	if err := s.db.View(func(txn *badger.Txn) error {
		ck, err := readSeq(txn, keyCheckpoint)
		if err == nil && ck != last {
			err = fmt.Errorf("checkpoint at %d, want %d", ck, last)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check("after checkpoint")
}

func countPrefix(t *testing.T, s *Badger, kind byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kind}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Log blocks past the last sequence number belong to a commit that never
// finished: a restart drops them, and the numbers they used are given
// again without a trace of them.
func TestBadgerDropsUnfinishedCommit(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	last := putVar(t, m, "/devices/a", "n", "1")
	m.Close()
	// What a commit split across transactions leaves when killed before
	// its last one: log blocks, but not the last sequence number.
	w := &txnWriter{db: s.db}
	w.begin()
	if _, err := writeBlocks(w, &model.Batch{Entries: []model.Entry{{Seq: last + 1, Mutation: model.Mutation{Op: model.OpPut, Path: "/devices/ghost"}},
		{Seq: last + 2, Mutation: model.Mutation{Op: model.OpPut, Path: "/devices/ghost"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	s.skipFinalCheckpoint = true
	s.Close()

	s, err = OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Context("/devices/ghost"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("the unfinished commit's context is visible: %v", err)
	}
	m, err = model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if seq := putVar(t, m, "/devices/b", "n", "1"); seq != last+1 {
		t.Fatalf("next sequence number %d, want %d", seq, last+1)
	}
	es, err := s.ReadLog(0, 100)
	if err != nil || len(es) != 3 || es[2].Mutation.Path != "/devices/b" {
		t.Fatalf("log after restart: %+v, %v", es, err)
	}
}

// A store written with one key per log entry is converted at open, also
// when an earlier conversion was interrupted.
func TestBadgerConvertsLegacyLog(t *testing.T) {
	for _, interrupted := range []bool{false, true} {
		t.Run(fmt.Sprintf("interrupted=%v", interrupted), func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenBadger(BadgerOptions{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			const n = 500
			err = s.db.Update(func(txn *badger.Txn) error {
				for i := uint64(1); i <= n; i++ {
					v, err := model.Marshal(&model.Entry{Seq: i, Mutation: model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/devices/d%d", i)), Type: "device"}})
					if err != nil {
						return err
					}
					if err := txn.Set(append([]byte{pLegacy}, seqBytes(i)...), v); err != nil {
						return err
					}
				}
				if interrupted { // a partial earlier run: a stray block, no marker
					if err := txn.Set(blockKey(7), []byte{0xff}); err != nil {
						return err
					}
				}
				return txn.Set(keyLast, seqBytes(n))
			})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err = OpenBadger(BadgerOptions{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if k := countPrefix(t, s, pLegacy); k != 0 {
				t.Fatalf("%d old log keys left", k)
			}
			var got []uint64
			for after := uint64(0); ; {
				es, err := s.ReadLog(after, 64)
				if err != nil {
					t.Fatal(err)
				}
				if len(es) == 0 {
					break
				}
				for _, e := range es {
					got = append(got, e.Seq)
				}
				after = es[len(es)-1].Seq
			}
			if len(got) != n || got[0] != 1 || got[n-1] != n {
				t.Fatalf("read back %d entries", len(got))
			}
			for i, seq := range got {
				if seq != uint64(i+1) {
					t.Fatalf("entry %d has sequence number %d", i, seq)
				}
			}
		})
	}
}

// Compaction drops whole blocks; a cursor inside a block that stays still
// reads on, and one before the new start gets ErrCompacted.
func TestBadgerCompactsBlocks(t *testing.T) {
	s, err := OpenBadger(BadgerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := newModel(t, s)
	muts := make([]model.Mutation, 4000)
	for i := range muts {
		muts[i] = model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/devices/d%d", i%37)), Type: "device",
			Variables: map[string]model.Variable{"n": {Value: json.RawMessage(fmt.Sprint(i))}}}
	}
	if _, err := m.Apply(context.Background(), muts...); err != nil {
		t.Fatal(err)
	}
	last := m.LastSeq()
	blocks := countPrefix(t, s, pBlock)
	if blocks < 10 {
		t.Fatalf("4000 entries in %d blocks: not packed as expected", blocks)
	}
	dropped, err := s.CompactLog(1200)
	if err != nil || uint64(dropped) != last-1200 {
		t.Fatalf("compaction dropped %d (%v), want %d", dropped, err, last-1200)
	}
	if left := countPrefix(t, s, pBlock); left >= blocks || left < blocks*1200/4000 {
		t.Fatalf("%d of %d blocks left after keeping 1200 of 4000 entries", left, blocks)
	}
	if _, err := s.ReadLog(last-1201, 10); !errors.Is(err, model.ErrCompacted) {
		t.Fatalf("cursor before the start: %v", err)
	}
	es, err := s.ReadLog(last-1200, 5000)
	if err != nil || len(es) != 1200 || es[0].Seq != last-1199 || es[1199].Seq != last {
		t.Fatalf("read after compaction: %d entries, %v", len(es), err)
	}
}

// Checkpoints running all the time beside writers never make a snapshot
// or a read see a context older than the last commit that changed it.
func TestBadgerCheckpointWhileWriting(t *testing.T) {
	s, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), CheckpointContexts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := model.New(model.Config{Store: s, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const devices, rounds = 20, 60
	var wg sync.WaitGroup
	errc := make(chan error, devices+1)
	for d := range devices {
		wg.Go(func() {
			p := model.Path(fmt.Sprintf("/devices/d%d", d))
			for r := 1; r <= rounds; r++ {
				if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "device",
					Variables: map[string]model.Variable{"r": {Value: json.RawMessage(fmt.Sprint(r))}}}); err != nil {
					errc <- err
					return
				}
				c, err := s.Context(p)
				if err != nil || string(c.Variables["r"].Value) != fmt.Sprint(r) {
					errc <- fmt.Errorf("%s after round %d reads %v (%v)", p, r, c, err)
					return
				}
			}
		})
	}
	type snap struct {
		seq      uint64
		versions map[model.Path]uint64
	}
	var taken []snap
	stop := make(chan struct{})
	var snaps sync.WaitGroup
	snaps.Go(func() {
		for len(taken) < 200 {
			select {
			case <-stop:
				return
			default:
			}
			versions := map[model.Path]uint64{}
			seq, err := s.Snapshot("/devices", func(c *model.Context) error {
				if c.Path != "/devices" {
					versions[c.Path] = c.Version
				}
				return nil
			})
			if err != nil {
				errc <- err
				return
			}
			taken = append(taken, snap{seq, versions})
		}
	})
	wg.Wait()
	close(stop)
	snaps.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	// Each snapshot shows every device at the last change at or before
	// its sequence number, as the log says.
	log, err := s.ReadLog(0, devices*rounds+100)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range taken {
		want := map[model.Path]uint64{}
		for _, e := range log {
			if e.Seq <= sn.seq && e.Mutation.Path != "/devices" {
				want[e.Mutation.Path] = e.Seq
			}
		}
		for p, v := range want {
			if sn.versions[p] != v {
				t.Fatalf("snapshot at %d shows %s at version %d, the log says %d", sn.seq, p, sn.versions[p], v)
			}
		}
		if len(sn.versions) != len(want) {
			t.Fatalf("snapshot at %d shows %d devices, the log %d", sn.seq, len(sn.versions), len(want))
		}
	}
	t.Logf("%d snapshots checked against the log", len(taken))
}

// A checkpoint killed half-way leaves some contexts' own keys newer than
// the recorded checkpoint; the restart replays the log over them and
// still ends at the right state.
func TestBadgerCheckpointKilledHalfWay(t *testing.T) {
	dir := t.TempDir()
	s, m := checkpointedDevices(t, dir, 20)
	for i := range 20 {
		putVar(t, m, model.Path(fmt.Sprintf("/devices/d%02d", i)), "n", "2")
	}
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/d05"}); err != nil {
		t.Fatal(err)
	}
	putVar(t, m, "/devices/d06", "n", "3")
	m.Close()
	// The first chunk of a checkpoint: half the overlay written to its
	// own keys, and the process dies before keyCheckpoint moves.
	w := &txnWriter{db: s.db}
	w.begin()
	n := 0
	for p, c := range s.ov.dirty {
		if n++; n%2 == 0 {
			continue
		}
		if c == nil {
			if err := w.del(contextKey(p)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		v, err := model.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.set(contextKey(p), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	s.skipFinalCheckpoint = true
	s.Close()

	s, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 20 {
		p := model.Path(fmt.Sprintf("/devices/d%02d", i))
		want := "2"
		switch i {
		case 5:
			if _, err := s.Context(p); !errors.Is(err, model.ErrNotFound) {
				t.Errorf("deleted %s: %v", p, err)
			}
			continue
		case 6:
			want = "3"
		}
		if got := varOf(t, s, p, "n"); got != want {
			t.Errorf("%s: n = %s, want %s", p, got, want)
		}
	}
}
