package cluster

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// An install interrupted at any step leaves the old store or the new one,
// whole: at open the live directory is the one store.current names (or
// "store"), and the others are removed.
func TestLiveStoreDirAfterInterruptedInstall(t *testing.T) {
	for _, c := range []struct {
		name    string
		current string   // store.current's content, "" for none
		dirs    []string // store directories present
		want    string
	}{
		{"fresh", "", nil, "store"},
		{"crash while restoring into the new directory", "", []string{"store", "store-17"}, "store"},
		{"crash after switching, before removing the old", "store-17\n", []string{"store", "store-17"}, "store-17"},
		{"second install interrupted", "store-17\n", []string{"store-17", "store-42"}, "store-17"},
	} {
		dir := t.TempDir()
		for _, d := range append(c.dirs, "raft") {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if c.current != "" {
			if err := os.WriteFile(filepath.Join(dir, currentFile), []byte(c.current), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		got, err := liveStoreDir(dir)
		if err != nil || got != c.want {
			t.Errorf("%s: live %q, %v; want %q", c.name, got, err, c.want)
			continue
		}
		ents, _ := os.ReadDir(dir)
		var left []string
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, e.Name())
			}
		}
		want := []string{"raft"}
		if slices.Contains(c.dirs, c.want) {
			want = append(want, c.want)
		}
		slices.Sort(want)
		if !slices.Equal(left, want) {
			t.Errorf("%s: directories left %v, want %v", c.name, left, want)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, currentFile), []byte("../etc\n"), 0o600)
	if _, err := liveStoreDir(dir); err == nil {
		t.Error("store.current naming a path outside the data directory was accepted")
	}
}

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "test" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// A snapshot of the local store that Raft still holds (it asks the main
// loop for the configuration before persisting it) does not hold up the
// install of the leader's snapshot: the install swaps the store and the
// snapshot still persists the store it viewed, which is closed and
// removed once the snapshot is released. (A lock held by the snapshot
// until its release deadlocked a replica taking its own snapshot while
// installing the leader's.)
func TestRestoreWhileASnapshotIsHeld(t *testing.T) {
	h := newHarness(t, nil)
	r := h.cluster(1)[0]
	h.write(put("/a", "k", "1"))
	source, err := r.c.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var stream bufSink
	if err := source.Persist(&stream); err != nil {
		t.Fatal(err)
	}
	source.Release()
	h.write(put("/b", "k", "2"))
	held, err := r.c.fsm.Snapshot() // as Raft's takeSnapshot holds it
	if err != nil {
		t.Fatal(err)
	}
	oldDir := r.c.storeDir

	restored := make(chan error, 1)
	go func() { restored <- r.c.fsm.Restore(io.NopCloser(&stream.Buffer)) }()
	select {
	case err := <-restored:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(tstest.DefaultTimeout):
		t.Fatal("the install waits for the snapshot held")
	}
	if _, err := r.c.store.Context("/b"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("/b after installing a snapshot taken before it: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, oldDir)); err != nil {
		t.Fatalf("the replaced store, still viewed, is gone: %v", err)
	}
	var persisted bufSink
	if err := held.Persist(&persisted); err != nil {
		t.Fatalf("persisting the snapshot held across the install: %v", err)
	}
	held.Release()
	held.Release() // twice is safe
	if _, err := os.Stat(filepath.Join(r.dir, oldDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the replaced store outlives its last view: %v", err)
	}
	if persisted.Len() <= stream.Len() {
		t.Fatalf("the held snapshot has %d bytes, the older one %d: not the store it viewed", persisted.Len(), stream.Len())
	}
}
