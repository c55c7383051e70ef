package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/strata-dm/strata/internal/atomicfile"
)

// A store opened with BadgerOptions.Unsynced does not sync its
// write-ahead log per commit: its caller holds a durable log of its own
// (a Raft replica's) from which it applies again what the store lost.
//
// What a crash can lose depends on what crashed. When only the process
// dies (kill -9, a panic, the OOM killer), every write it made is in the
// kernel's page cache, whole and in order, and the next open replays it:
// nothing is lost. When the machine goes down, the page cache is lost in
// no particular order: Badger's own files may then hold writes whose
// record in the write-ahead log did not reach the disk, and a replay
// would mix two points in time. So while such a store is open, the file
// UnsyncedMarker in its directory holds the machine's boot ID (written
// and synced before the first unsynced commit, removed by Close after
// the last sync). OpenBadger finds it at the next open: the same boot ID
// means the process died and the store is whole; another means the
// machine restarted, and OpenBadger refuses with ErrUnsyncedCrash,
// touching nothing, for the caller to rebuild the store from its log.
//
// Where the boot ID cannot be read (not Linux), commits are synced as
// if Unsynced were not set.

// UnsyncedMarker is the file that marks a store open without syncing
// its commits.
const UnsyncedMarker = "UNSYNCED"

// ErrUnsyncedCrash is returned by OpenBadger for a store that was open
// without syncing its commits when its machine stopped: what it holds is
// not to be trusted.
var ErrUnsyncedCrash = errors.New("store: the machine restarted while the store was open without syncing its commits")

const bootIDFile = "/proc/sys/kernel/random/boot_id"

// bootID returns the machine's boot ID, "" when it is not known.
func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// checkUnsynced refuses a store that was open unsynced under another boot
// (ErrUnsyncedCrash).
func checkUnsynced(dir, boot string) error {
	path := filepath.Join(dir, UnsyncedMarker)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if was := strings.TrimSpace(string(data)); was != boot || boot == "" {
		return fmt.Errorf("%w (%s: opened under boot %q, now %q)", ErrUnsyncedCrash, dir, was, boot)
	}
	return nil
}

// markUnsynced records, durably, that the store in dir is open without
// syncing its commits under this boot.
func markUnsynced(dir, boot string) error {
	return atomicfile.Write(filepath.Join(dir, UnsyncedMarker), []byte(boot+"\n"), 0o600)
}

// unmarkUnsynced removes the mark once everything the store holds is
// synced (Close, or an open that syncs its commits). A mark that
// survives a machine crash only costs a rebuild.
func unmarkUnsynced(dir string) error {
	err := os.Remove(filepath.Join(dir, UnsyncedMarker))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
