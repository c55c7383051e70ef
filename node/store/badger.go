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
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/strata-dm/strata/model"
)

// Interface guard.
var _ model.Store = (*Badger)(nil)

// Key layout. One byte of kind, then:
//
//	c <path>                     context as of the last checkpoint (CBOR model.Context)
//	k <parent> 0x00 <name>       child index entry (CBOR model.Child)
//	b <seq:8 BE>                 log block: the entries up to seq (CBOR sequence)
//	e <path> 0x00 <seq:8 BE>     event (CBOR model.Event)
//	w <seq:8 BE>                 notable event feed index (badger_feed.go)
//	W <tenant> 0x00 <seq:8 BE>   the same, per tenant
//	r <kind> 0x00 <key>          node-local record (raw bytes)
//	m last | m first             last committed / first retained log seq
//	m checkpoint                 last seq whose contexts are all in c keys
//	m raft-applied               last Raft log index applied (badger_replica.go)
//	x <term> <path>              search index posting (badger_search.go)
//	m search-index               the search index's version
//
// A commit writes its log entries, packed into blocks of a few kilobytes,
// and nothing per changed context: the contexts it changed are kept in
// memory (the overlay) and written to their c keys by a checkpoint, so a
// device updated a thousand times between two checkpoints costs one
// context write, and the log is the only thing fsynced per mutation.
// Reads consult the overlay first. At open, the log after the checkpoint
// is replayed into the overlay (model.ReplayEntry). badger_log.go holds
// the log blocks, badger_checkpoint.go the overlay.
//
// Stores written before blocks existed hold one l <seq:8 BE> key per log
// entry; they are converted at open (convertLegacyLog).
const (
	pContext = 'c'
	pChild   = 'k'
	pBlock   = 'b'
	pLegacy  = 'l'
	pEvent   = 'e'
	pRecord  = 'r'
	pMeta    = 'm'
)

var (
	keyLast       = []byte("mlast")
	keyFirst      = []byte("mfirst")
	keyCheckpoint = []byte("mcheckpoint")
	keyConverted  = []byte("mlegacy-converted")
)

// valueThreshold is the value size from which Badger keeps a value in its
// value log rather than in the LSM tree.
const valueThreshold = 1 << 10

// maxInMemoryValue bounds a value in an in-memory store (Badger's largest
// value threshold).
const maxInMemoryValue = 1 << 20

// walSyncEvery is how often the write-ahead log starts a new segment and
// deletes the old ones Badger holds durably.
const walSyncEvery = time.Second

// MaxEventsPerQuery caps one page of event history.
const MaxEventsPerQuery = 10000

// Checkpoint defaults: see BadgerOptions.
const (
	DefaultCheckpointContexts = 65536
	DefaultCheckpointBytes    = 64 << 20
	DefaultCheckpointInterval = 30 * time.Second
)

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
	// NoSync skips the fdatasync of each commit: an acknowledged write
	// can be lost on a machine crash. It exists only to measure what
	// syncing costs (tests/bench/fedprop -nosync); no configuration sets
	// it.
	NoSync bool
	// Unsynced skips the sync of each commit for a store whose caller
	// holds a durable log to apply again what it loses (a Raft
	// replica): see badger_unsynced.go.
	Unsynced bool

	// A checkpoint writes the contexts changed since the previous one to
	// their own keys. It runs when that many contexts are pending
	// (CheckpointContexts), when the log written since reaches
	// CheckpointBytes (it is what a restart replays), and at least every
	// CheckpointInterval while anything is pending. Zero values take the
	// defaults above.
	CheckpointContexts int
	CheckpointBytes    int
	CheckpointInterval time.Duration
}

// Badger is the embedded store. Every Commit is one record of the store's
// write-ahead log, synced before Commit returns, and one Badger
// transaction, written without syncing (badger_wal.go); the model batches
// many callers' mutations into each Commit (group commit).
type Badger struct {
	db   *badger.DB
	log  *slog.Logger
	opts BadgerOptions

	// commitMu serializes Commit, and makes Snapshot's view and overlay
	// copy one point in time.
	commitMu sync.Mutex
	ckptMu   sync.Mutex // one checkpoint at a time
	ov       overlay
	// wal is the write-ahead log (nil in memory); syncMu runs one
	// trimWAL at a time.
	wal     *wal
	syncMu  sync.Mutex
	walFull chan struct{} // asks the syncer to start a new segment now
	walDone chan struct{}

	wake chan struct{} // asks the checkpointer for a checkpoint now
	quit chan struct{}
	done chan struct{}
	// skipFinalCheckpoint leaves the overlay to the log at Close (tests
	// use it to see a restart replay it, as after kill -9).
	skipFinalCheckpoint bool
	// loseWrites discards each write after the write-ahead log has it
	// (tests: Badger losing its unsynced writes in a machine crash). The
	// search index's postings are rewritten from what Badger holds, so
	// they drift in this mode; search tests restore Badger's files as of
	// a sync instead (copyBadgerFiles).
	loseWrites bool
	// unsynced: commits are not synced (badger_unsynced.go).
	unsynced  bool
	closeOnce sync.Once
	closeErr  error
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
	if opts.CheckpointContexts <= 0 {
		opts.CheckpointContexts = DefaultCheckpointContexts
	}
	if opts.CheckpointBytes <= 0 {
		opts.CheckpointBytes = DefaultCheckpointBytes
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	bo, err := opts.badgerOptions()
	if err != nil {
		return nil, err
	}
	boot := ""
	if !opts.InMemory {
		boot = bootID()
		if err := checkUnsynced(opts.Dir, boot); err != nil {
			return nil, err
		}
	}
	unsynced := opts.Unsynced && !opts.InMemory && boot != ""
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", opts.Dir, err)
	}
	s := &Badger{db: db, log: opts.Logger.With("component", "store"), opts: opts,
		ov:   overlay{dirty: make(map[model.Path]*model.Context)},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		walFull: make(chan struct{}, 1), walDone: make(chan struct{})}
	if !opts.InMemory {
		if s.wal, err = openWAL(filepath.Join(opts.Dir, "wal"), opts.EncryptionKey, opts.NoSync || unsynced, s.log); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: open the write-ahead log in %s: %w", opts.Dir, err)
		}
		if err := s.replayWAL(); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: replay the write-ahead log in %s: %w", opts.Dir, err)
		}
	}
	if err := s.convertLegacyLog(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: convert the change log in %s: %w", opts.Dir, err)
	}
	if err := s.replay(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: replay the change log in %s: %w", opts.Dir, err)
	}
	if err := s.openSearchIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: build the search index in %s: %w", opts.Dir, err)
	}
	if err := s.openFeedIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: build the event feed index in %s: %w", opts.Dir, err)
	}
	// Everything written while opening is made durable, and the
	// write-ahead log emptied, before the first commit.
	if err := s.trimWAL(true); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: sync %s: %w", opts.Dir, err)
	}
	if !opts.InMemory {
		mark := unmarkUnsynced
		if unsynced {
			mark = func(dir string) error { return markUnsynced(dir, boot) }
		}
		if err := mark(opts.Dir); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
		s.unsynced = unsynced
	}
	go s.checkpointer()
	go s.syncer()
	return s, nil
}

// badgerOptions are the Badger options the store opens with.
func (opts BadgerOptions) badgerOptions() (badger.Options, error) {
	threshold := int64(valueThreshold)
	if opts.InMemory {
		threshold = maxInMemoryValue // no value log: every value stays in the tree
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		// The write-ahead log makes commits durable; Badger's own writes
		// become durable later (badger_wal.go).
		WithSyncWrites(false).
		WithLogger(badgerLogger{opts.Logger.With("component", "badger")}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(64 << 20).
		WithValueLogFileSize(256 << 20).
		// Log blocks (~16 KiB) go to the value log, an append-only file:
		// the LSM tree then holds only their pointers, which is what makes
		// a commit cheap to flush and compact. Contexts, child-index
		// entries, events and records (mostly under 1 KiB) stay inline.
		WithValueThreshold(threshold).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithBlockCacheSize(int64(opts.CacheMB) << 20).
		WithIndexCacheSize(32 << 20).
		WithDetectConflicts(false)
	if len(opts.EncryptionKey) > 0 {
		switch len(opts.EncryptionKey) {
		case 16, 24, 32:
		default:
			return bo, fmt.Errorf("store: encryption key must be 16, 24 or 32 bytes, got %d", len(opts.EncryptionKey))
		}
		bo = bo.WithEncryptionKey(opts.EncryptionKey).WithEncryptionKeyRotationDuration(30 * 24 * time.Hour)
	}
	return bo, nil
}

// Close writes a last checkpoint, then flushes and closes the database.
// Closing twice is safe.
func (s *Badger) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		<-s.walDone
		if !s.skipFinalCheckpoint {
			if err := s.Checkpoint(); err != nil {
				s.log.Error("final checkpoint failed; the next start replays the log", "err", err)
			}
		}
		synced := true
		if err := s.trimWAL(true); err != nil {
			synced = false
			s.log.Error("final sync failed; the next start replays the write-ahead log", "err", err)
		}
		s.closeErr = s.db.Close()
		if s.wal != nil {
			s.closeErr = errors.Join(s.closeErr, s.wal.close())
		}
		if s.unsynced && synced && s.closeErr == nil {
			s.closeErr = unmarkUnsynced(s.opts.Dir)
		}
	})
	return s.closeErr
}

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

func blockKey(seq uint64) []byte { return append([]byte{pBlock}, seqBytes(seq)...) }

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
// contract gives (deletions, contexts, events, records, log). Changed
// contexts go into the overlay, not to disk: the log entries that changed
// them are what makes them durable. A new context (or one whose type or
// tenant changed) is also written to its own key at once, so that it is
// found as soon as its child-index entry is. A batch too large for one
// Badger transaction is written in several, in an order that keeps the
// store consistent for readers at every point: state first, then the log
// entries and the last sequence number, which is written last of all (a
// restart drops log blocks past it).
func (s *Badger) Commit(b *model.Batch) error { return s.commit(b, 0) }

// commit is Commit; applied, when not 0, is written to keyApplied in the
// same write as the batch's last sequence number (badger_replica.go).
func (s *Badger) commit(b *model.Batch, applied uint64) error {
	last := b.LastSeq()
	if last == 0 && (len(b.Contexts) > 0 || len(b.Deleted) > 0) {
		return errors.New("store: a batch changes contexts without log entries")
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	w := s.writer(last)
	// Deletions first: a context deleted and created again in one batch
	// loses its old events, then gets its new state.
	for _, p := range b.Deleted {
		if err := reindex(w, p, nil); err != nil {
			return w.abort(err)
		}
		if err := w.del(contextKey(p)); err != nil {
			return w.abort(err)
		}
		if err := w.del(childKey(p)); err != nil {
			return w.abort(err)
		}
		if err := delEvents(w, p); err != nil { // badger_feed.go
			return w.abort(err)
		}
	}
	for _, cw := range b.Contexts {
		if !cw.Index {
			continue
		}
		v, err := model.Marshal(cw.Context)
		if err != nil {
			return w.abort(fmt.Errorf("encode context %s: %w", cw.Context.Path, err))
		}
		if err := reindex(w, cw.Context.Path, cw.Context); err != nil {
			return w.abort(err)
		}
		if err := w.set(contextKey(cw.Context.Path), v); err != nil {
			return w.abort(err)
		}
		if !cw.Context.Path.IsRoot() {
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
		if err := putFeed(w, &b.Events[i]); err != nil {
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
	logBytes, err := writeBlocks(w, b)
	if err != nil {
		return w.abort(err)
	}
	if last > 0 {
		if err := w.set(keyLast, seqBytes(last)); err != nil {
			return w.abort(err)
		}
	}
	if applied > 0 {
		if err := w.set(keyApplied, seqBytes(applied)); err != nil {
			return w.abort(err)
		}
		if err := w.set(keyAppliedBatch, seqBytes(b.ID)); err != nil {
			return w.abort(err)
		}
	}
	if err := s.finish(w); err != nil {
		return err
	}
	if s.wal != nil && s.wal.size >= walSegmentBytes {
		select {
		case s.walFull <- struct{}{}:
		default:
		}
	}
	if last > 0 && s.ov.commit(b, last, logBytes, s.opts.CheckpointContexts, s.opts.CheckpointBytes) {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// txnWriter writes into one transaction, committing and starting another
// when Badger says the transaction is full. With wal set, it also records
// each write in the write-ahead log's record being built.
type txnWriter struct {
	db    *badger.DB
	wal   *wal
	txn   *badger.Txn
	split int
	// counts holds the search index's count changes (addCount), written
	// by finish.
	counts map[string]int64
}

func (w *txnWriter) begin() { w.txn = w.db.NewTransaction(true) }

func (w *txnWriter) set(k, v []byte) error {
	if w.wal != nil {
		w.wal.set(k, v)
	}
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
	if w.wal != nil {
		w.wal.del(k)
	}
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

// Context reads one context: the overlay's state when the context changed
// since the last checkpoint, else its own key. The result is shared and
// must not be mutated.
func (s *Badger) Context(p model.Path) (*model.Context, error) {
	if c, ok := s.ov.get(p); ok {
		if c == nil {
			return nil, fmt.Errorf("%w: context %s", model.ErrNotFound, p)
		}
		return c, nil
	}
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

// Snapshot walks a subtree from one read transaction and the overlay as it
// was at that transaction's start.
func (s *Badger) Snapshot(prefix model.Path, fn func(*model.Context) error) (uint64, error) {
	s.commitMu.Lock() // no commit between the view and the overlay copy
	txn, over := s.view(string(prefix), "")
	s.commitMu.Unlock()
	defer txn.Discard()
	seq, err := readSeq(txn, keyLast)
	if err != nil {
		return 0, err
	}
	kp := contextKey(prefix)
	if prefix.IsRoot() {
		kp = []byte{pContext}
	}
	err = scanContexts(txn, over, kp, kp, func(c *model.Context) (bool, error) {
		if !c.Path.Within(prefix) {
			return true, nil // a sibling sharing the prefix bytes, e.g. /a-b for /a
		}
		return true, fn(c)
	})
	return seq, err
}

// PruneEvents drops events older than olderThan and all but the newest
// perContext events of each context. It returns how many it dropped.
func (s *Badger) PruneEvents(perContext int, olderThan time.Time) (int, error) {
	var keys [][]byte
	dropped := 0
	err := s.prunable(perContext, olderThan, func(ev *model.Event, key []byte) bool {
		// Feed keys first: a prune cut short leaves an event out of the
		// feed, never a feed key without its event.
		keys = append(keys, feedKeys(ev)...)
		keys = append(keys, key)
		dropped++
		return true
	})
	if err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	return dropped, s.deleteLogged(keys, nil)
}

// prunable calls fn with each event PruneEvents would drop (and a copy of
// its key), contexts in reverse key order and each context's events
// newest first, while fn returns true.
func (s *Badger) prunable(perContext int, olderThan time.Time, fn func(ev *model.Event, key []byte) bool) error {
	return s.db.View(func(txn *badger.Txn) error {
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
			// Every event is decoded: a dropped notable one takes its
			// feed keys along.
			var ev model.Event
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return err
			}
			if (count > perContext || ev.Time.Before(olderThan)) && !fn(&ev, it.Item().KeyCopy(nil)) {
				return nil
			}
		}
		return nil
	})
}

// deleteChunk bounds the keys of one deletion record and transaction.
const deleteChunk = 4096

// deleteLogged deletes keys through the write-ahead log, deleteChunk at a
// time; then, in the last transaction, runs then if it is set.
func (s *Badger) deleteLogged(keys [][]byte, then func(w *txnWriter) error) error {
	for start := 0; start == 0 || start < len(keys); start += deleteChunk {
		chunk := keys[start:min(start+deleteChunk, len(keys))]
		final := start+deleteChunk >= len(keys)
		err := s.logged(func(w *txnWriter) error {
			for _, k := range chunk {
				if err := w.del(k); err != nil {
					return err
				}
			}
			if final && then != nil {
				return then(w)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// badgerLogger sends Badger's own logs to slog at a quieter level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   {}
