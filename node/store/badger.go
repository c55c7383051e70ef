// Package store holds the implementations of model.Store: Badger (the
// embedded default) and PostgreSQL.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/strata-dm/strata/model"
)

// Interface guard.
var _ model.Store = (*Badger)(nil)

// Key layout. One byte of kind, then:
//
//	c <path>                     context (CBOR model.Context)
//	k <parent> 0x00 <name>       child index entry (CBOR model.Child)
//	l <seq:8 BE>                 change-log entry (CBOR model.Entry)
//	e <path> 0x00 <seq:8 BE>     event (CBOR model.Event)
//	r <kind> 0x00 <key>          node-local record (raw bytes)
//	m last | m first             last committed / first retained log seq
const (
	pContext = 'c'
	pChild   = 'k'
	pLog     = 'l'
	pEvent   = 'e'
	pRecord  = 'r'
	pMeta    = 'm'
)

var (
	keyLast  = []byte("mlast")
	keyFirst = []byte("mfirst")
)

// MaxEventsPerQuery caps one page of event history.
const MaxEventsPerQuery = 10000

// BadgerOptions configures the embedded store.
type BadgerOptions struct {
	Dir    string
	Logger *slog.Logger
	// EncryptionKey enables encryption at rest (16, 24 or 32 bytes).
	EncryptionKey []byte
	// CacheMB sizes the block cache (default 64).
	CacheMB int
	// InMemory keeps everything in memory (tests only; not durable).
	InMemory bool
}

// Badger is the embedded store. Every Commit is one Badger transaction
// written with SyncWrites, so it is durable when Commit returns; the model
// batches many callers' mutations into each Commit (group commit).
type Badger struct {
	db  *badger.DB
	log *slog.Logger
}

// OpenBadger opens (or creates) the store in opts.Dir. Badger holds an
// exclusive lock on the directory while open.
func OpenBadger(opts BadgerOptions) (*Badger, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheMB <= 0 {
		opts.CacheMB = 64
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(!opts.InMemory).
		WithLogger(badgerLogger{opts.Logger.With("component", "badger")}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(64 << 20).
		WithValueLogFileSize(256 << 20).
		WithValueThreshold(4 << 10).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithBlockCacheSize(int64(opts.CacheMB) << 20).
		WithIndexCacheSize(32 << 20).
		WithDetectConflicts(false)
	if len(opts.EncryptionKey) > 0 {
		switch len(opts.EncryptionKey) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("store: encryption key must be 16, 24 or 32 bytes, got %d", len(opts.EncryptionKey))
		}
		bo = bo.WithEncryptionKey(opts.EncryptionKey).WithEncryptionKeyRotationDuration(30 * 24 * time.Hour)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", opts.Dir, err)
	}
	return &Badger{db: db, log: opts.Logger.With("component", "store")}, nil
}

// Close flushes and closes the database. Closing twice is safe.
func (s *Badger) Close() error {
	if s.db.IsClosed() {
		return nil
	}
	return s.db.Close()
}

// DB exposes the Badger handle for benchmarks that compare against raw
// Badger writes.
func (s *Badger) DB() *badger.DB { return s.db }

func seqBytes(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func contextKey(p model.Path) []byte {
	return append([]byte{pContext}, p...)
}

func childKey(p model.Path) []byte {
	parent := p.Parent()
	k := make([]byte, 0, 2+len(p))
	k = append(k, pChild)
	k = append(k, parent...)
	k = append(k, 0)
	return append(k, p.Name()...)
}

func childPrefix(parent model.Path) []byte {
	k := append([]byte{pChild}, parent...)
	return append(k, 0)
}

func logKey(seq uint64) []byte { return append([]byte{pLog}, seqBytes(seq)...) }

func eventPrefix(p model.Path) []byte {
	k := append([]byte{pEvent}, p...)
	return append(k, 0)
}

func eventKey(p model.Path, seq uint64) []byte { return append(eventPrefix(p), seqBytes(seq)...) }

func recordPrefix(kind string) []byte {
	k := append([]byte{pRecord}, kind...)
	return append(k, 0)
}

func recordKey(kind, key string) []byte { return append(recordPrefix(kind), key...) }

// Commit writes the batch in one transaction, in the order the Batch
// contract gives (deletions, contexts, events, records, log). A batch too large for one
// Badger transaction is written in several, in an order that keeps the
// store consistent for readers at every point: state first, then the log
// entries and the last sequence number, which is written last of all.
func (s *Badger) Commit(b *model.Batch) error {
	w := &txnWriter{db: s.db}
	w.begin()
	// Deletions first: a context deleted and created again in one batch
	// loses its old events, then gets its new state.
	for _, p := range b.Deleted {
		if err := w.del(contextKey(p)); err != nil {
			return w.abort(err)
		}
		if err := w.del(childKey(p)); err != nil {
			return w.abort(err)
		}
		if err := w.delPrefix(eventPrefix(p)); err != nil {
			return w.abort(err)
		}
	}
	for _, cw := range b.Contexts {
		v, err := model.Marshal(cw.Context)
		if err != nil {
			return w.abort(fmt.Errorf("encode context %s: %w", cw.Context.Path, err))
		}
		if err := w.set(contextKey(cw.Context.Path), v); err != nil {
			return w.abort(err)
		}
		if cw.Index && !cw.Context.Path.IsRoot() {
			iv, err := model.Marshal(model.Child{Name: cw.Context.Path.Name(), Type: cw.Context.Type, Tenant: cw.Context.Tenant})
			if err != nil {
				return w.abort(err)
			}
			if err := w.set(childKey(cw.Context.Path), iv); err != nil {
				return w.abort(err)
			}
		}
	}
	for i := range b.Events {
		v, err := model.Marshal(&b.Events[i])
		if err != nil {
			return w.abort(err)
		}
		if err := w.set(eventKey(b.Events[i].Path, b.Events[i].Seq), v); err != nil {
			return w.abort(err)
		}
	}
	for _, r := range b.Records {
		if err := w.set(recordKey(r.Kind, r.Key), r.Value); err != nil {
			return w.abort(err)
		}
	}
	for _, r := range b.Dropped {
		if err := w.del(recordKey(r.Kind, r.Key)); err != nil {
			return w.abort(err)
		}
	}
	for i := range b.Entries {
		v, err := model.Marshal(&b.Entries[i])
		if err != nil {
			return w.abort(err)
		}
		if err := w.set(logKey(b.Entries[i].Seq), v); err != nil {
			return w.abort(err)
		}
	}
	if len(b.Entries) > 0 {
		if err := w.set(keyLast, seqBytes(b.LastSeq())); err != nil {
			return w.abort(err)
		}
	}
	return w.commit()
}

// txnWriter writes into one transaction, committing and starting another
// when Badger says the transaction is full.
type txnWriter struct {
	db    *badger.DB
	txn   *badger.Txn
	split int
}

func (w *txnWriter) begin() { w.txn = w.db.NewTransaction(true) }

func (w *txnWriter) set(k, v []byte) error {
	err := w.txn.Set(k, v)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.txn.Commit(); err != nil {
			return err
		}
		w.split++
		w.begin()
		return w.txn.Set(k, v)
	}
	return err
}

func (w *txnWriter) del(k []byte) error {
	err := w.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.txn.Commit(); err != nil {
			return err
		}
		w.split++
		w.begin()
		return w.txn.Delete(k)
	}
	return err
}

func (w *txnWriter) delPrefix(prefix []byte) error {
	var keys [][]byte
	err := w.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := w.del(k); err != nil {
			return err
		}
	}
	return nil
}

func (w *txnWriter) commit() error {
	if err := w.txn.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

func (w *txnWriter) abort(err error) error {
	w.txn.Discard()
	return fmt.Errorf("store: %w", err)
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

func readSeq(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var seq uint64
	err = it.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("store: corrupt sequence key %q", key)
		}
		seq = binary.BigEndian.Uint64(v)
		return nil
	})
	return seq, err
}

// Context reads one context.
func (s *Badger) Context(p model.Path) (*model.Context, error) {
	var c model.Context
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(contextKey(p))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: context %s", model.ErrNotFound, p)
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return model.Unmarshal(v, &c) })
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// Children lists p's direct children from the child index.
func (s *Badger) Children(p model.Path, after string, limit int) ([]model.Child, error) {
	if limit <= 0 {
		limit = 1000
	}
	prefix := childPrefix(p)
	start := prefix
	if after != "" {
		start = append(append([]byte(nil), prefix...), after...)
		start = append(start, 0) // first key strictly after
	}
	var out []model.Child
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			var c model.Child
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &c) }); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// Events reads p's history newest first.
func (s *Badger) Events(p model.Path, q model.EventQuery) ([]model.Event, error) {
	limit := q.Limit
	if limit <= 0 || limit > MaxEventsPerQuery {
		limit = min(max(limit, 100), MaxEventsPerQuery)
	}
	prefix := eventPrefix(p)
	before := q.Before
	if before == 0 {
		before = math.MaxUint64
	}
	var out []model.Event
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		// In reverse, Seek finds the largest key <= the seek key.
		for it.Seek(eventKey(p, before-1)); it.Valid() && len(out) < limit; it.Next() {
			var ev model.Event
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return err
			}
			if !q.Since.IsZero() && ev.Time.Before(q.Since) {
				break // older than Since: the rest is older still
			}
			if q.Level != "" && ev.Level != q.Level {
				continue
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// ReadLog reads entries after a cursor.
func (s *Badger) ReadLog(after uint64, limit int) ([]model.Entry, error) {
	if limit <= 0 {
		limit = 1024
	}
	var out []model.Entry
	err := s.db.View(func(txn *badger.Txn) error {
		first, err := readSeq(txn, keyFirst)
		if err != nil {
			return err
		}
		if first > 0 && after+1 < first {
			return fmt.Errorf("%w: cursor %d, oldest kept %d", model.ErrCompacted, after, first)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pLog}, PrefetchValues: true, PrefetchSize: min(limit, 256)})
		defer it.Close()
		for it.Seek(logKey(after + 1)); it.Valid() && len(out) < limit; it.Next() {
			var e model.Entry
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &e) }); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Record reads one node-local record.
func (s *Badger) Record(kind, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(recordKey(kind, key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: %s %q", model.ErrNotFound, kind, key)
		}
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	return out, err
}

// Records iterates the records of one kind in key order.
func (s *Badger) Records(kind string, fn func(key string, value []byte) error) error {
	prefix := recordPrefix(kind)
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(string(it.Item().Key()[len(prefix):]), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Snapshot walks a subtree from one read transaction.
func (s *Badger) Snapshot(prefix model.Path, fn func(*model.Context) error) (uint64, error) {
	var seq uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if seq, err = readSeq(txn, keyLast); err != nil {
			return err
		}
		kp := contextKey(prefix)
		if prefix.IsRoot() {
			kp = []byte{pContext}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kp, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			p := model.Path(it.Item().Key()[1:])
			if !p.Within(prefix) {
				continue // a sibling sharing the prefix bytes, e.g. /a-b for /a
			}
			var c model.Context
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &c) }); err != nil {
				return err
			}
			if err := fn(&c); err != nil {
				return err
			}
		}
		return nil
	})
	return seq, err
}

// CompactLog drops change-log entries so that at most keep remain, and
// records where the log now starts. It returns how many it dropped.
func (s *Badger) CompactLog(keep uint64) (int, error) {
	last, err := s.LastSeq()
	if err != nil || last <= keep {
		return 0, err
	}
	upTo := last - keep // drop seq <= upTo
	var first uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		first, err = readSeq(txn, keyFirst)
		return err
	}); err != nil {
		return 0, err
	}
	if first > upTo {
		return 0, nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pLog}})
		defer it.Close()
		for it.Seek(logKey(first)); it.Valid(); it.Next() {
			k := it.Item().Key()
			if binary.BigEndian.Uint64(k[1:]) > upTo {
				break
			}
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// The new start is written in the same write batch: readers see the
	// log start move at the latest when the entries are gone.
	if err := wb.Set(append([]byte(nil), keyFirst...), seqBytes(upTo+1)); err != nil {
		return 0, err
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	return n, nil
}

// PruneEvents drops events older than olderThan and all but the newest
// perContext events of each context. It returns how many it dropped.
func (s *Badger) PruneEvents(perContext int, olderThan time.Time) (int, error) {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pEvent}, Reverse: true, PrefetchValues: true})
		defer it.Close()
		var cur []byte
		count := 0
		for it.Seek([]byte{pEvent, 0xff}); it.Valid(); it.Next() {
			k := it.Item().Key()
			path := k[:len(k)-8]
			if !bytes.Equal(path, cur) {
				cur, count = append(cur[:0], path...), 0
			}
			count++
			drop := count > perContext
			if !drop {
				var ev model.Event
				if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
					return err
				}
				drop = ev.Time.Before(olderThan)
			}
			if drop {
				if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, wb.Flush()
}

// badgerLogger sends Badger's own logs to slog at a quieter level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   {}
