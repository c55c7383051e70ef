package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// The Raft log and stable store (Config.RaftLog).
//
// RaftLogWAL, the default, is the project's own (raftlog_file.go):
// segment files preallocated with zeros, one write and one fdatasync per
// append, and a small file for Raft's stable keys (term, vote), replaced
// only when those change. RaftLogBoltDB is raft-boltdb/v2, the store
// before: each append is a BoltDB transaction, two fdatasyncs
// (docs/benchmarks.md, "Raft cluster: commit throughput").
const (
	RaftLogWAL    = "wal"
	RaftLogBoltDB = "boltdb"
)

// raftLog is a replica's Raft log and stable store.
type raftLog interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// The files of each store under the data directory's raft/.
const (
	walDirName      = "wal"           // RaftLogWAL
	boltFileName    = "raft.db"       // RaftLogBoltDB
	migratingName   = "wal.migrating" // a migration in progress
	boltMigratedExt = ".migrated"     // raft.db once copied into wal/
)

// Raft's stable keys (raft.go): a migration copies them.
var (
	stableUint64Keys = [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm")}
	stableBytesKeys  = [][]byte{[]byte("LastVoteCand")}
)

// openRaftLog opens the Raft log under raftDir (the data directory's
// raft/) as kind ("" is RaftLogWAL). A replica whose log is in BoltDB
// (raft.db, written before RaftLogWAL was the default) has it copied into
// a new WAL first, unless kind is RaftLogBoltDB; a replica whose log is
// in a WAL cannot go back to BoltDB in place.
func openRaftLog(raftDir, kind string, logger *slog.Logger) (raftLog, error) {
	walDir := filepath.Join(raftDir, walDirName)
	boltPath := filepath.Join(raftDir, boltFileName)
	hasWAL, err := exists(walDir)
	if err != nil {
		return nil, err
	}
	hasBolt, err := exists(boltPath)
	if err != nil {
		return nil, err
	}
	switch kind {
	case RaftLogBoltDB:
		if hasWAL {
			return nil, fmt.Errorf("cluster: raft_log %q: this replica's Raft log is in %s (raft_log %q); it cannot go back in place (docs/cluster.md, \"The Raft log\")", kind, walDir, RaftLogWAL)
		}
		return raftboltdb.New(raftboltdb.Options{Path: boltPath})
	case "", RaftLogWAL:
	default:
		return nil, fmt.Errorf("cluster: raft_log %q: want %q or %q", kind, RaftLogWAL, RaftLogBoltDB)
	}
	if !hasWAL && hasBolt {
		logger.Info("copying the Raft log from BoltDB into its own files", "from", boltPath, "to", walDir)
		if err := migrateBoltToWAL(raftDir, logger); err != nil {
			return nil, fmt.Errorf("cluster: copy the Raft log from BoltDB: %w", err)
		}
		hasBolt = false
	}
	if hasBolt {
		// A migration renamed wal.migrating but not raft.db yet: the WAL
		// is complete.
		if err := os.Rename(boltPath, boltPath+boltMigratedExt); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	l, err := openFileLog(walDir, logger)
	if err != nil {
		return nil, fmt.Errorf("cluster: open the raft log: %w", err)
	}
	return l, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: %w", err)
	}
	return true, nil
}

// migrateBoltToWAL copies raftDir's BoltDB log and stable keys into a
// new WAL, built aside (wal.migrating) and renamed into place once
// complete, then renames raft.db to raft.db.migrated. A crash midway
// leaves either the BoltDB log alone (the copy starts again) or the
// complete WAL.
func migrateBoltToWAL(raftDir string, logger *slog.Logger) (err error) {
	boltPath := filepath.Join(raftDir, boltFileName)
	tmp := filepath.Join(raftDir, migratingName)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: boltPath})
	if err != nil {
		return err
	}
	defer bolt.Close()
	w, err := openFileLog(tmp, logger)
	if err != nil {
		return err
	}
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	for _, k := range stableUint64Keys {
		v, err := bolt.GetUint64(k)
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := w.SetUint64(k, v); err != nil {
			return err
		}
	}
	for _, k := range stableBytesKeys {
		v, err := bolt.Get(k)
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := w.Set(k, v); err != nil {
			return err
		}
	}
	first, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	last, err := bolt.LastIndex()
	if err != nil {
		return err
	}
	const chunk = 256
	batch := make([]*raft.Log, 0, chunk)
	for i := first; first > 0 && i <= last; i++ {
		l := new(raft.Log)
		if err := bolt.GetLog(i, l); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if batch = append(batch, l); len(batch) == chunk || i == last {
			if err := w.StoreLogs(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	err, w = w.Close(), nil
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(raftDir, walDirName)); err != nil {
		return err
	}
	if err := syncDir(raftDir); err != nil {
		return err
	}
	if err := os.Rename(boltPath, boltPath+boltMigratedExt); err != nil {
		return err
	}
	return syncDir(raftDir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}
