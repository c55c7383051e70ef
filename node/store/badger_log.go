package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// The change log in Badger: consecutive entries packed into blocks of
// about blockTarget bytes, each under the key of its last entry's sequence
// number. Blocks of 1 KiB and more (all but those of small commits) live
// in Badger's value log; the LSM tree holds their keys and pointers. Seeking to
// blockKey(n) finds the block holding entry n, because every block ends at
// or after the entries it holds.

// blockTarget is the size at which a block is closed.
const blockTarget = 16 << 10

// writeBlocks packs b's entries into blocks and returns how many bytes
// they hold.
func writeBlocks(w *txnWriter, b *model.Batch) (int, error) {
	blocks, err := encodeBlocks(b)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range blocks {
		n += len(b.value)
	}
	return n, setBlocks(w, blocks)
}

// block is one encoded log block and its key.
type block struct{ key, value []byte }

// encodeBlocks packs b's entries (in sequence order) into blocks, using
// their encodings when the batch carries them. Each block is allocated at
// its final size: most commits are far smaller than a block.
func encodeBlocks(b *model.Batch) ([]block, error) {
	encs := make([][]byte, len(b.Entries))
	for i := range b.Entries {
		enc, err := b.EncodedEntry(i)
		if err != nil {
			return nil, fmt.Errorf("encode entry %d: %w", b.Entries[i].Seq, err)
		}
		encs[i] = enc
	}
	var out []block
	for first := 0; first < len(encs); {
		end, size := first, 0
		for end < len(encs) && (size < blockTarget || end == first) {
			size += len(encs[end])
			end++
		}
		blk := make([]byte, 0, size)
		for _, enc := range encs[first:end] {
			blk = append(blk, enc...)
		}
		out = append(out, block{blockKey(b.Entries[end-1].Seq), blk})
		first = end
	}
	return out, nil
}

func setBlocks(w *txnWriter, blocks []block) error {
	for _, b := range blocks {
		if err := w.set(b.key, b.value); err != nil {
			return err
		}
	}
	return nil
}

// eachEntry calls fn with each entry of a block and its encoded bytes
// (which alias blk).
func eachEntry(blk []byte, fn func(e *model.Entry, raw []byte) error) error {
	for len(blk) > 0 {
		var e model.Entry
		rest, err := model.UnmarshalFirst(blk, &e)
		if err != nil {
			return fmt.Errorf("store: corrupt log block: %w", err)
		}
		if err := fn(&e, blk[:len(blk)-len(rest)]); err != nil {
			return err
		}
		blk = rest
	}
	return nil
}

// LastSeq returns the last committed sequence number.
func (s *Badger) LastSeq() (uint64, error) {
	var last uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		last, err = readSeq(txn, keyLast)
		return err
	})
	return last, err
}

// ReadLog reads entries after a cursor.
func (s *Badger) ReadLog(after uint64, limit int) ([]model.Entry, error) {
	limit = logLimit(limit)
	var out []model.Entry
	err := s.logBlocks(after, limit, func(blk []byte) (bool, error) {
		for len(blk) > 0 && len(out) < limit {
			var e model.Entry
			rest, err := model.UnmarshalFirst(blk, &e)
			if err != nil {
				return false, fmt.Errorf("store: corrupt log block: %w", err)
			}
			if e.Seq > after {
				out = append(out, e)
			}
			blk = rest
		}
		return len(out) < limit, nil
	})
	return out, err
}

// ReadLogRaw reads entries after a cursor as they are stored.
func (s *Badger) ReadLogRaw(after uint64, limit int) ([]model.RawEntry, error) {
	limit = logLimit(limit)
	var out []model.RawEntry
	err := s.logBlocks(after, limit, func(blk []byte) (bool, error) {
		blk = bytes.Clone(blk) // the entries alias it
		for len(blk) > 0 && len(out) < limit {
			r, rest, err := model.EntryHead(blk)
			if err != nil {
				return false, fmt.Errorf("store: corrupt log block: %w", err)
			}
			if r.Seq > after {
				out = append(out, r)
			}
			blk = rest
		}
		return len(out) < limit, nil
	})
	return out, err
}

func logLimit(limit int) int {
	if limit <= 0 {
		return 1024
	}
	return limit
}

// logBlocks calls fn with each log block that may hold entries after the
// cursor, in order, from one read transaction, while fn asks for more. The
// block is valid during the call only. A cursor before the log's start
// is ErrCompacted.
func (s *Badger) logBlocks(after uint64, limit int, fn func(blk []byte) (bool, error)) error {
	return s.db.View(func(txn *badger.Txn) error {
		first, err := readSeq(txn, keyFirst)
		if err != nil {
			return err
		}
		if first > 0 && after+1 < first {
			return fmt.Errorf("%w: cursor %d, oldest kept %d", model.ErrCompacted, after, first)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pBlock}, PrefetchValues: true, PrefetchSize: min(limit/16+1, 64)})
		defer it.Close()
		more := true
		for it.Seek(blockKey(after + 1)); it.Valid() && more; it.Next() {
			if err := it.Item().Value(func(v []byte) error { more, err = fn(v); return err }); err != nil {
				return err
			}
		}
		return nil
	})
}

// CompactLog drops change-log entries so that at most keep remain, and
// records where the log now starts. It returns how many entries it made
// unavailable. Whole blocks go; a block holding entries on both sides of
// the new start stays until a later compaction passes it.
func (s *Badger) CompactLog(keep uint64) (int, error) {
	last, err := s.LastSeq()
	if err != nil || last <= keep {
		return 0, err
	}
	return s.compactLogTo(last-keep, nil) // drop seq <= last-keep
}

// compactLogTo drops the change-log entries up to upTo (at most up to the
// last); then, if set, runs in its last write (which happens even when
// nothing is dropped).
func (s *Badger) compactLogTo(upTo uint64, then func(w *txnWriter) error) (int, error) {
	last, err := s.LastSeq()
	if err != nil {
		return 0, err
	}
	upTo = min(upTo, last)
	// The log after the checkpoint is what a restart replays: checkpoint
	// first when the compaction would pass it.
	s.ov.mu.RLock()
	ck := s.ov.ck
	s.ov.mu.RUnlock()
	if ck < upTo {
		if err := s.Checkpoint(); err != nil {
			return 0, err
		}
		s.ov.mu.RLock()
		ck = s.ov.ck
		s.ov.mu.RUnlock()
	}
	upTo = min(upTo, ck)
	var first uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		first, err = readSeq(txn, keyFirst)
		return err
	}); err != nil {
		return 0, err
	}
	first = max(first, 1)
	if first > upTo {
		if then != nil {
			return 0, s.deleteLogged(nil, then)
		}
		return 0, nil
	}
	var keys [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pBlock}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if binary.BigEndian.Uint64(k[1:]) > upTo {
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// The new start is written with the last deletions: readers see the
	// log start move at the latest when the entries are gone.
	err = s.deleteLogged(keys, func(w *txnWriter) error {
		if then != nil {
			if err := then(w); err != nil {
				return err
			}
		}
		return w.set(keyFirst, seqBytes(upTo+1))
	})
	if err != nil {
		return 0, err
	}
	return int(upTo - first + 1), nil
}

// convertLegacyLog packs the one-key-per-entry log of a store written by an
// earlier version into blocks. It survives being interrupted: the blocks
// are written first, then keyConverted, then the old keys are deleted; an
// interrupted run without keyConverted starts over from the old keys,
// which are all still there.
func (s *Badger) convertLegacyLog() error {
	var legacy, converted bool
	if err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pLegacy}})
		defer it.Close()
		it.Rewind()
		legacy = it.Valid()
		_, err := txn.Get(keyConverted)
		converted = err == nil
		if errors.Is(err, badger.ErrKeyNotFound) {
			err = nil
		}
		return err
	}); err != nil || !legacy && !converted {
		return err
	}
	if !converted {
		s.log.Info("converting the change log to blocks")
		if err := s.dropPrefix([]byte{pBlock}); err != nil {
			return err
		}
		n, err := s.packLegacy()
		if err != nil {
			return err
		}
		// Each step is durable before the next one relies on it (Badger is
		// written without syncing).
		if err := s.syncAll(); err != nil {
			return err
		}
		// The old layout wrote every context to its own key at once: the
		// whole log is checkpointed already.
		err = s.db.Update(func(txn *badger.Txn) error {
			last, err := readSeq(txn, keyLast)
			if err != nil {
				return err
			}
			if err := txn.Set(keyCheckpoint, seqBytes(last)); err != nil {
				return err
			}
			return txn.Set(keyConverted, nil)
		})
		if err != nil {
			return err
		}
		if err := s.syncAll(); err != nil {
			return err
		}
		s.log.Info("change log converted", "entries", n)
	}
	if err := s.dropPrefix([]byte{pLegacy}); err != nil {
		return err
	}
	if err := s.syncAll(); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyConverted) })
}

// packLegacy writes blocks holding the entries of the l keys.
func (s *Badger) packLegacy() (int, error) {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	var blk []byte
	var seq uint64
	flush := func() error {
		if len(blk) == 0 {
			return nil
		}
		err := wb.Set(blockKey(seq), blk)
		blk = nil
		return err
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pLegacy}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 9 {
				return fmt.Errorf("malformed log key %q", k)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var e model.Entry
			if err := model.Unmarshal(v, &e); err != nil || e.Seq != binary.BigEndian.Uint64(k[1:]) {
				return fmt.Errorf("log key %d holds no entry of that number (%v)", binary.BigEndian.Uint64(k[1:]), err)
			}
			blk, seq = append(blk, v...), e.Seq
			n++
			if len(blk) >= blockTarget {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
	if err != nil {
		return 0, err
	}
	return n, wb.Flush()
}

// dropPrefix deletes every key starting with prefix, in write batches.
func (s *Badger) dropPrefix(prefix []byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
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
