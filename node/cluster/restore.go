package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node/store"
)

// The local store's directory. A replica's data directory holds its
// Badger store in a directory named by the file "store.current" (or
// "store" when that file does not exist). Installing a snapshot restores
// it into a new directory, opens it, and only then names it in
// store.current (written atomically) and removes the old one; at open,
// any other store directory is what an interrupted install left, and is
// removed. So a crash at any point leaves either the old store or the new
// one, whole.

const (
	currentFile     = "store.current"
	defaultStoreDir = "store"
)

// liveStoreDir returns the name of the live store directory in dir and
// removes the leftovers of an interrupted install.
func liveStoreDir(dir string) (string, error) {
	live := defaultStoreDir
	data, err := os.ReadFile(filepath.Join(dir, currentFile))
	switch {
	case err == nil:
		live = strings.TrimSpace(string(data))
		if !isStoreDir(live) {
			return "", fmt.Errorf("cluster: %s names %q, not a store directory", currentFile, live)
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != live && isStoreDir(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return "", err
			}
		}
	}
	return live, nil
}

// isStoreDir reports whether name is one this package gives a store
// directory: "store" or "store-<digits>".
func isStoreDir(name string) bool {
	if name == defaultStoreDir {
		return true
	}
	rest, ok := strings.CutPrefix(name, defaultStoreDir+"-")
	if !ok || rest == "" {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// storeOptions are the options of the local store in directory name.
func (c *Cluster) storeOptions(name string) store.BadgerOptions {
	o := c.cfg.Store
	o.Dir = filepath.Join(c.cfg.Dir, name)
	o.Logger = c.log
	o.InMemory = false
	// The Raft log is the durable record: what the store loses in a
	// crash, the log applies again (store.BadgerOptions.Unsynced).
	o.Unsynced = true
	return o
}

// openStore opens the live local store. One that a machine crash left
// untrustworthy (store.ErrUnsyncedCrash: it was open without syncing its
// commits) is replaced by an empty one, which Raft fills again from the
// latest snapshot and the log (storeBehindSnapshot); the old directory
// is removed once the new one is named live.
func (c *Cluster) openStore() (*store.Badger, error) {
	db, err := store.OpenBadger(c.storeOptions(c.storeDir))
	if !errors.Is(err, store.ErrUnsyncedCrash) {
		return db, err
	}
	c.log.Warn("the local store was open without syncing when the machine stopped: rebuilding it from the raft log", "err", err)
	c.metrics.rebuilds.Inc()
	name := fmt.Sprintf("%s-%d", defaultStoreDir, time.Now().UnixNano())
	if db, err = store.OpenBadger(c.storeOptions(name)); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.cfg.Dir, currentFile), []byte(name+"\n"), 0o644); err != nil {
		db.Close()
		os.RemoveAll(filepath.Join(c.cfg.Dir, name))
		return nil, fmt.Errorf("cluster: switch to the rebuilt store: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(c.cfg.Dir, c.storeDir)); err != nil {
		c.log.Warn("removing the replaced store", "dir", c.storeDir, "err", err)
	}
	c.storeDir = name
	return db, nil
}

// restoreStore installs the snapshot stream r as the local store and
// returns its header. Readers wait for the swap only.
func (c *Cluster) restoreStore(r io.Reader) (store.SnapshotHeader, error) {
	name := fmt.Sprintf("%s-%d", defaultStoreDir, time.Now().UnixNano())
	opts := c.storeOptions(name)
	h, err := store.RestoreSnapshot(opts, r)
	if err != nil {
		os.RemoveAll(opts.Dir)
		return h, err
	}
	db, err := store.OpenBadger(opts)
	if err != nil {
		os.RemoveAll(opts.Dir)
		return h, fmt.Errorf("cluster: open the restored store: %w", err)
	}
	s := c.store
	s.mu.Lock()
	old, oldName := s.db, c.storeDir
	if err := atomicfile.Write(filepath.Join(c.cfg.Dir, currentFile), []byte(name+"\n"), 0o644); err != nil {
		s.mu.Unlock()
		db.Close()
		os.RemoveAll(opts.Dir)
		return h, fmt.Errorf("cluster: switch to the restored store: %w", err)
	}
	s.db, c.storeDir = db, name
	s.mu.Unlock()
	s.retire(old, filepath.Join(c.cfg.Dir, oldName)) // once no snapshot views it
	return h, nil
}
