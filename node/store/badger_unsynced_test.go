package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A store open without syncing its commits carries the boot ID while it
// is open; Close removes it once everything is synced. A restart of the
// process alone finds every commit; a restart of the machine makes the
// store refuse to open, touching nothing, so that its owner rebuilds it.
func TestBadgerUnsyncedMarksItsBoot(t *testing.T) {
	boot := bootID()
	if boot == "" {
		t.Skip("no boot ID on this system: Unsynced stores sync")
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, UnsyncedMarker)
	open := func() *Badger {
		t.Helper()
		s, err := OpenBadger(BadgerOptions{Dir: dir, CacheMB: 8, Unsynced: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if got, err := os.ReadFile(marker); err != nil || string(got) != boot+"\n" {
		t.Fatalf("marker while open: %q, %v; want the boot ID", got, err)
	}
	writeOneAndClose(t, s)
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after a clean close: %v", err)
	}

	// The process died (the marker of this boot is still there, the
	// last checkpoint never ran): the store opens with everything.
	s = open()
	s.skipFinalCheckpoint = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := markUnsynced(dir, boot); err != nil {
		t.Fatal(err)
	}
	s = open()
	if _, err := s.Context("/devices/a"); err != nil {
		t.Fatalf("after the process died: %v", err)
	}
	s.Close()

	// The machine restarted: refused, and the files are left alone.
	if err := markUnsynced(dir, "another-boot"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	for _, unsynced := range []bool{true, false} {
		if _, err := OpenBadger(BadgerOptions{Dir: dir, CacheMB: 8, Unsynced: unsynced}); !errors.Is(err, ErrUnsyncedCrash) {
			t.Fatalf("unsynced=%v after a machine restart: %v, want ErrUnsyncedCrash", unsynced, err)
		}
	}
	after, _ := os.ReadDir(dir)
	if len(before) != len(after) {
		t.Fatalf("the refused open changed the directory: %d entries, then %d", len(before), len(after))
	}

	// A synced open of a store the process left unsynced removes the
	// marker once it has synced everything.
	if err := markUnsynced(dir, boot); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBadger(BadgerOptions{Dir: dir, CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after a synced open: %v", err)
	}
}
