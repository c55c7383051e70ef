package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"

	"github.com/strata-dm/strata/model"
)

// The context overlay and its checkpoints.
//
// Invariants:
//   - Every context changed by a commit after the checkpoint (keyCheckpoint)
//     is in a delta key of that commit, and, once the commit is durable, in
//     the overlay. The overlay's entry is the context's current state (nil:
//     deleted); its c key may be older, or even newer than the checkpoint.
//   - A checkpoint writes the overlay's entries (as of one commit) to their
//     c keys, then keyCheckpoint, then forgets the entries nobody changed
//     meanwhile. Deltas at or below keyCheckpoint are garbage and go.
//   - A reader that misses the overlay reads the c key, which then holds
//     the current state: an entry leaves the overlay only after its c key
//     was written. Readers that combine a view with the overlay take both
//     under the overlay's lock (view), so no checkpoint falls in between.
//   - At open, the deltas after keyCheckpoint and up to keyLast are read
//     back into the overlay, in commit order; deltas and log blocks past
//     keyLast belong to a commit that never finished and are deleted.

// overlay holds the contexts changed since the last checkpoint.
type overlay struct {
	mu      sync.RWMutex
	dirty   map[model.Path]*model.Context // nil: deleted
	applied uint64                        // the last commit reflected
	bytes   int                           // delta bytes since the last checkpoint
}

func (o *overlay) get(p model.Path) (*model.Context, bool) {
	o.mu.RLock()
	c, ok := o.dirty[p]
	o.mu.RUnlock()
	return c, ok
}

// commit records a durable batch and reports whether a checkpoint is due.
func (o *overlay) commit(b *model.Batch, last uint64, deltaBytes, maxContexts, maxBytes int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range b.Deleted {
		o.dirty[p] = nil
	}
	for _, cw := range b.Contexts {
		o.dirty[cw.Context.Path] = cw.Context
	}
	o.applied = last
	o.bytes += deltaBytes
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

// deltaRecord is one context in a delta key; no Context means deleted.
type deltaRecord struct {
	Path    model.Path      `cbor:"1,keyasint"`
	Context cbor.RawMessage `cbor:"2,keyasint,omitempty"`
}

// deltaWriter packs one commit's changed contexts into delta keys. Each
// record is written by hand as the CBOR map deltaRecord decodes (keys 1
// and 2), so that the context is encoded once, straight into the delta.
type deltaWriter struct {
	seq   uint64
	part  uint32
	buf   *bytes.Buffer
	bytes int
}

// add appends p's state (nil: deleted) and returns c's encoding, which
// stays valid after later adds.
func (d *deltaWriter) add(w *txnWriter, p model.Path, c *model.Context) ([]byte, error) {
	if d.buf == nil {
		d.buf = bytes.NewBuffer(make([]byte, 0, blockTarget+blockTarget/2))
	}
	n := 1
	if c != nil {
		n = 2
	}
	d.buf.WriteByte(0xa0 | byte(n)) // map of n pairs
	d.buf.WriteByte(0x01)
	if err := model.MarshalTo(d.buf, string(p)); err != nil {
		return nil, err
	}
	var enc []byte
	if c != nil {
		d.buf.WriteByte(0x02)
		start := d.buf.Len()
		if err := model.MarshalTo(d.buf, c); err != nil {
			return nil, fmt.Errorf("encode context %s: %w", p, err)
		}
		enc = d.buf.Bytes()[start:]
	}
	if d.buf.Len() >= blockTarget {
		return enc, d.flush(w)
	}
	return enc, nil
}

func (d *deltaWriter) flush(w *txnWriter) error {
	if d.buf == nil || d.buf.Len() == 0 {
		return nil
	}
	if err := w.set(deltaKey(d.seq, d.part), d.buf.Bytes()); err != nil {
		return err
	}
	d.part++
	d.bytes += d.buf.Len()
	d.buf = nil
	return nil
}

// replay reads the deltas after the checkpoint back into the overlay and
// deletes what an unfinished commit left past the last sequence number.
func (s *Badger) replay() error {
	var stale [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		ck, err := readSeq(txn, keyCheckpoint)
		if err != nil {
			return err
		}
		last, err := readSeq(txn, keyLast)
		if err != nil {
			return err
		}
		s.ov.applied = last
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pDelta}, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(deltaKey(ck+1, 0)); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 13 {
				return fmt.Errorf("malformed delta key %q", k)
			}
			if binary.BigEndian.Uint64(k[1:9]) > last {
				stale = append(stale, it.Item().KeyCopy(nil))
				continue
			}
			err := it.Item().Value(func(v []byte) error {
				s.ov.bytes += len(v)
				return s.ov.load(v)
			})
			if err != nil {
				return fmt.Errorf("delta %d: %w", binary.BigEndian.Uint64(k[1:9]), err)
			}
		}
		bt := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pBlock}})
		defer bt.Close()
		for bt.Seek(blockKey(last + 1)); bt.Valid(); bt.Next() {
			stale = append(stale, bt.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil || len(stale) == 0 {
		if len(s.ov.dirty) > 0 {
			s.log.Info("contexts read back from deltas", "contexts", len(s.ov.dirty), "bytes", s.ov.bytes)
			s.wake <- struct{}{}
		}
		return err
	}
	s.log.Warn("dropping what an unfinished commit left", "keys", len(stale))
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range stale {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	if len(s.ov.dirty) > 0 {
		s.wake <- struct{}{}
	}
	return wb.Flush()
}

// load applies one delta value to the overlay (at open, single-threaded).
func (o *overlay) load(v []byte) error {
	for len(v) > 0 {
		var r deltaRecord
		rest, err := model.UnmarshalFirst(v, &r)
		if err != nil {
			return err
		}
		v = rest
		if len(r.Context) == 0 {
			o.dirty[r.Path] = nil
			continue
		}
		c := new(model.Context)
		if err := model.Unmarshal(r.Context, c); err != nil {
			return err
		}
		if c.Path != r.Path {
			return fmt.Errorf("delta of %s holds context %s", r.Path, c.Path)
		}
		o.dirty[r.Path] = c
	}
	return nil
}

// valueLogGCInterval is how often the value log (log blocks and deltas,
// and any value of 1 KiB or more) is rewritten to reclaim what deleted
// values used: deltas are garbage after each checkpoint, log blocks after
// each compaction of the log.
const valueLogGCInterval = time.Minute

// checkpointer runs checkpoints when a commit asks and on a timer, and
// the value log's garbage collection.
func (s *Badger) checkpointer() {
	defer close(s.done)
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
				n := 0
				for n < 16 && s.db.RunValueLogGC(0.5) == nil {
					n++ // one file rewritten; try the next
				}
			}
			continue
		case <-s.wake:
		case <-t.C:
		}
		if err := s.Checkpoint(); err != nil {
			s.log.Error("checkpoint failed; the contexts stay in the overlay and deltas", "err", err)
		}
	}
}

// checkpointChunk is how many contexts a checkpoint writes per transaction.
const checkpointChunk = 256

// Checkpoint writes the overlay's contexts to their own keys and drops the
// deltas that held them. Commits go on meanwhile.
func (s *Badger) Checkpoint() error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	s.ov.mu.RLock()
	seq, written := s.ov.applied, s.ov.bytes
	items := make([]overItem, 0, len(s.ov.dirty))
	for p, c := range s.ov.dirty {
		items = append(items, overItem{p, c})
	}
	s.ov.mu.RUnlock()
	if len(items) == 0 {
		return nil
	}
	slices.SortFunc(items, func(a, b overItem) int { return strings.Compare(string(a.path), string(b.path)) })
	// Small transactions: Badger writes transactions one after another,
	// so commits queue behind each one; many small ones let them through.
	w := &txnWriter{db: s.db}
	w.begin()
	for i, it := range items {
		if i > 0 && i%checkpointChunk == 0 {
			if err := w.commit(); err != nil {
				return err
			}
			w.begin()
		}
		if it.c == nil {
			if err := w.del(contextKey(it.path)); err != nil {
				return w.abort(err)
			}
			continue
		}
		v, err := model.Marshal(it.c)
		if err != nil {
			return w.abort(fmt.Errorf("encode context %s: %w", it.path, err))
		}
		if err := w.set(contextKey(it.path), v); err != nil {
			return w.abort(err)
		}
	}
	if err := w.set(keyCheckpoint, seqBytes(seq)); err != nil {
		return w.abort(err)
	}
	if err := w.commit(); err != nil {
		return err
	}
	s.ov.mu.Lock()
	for _, it := range items {
		if cur, ok := s.ov.dirty[it.path]; ok && cur == it.c {
			delete(s.ov.dirty, it.path)
		}
	}
	s.ov.bytes -= written
	s.ov.mu.Unlock()
	return s.dropDeltas(seq)
}

// dropDeltas deletes the delta keys of commits up to seq.
func (s *Badger) dropDeltas(seq uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pDelta}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) == 13 && binary.BigEndian.Uint64(k[1:9]) > seq {
				break
			}
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return wb.Flush()
}
