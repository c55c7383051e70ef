package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// The context overlay and its checkpoints.
//
// Invariants:
//   - Every context changed by a commit after the checkpoint (keyCheckpoint)
//     is, once the commit is durable, in the overlay: its entry there is the
//     context's current state (nil: deleted). Its c key may be older, or
//     newer than the checkpoint (new contexts are also written at once).
//   - The log after keyCheckpoint is kept (CompactLog stops there): it is
//     what rebuilds the overlay after a restart.
//   - A checkpoint writes the overlay's entries (as of one commit) to their
//     c keys, then keyCheckpoint, then forgets the entries nobody changed
//     meanwhile.
//   - A reader that misses the overlay reads the c key, which then holds
//     the current state: an entry leaves the overlay only after its c key
//     was written. Readers that combine a view with the overlay take both
//     under the overlay's lock (view), so no checkpoint falls in between.
//   - At open, the log after keyCheckpoint and up to keyLast is replayed
//     (model.ReplayEntry) into the overlay, starting from the c keys; log
//     blocks past keyLast belong to a commit that never finished and are
//     deleted.

// overlay holds the contexts changed since the last checkpoint.
type overlay struct {
	mu      sync.RWMutex
	dirty   map[model.Path]*model.Context // nil: deleted
	applied uint64                        // the last commit reflected
	bytes   int                           // log bytes since the last checkpoint
	ck      uint64                        // the last checkpoint written
}

func (o *overlay) get(p model.Path) (*model.Context, bool) {
	o.mu.RLock()
	c, ok := o.dirty[p]
	o.mu.RUnlock()
	return c, ok
}

// commit records a durable batch and reports whether a checkpoint is due.
func (o *overlay) commit(b *model.Batch, last uint64, logBytes, maxContexts, maxBytes int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range b.Deleted {
		o.dirty[p] = nil
	}
	for _, cw := range b.Contexts {
		o.dirty[cw.Context.Path] = cw.Context
	}
	o.applied = last
	o.bytes += logBytes
	return len(o.dirty) >= maxContexts || o.bytes >= maxBytes
}

// overItem is one overlay entry (c nil: deleted).
type overItem struct {
	path model.Path
	c    *model.Context
}

// collect returns the entries whose path starts with prefix and is at
// least from, in path order. The caller holds o.mu.
func (o *overlay) collect(prefix, from string) []overItem {
	var out []overItem
	for p, c := range o.dirty {
		if strings.HasPrefix(string(p), prefix) && string(p) >= from {
			out = append(out, overItem{p, c})
		}
	}
	slices.SortFunc(out, func(a, b overItem) int { return strings.Compare(string(a.path), string(b.path)) })
	return out
}

// view opens a read transaction together with the overlay entries under
// prefix from from on, as of one point in time. The caller discards txn.
func (s *Badger) view(prefix, from string) (*badger.Txn, []overItem) {
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	return s.db.NewTransaction(false), s.ov.collect(prefix, from)
}

// scanContexts calls fn for each context with a key under prefix from
// seek on, in path order, taking a context from over (sorted, restricted
// to the same range) in place of its c key. It stops when fn returns
// false or an error.
func scanContexts(txn *badger.Txn, over []overItem, prefix, seek []byte, fn func(*model.Context) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	it.Seek(seek)
	for i := 0; ; {
		var (
			c   *model.Context
			key []byte
		)
		if it.Valid() {
			key = it.Item().Key()[1:]
		}
		switch {
		case i < len(over) && (key == nil || string(over[i].path) <= string(key)):
			if key != nil && string(over[i].path) == string(key) {
				it.Next()
			}
			c = over[i].c
			i++
			if c == nil {
				continue // deleted since the checkpoint
			}
		case key != nil:
			c = new(model.Context)
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, c) }); err != nil {
				return fmt.Errorf("decode context %s: %w", key, err)
			}
			it.Next()
		default:
			return nil
		}
		if more, err := fn(c); err != nil || !more {
			return err
		}
	}
}

// replay rebuilds the overlay from the log after the checkpoint and
// deletes the log blocks an unfinished commit left past the last sequence
// number.
func (s *Badger) replay() error {
	var stale [][]byte
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		ck, err := readSeq(txn, keyCheckpoint)
		if err != nil {
			return err
		}
		last, err := readSeq(txn, keyLast)
		if err != nil {
			return err
		}
		s.ov.applied, s.ov.ck = last, ck
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pBlock}, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Seek(blockKey(ck + 1)); it.Valid(); it.Next() {
			if binary.BigEndian.Uint64(it.Item().Key()[1:]) > last {
				stale = append(stale, it.Item().KeyCopy(nil))
				continue
			}
			err := it.Item().Value(func(v []byte) error {
				s.ov.bytes += len(v)
				return eachEntry(v, func(e *model.Entry, _ []byte) error {
					if e.Seq <= ck || e.Seq > last {
						return nil
					}
					n++
					return s.replayEntry(txn, e)
				})
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("change log replayed", "entries", n, "contexts", len(s.ov.dirty))
		s.wake <- struct{}{} // checkpoint soon
	}
	if len(stale) == 0 {
		return nil
	}
	s.log.Warn("dropping what an unfinished commit left", "keys", len(stale))
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range stale {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// replayEntry applies one logged entry to the overlay (at open).
func (s *Badger) replayEntry(txn *badger.Txn, e *model.Entry) error {
	p := e.Mutation.Path
	cur, ok := s.ov.dirty[p]
	if !ok {
		it, err := txn.Get(contextKey(p))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			cur = new(model.Context)
			if err := it.Value(func(v []byte) error { return model.Unmarshal(v, cur) }); err != nil {
				return fmt.Errorf("context %s: %w", p, err)
			}
		}
	}
	if next, changed := model.ReplayEntry(cur, e); changed {
		s.ov.dirty[p] = next
	}
	return nil
}

// valueLogGCInterval is how often the value log (log blocks, and any value
// of 1 KiB or more) is rewritten to reclaim what deleted values used: log
// blocks are garbage after each compaction of the log.
const valueLogGCInterval = time.Minute

// collectValueLog garbage-collects Badger's value log. Badger deletes a
// file as soon as it has moved the file's live values, without syncing
// them: while any iterator is open it defers the deletion instead, so
// one is held until the moved values are synced.
func (s *Badger) collectValueLog() error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pMeta}})
	n := 0
	for n < 16 && s.db.RunValueLogGC(0.5) == nil {
		n++ // one file rewritten; try the next
	}
	var err error
	if n > 0 {
		err = s.syncAll()
	}
	it.Close()
	return err
}

// checkpointer runs checkpoints when a commit asks and on a timer, and
// the value log's garbage collection.
func (s *Badger) checkpointer() {
	defer close(s.done)
	// The first tick comes at a random point of the interval, so that
	// nodes started together (tests, a cluster) do not checkpoint at once.
	first := time.NewTimer(rand.N(s.opts.CheckpointInterval) + 1)
	defer first.Stop()
	t := time.NewTicker(s.opts.CheckpointInterval)
	defer t.Stop()
	gc := time.NewTicker(valueLogGCInterval)
	defer gc.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-gc.C:
			if !s.opts.InMemory {
				if err := s.collectValueLog(); err != nil {
					s.log.Error("value log garbage collection failed", "err", err)
				}
			}
			continue
		case <-s.wake:
		case <-first.C:
			t.Reset(s.opts.CheckpointInterval)
		case <-t.C:
		}
		if err := s.Checkpoint(); err != nil {
			s.log.Error("checkpoint failed; the contexts stay in the overlay and the log", "err", err)
		}
	}
}

// A checkpoint writes checkpointChunk contexts per transaction and pauses
// checkpointPause between two.
const (
	checkpointChunk = 512
	checkpointPause = 2 * time.Millisecond
)

// Checkpoint writes the overlay's contexts to their own keys and records
// that the log up to the last commit need not be replayed. Commits go on
// meanwhile.
func (s *Badger) Checkpoint() error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	s.ov.mu.RLock()
	seq, written := s.ov.applied, s.ov.bytes
	items := make([]overItem, 0, len(s.ov.dirty))
	for p, c := range s.ov.dirty {
		items = append(items, overItem{p, c})
	}
	done := s.ov.ck
	s.ov.mu.RUnlock()
	if len(items) == 0 && seq == done {
		return nil
	}
	slices.SortFunc(items, func(a, b overItem) int { return strings.Compare(string(a.path), string(b.path)) })
	// Small transactions: Badger writes transactions one after another,
	// so commits queue behind each one; many small ones let them through.
	// The last one records the checkpoint.
	for start := 0; start == 0 || start < len(items); start += checkpointChunk {
		if start > 0 {
			// Leave the write path to commits for a moment: a checkpoint
			// is background work, a commit has callers waiting.
			select {
			case <-time.After(checkpointPause):
			case <-s.quit:
			}
		}
		chunk := items[start:min(start+checkpointChunk, len(items))]
		vals := make([][]byte, len(chunk))
		for i, it := range chunk {
			if it.c == nil {
				continue
			}
			v, err := model.Marshal(it.c)
			if err != nil {
				return fmt.Errorf("store: encode context %s: %w", it.path, err)
			}
			vals[i] = v
		}
		final := start+checkpointChunk >= len(items)
		err := s.logged(func(w *txnWriter) error {
			for i, it := range chunk {
				if err := reindex(w, it.path, it.c); err != nil {
					return err
				}
				if it.c == nil {
					if err := w.del(contextKey(it.path)); err != nil {
						return err
					}
				} else if err := w.set(contextKey(it.path), vals[i]); err != nil {
					return err
				}
			}
			if final {
				return w.set(keyCheckpoint, seqBytes(seq))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	s.ov.mu.Lock()
	for _, it := range items {
		if cur, ok := s.ov.dirty[it.path]; ok && cur == it.c {
			delete(s.ov.dirty, it.path)
		}
	}
	s.ov.bytes -= written
	s.ov.ck = seq
	s.ov.mu.Unlock()
	return nil
}
