package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// Interface guards.
var (
	_ model.Replicated   = (*Store)(nil)
	_ model.Pipelined    = (*Store)(nil)
	_ model.RawLogReader = (*Store)(nil)
	_ raft.FSM           = (*fsm)(nil)
)

// ErrNotLeader is returned by a commit on a replica that is not the
// leader, or is a leader not yet caught up with the log after its
// election: the write must go to the leader. It is model.ErrNotLeader,
// which the API answers 503.
var ErrNotLeader = model.ErrNotLeader

// ErrStale is the outcome of a batch that was not built on the state the
// log had reached when it was applied (another replica wrote meanwhile,
// during a change of leader): no replica applied it. It is an
// ErrNotLeader: the write did not happen, and is to be tried again.
var ErrStale = fmt.Errorf("%w: the batch was built on a stale state", ErrNotLeader)

// ErrBroken is returned once the local store failed to apply a committed
// entry: the replica stops applying (a restart resumes after the last
// index it applied).
var ErrBroken = errors.New("cluster: the local store failed to apply the log")

// Store is the model.Store of a replica. Reads go to the local Badger
// store. Commit, on the leader, proposes the batch as one Raft log entry
// and returns once a quorum has it and the leader applied it; every
// replica's state machine (fsm) applies the same batch to its own store,
// with the entry's index in the same write, and tells its model
// (model.Replica), so every replica holds the same change log with the
// same sequence numbers.
//
// The lock guards db, which only the state machine replaces (Restore):
// readers hold it shared for the length of their call. A Raft snapshot
// holds no lock: it counts as a view of its store (views), and a store
// Restore replaced is closed, and its directory removed, once its last
// view is released. (Raft may ask the main loop for the configuration
// while it holds a snapshot, and the main loop may be installing the
// leader's snapshot, waiting for Restore: a lock held by the snapshot
// until its release would deadlock the replica.)
type Store struct {
	c  *Cluster
	mu sync.RWMutex
	db *store.Badger

	// vmu guards views and retired.
	vmu     sync.Mutex
	views   map[*store.Badger]int    // snapshot views open on each store
	retired map[*store.Badger]string // stores replaced while viewed: their directory

	// pmu guards pending and replica.
	pmu     sync.Mutex
	pending []*pending
	replica model.Replica
}

// pending is a batch this replica proposed, until its Commit returns.
// The state machine recognises it by its encoding and applies the batch
// as given instead of decoding it.
type pending struct {
	data  []byte
	batch *model.Batch
	taken bool          // the state machine is applying it
	done  chan struct{} // closed once applied (err set)
	err   error
}

// Attach implements model.Replicated.
func (s *Store) Attach(r model.Replica) {
	s.pmu.Lock()
	s.replica = r
	s.pmu.Unlock()
}

// MaxInFlight implements model.Pipelined: the batches a leader keeps
// proposed and not yet applied (Config.MaxInFlight).
func (s *Store) MaxInFlight() int { return s.c.cfg.MaxInFlight }

// Commit proposes b and waits until it is committed and applied here.
func (s *Store) Commit(b *model.Batch) error {
	wait, err := s.Propose(b)
	if err != nil {
		return err
	}
	return wait()
}

// Propose implements model.Pipelined: it hands b to Raft's leader loop,
// which appends it to the log after every batch proposed before, and
// returns once the loop took it (up to ApplyTimeout, while the loop
// finishes its previous append); wait returns once b is committed and
// applied here, or failed.
func (s *Store) Propose(b *model.Batch) (wait func() error, err error) {
	r := s.c.raft()
	if r == nil || !s.c.leaderReady() {
		return nil, s.c.notLeader()
	}
	data, err := encodeBatch(b)
	if err != nil {
		return nil, err
	}
	p := &pending{data: data, batch: b, done: make(chan struct{})}
	s.pmu.Lock()
	s.pending = append(s.pending, p)
	s.pmu.Unlock()
	start := time.Now()
	fut := r.Apply(data, s.c.cfg.ApplyTimeout)
	return func() error { return s.outcome(p, s.c.await(fut), start) }, nil
}

// outcome is the outcome of the proposal p, whose future ended with ferr.
func (s *Store) outcome(p *pending, ferr error, start time.Time) error {
	s.pmu.Lock()
	taken := p.taken
	if !taken {
		s.drop(p)
	}
	s.pmu.Unlock()
	if taken {
		// Applied here, whatever the proposal's future says (a leader
		// deposed right after its entry was committed).
		<-p.done
		if p.err == nil {
			s.c.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		}
		return p.err
	}
	switch {
	case ferr == nil:
		return fmt.Errorf("cluster: entry committed but not applied here")
	case errors.Is(ferr, raft.ErrNotLeader), errors.Is(ferr, raft.ErrLeadershipLost),
		errors.Is(ferr, raft.ErrLeadershipTransferInProgress), errors.Is(ferr, raft.ErrRaftShutdown),
		errors.Is(ferr, raft.ErrEnqueueTimeout):
		// The outcome is unknown to the caller only in the sense that a
		// new leader may still commit the entry; if it does, every
		// replica applies it (as a batch proposed elsewhere).
		return fmt.Errorf("%w: %v", s.c.notLeader(), ferr)
	}
	return fmt.Errorf("cluster: commit: %w", ferr)
}

// drop removes p from pending; the caller holds pmu.
func (s *Store) drop(p *pending) {
	for i, q := range s.pending {
		if q == p {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			return
		}
	}
}

// take returns the pending batch encoded as data, marked as being
// applied, or nil.
func (s *Store) take(data []byte) *pending {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, p := range s.pending {
		if !p.taken && bytes.Equal(p.data, data) {
			p.taken = true
			s.drop(p)
			return p
		}
	}
	return nil
}

func (s *Store) publisher() model.Replica {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.replica
}

// The reads: the local store, under the shared lock.

func (s *Store) LastSeq() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.LastSeq()
}

func (s *Store) Context(p model.Path) (*model.Context, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Context(p)
}

func (s *Store) Children(p model.Path, after string, limit int) ([]model.Child, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Children(p, after, limit)
}

func (s *Store) Events(p model.Path, q model.EventQuery) ([]model.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Events(p, q)
}

func (s *Store) ReadLog(after uint64, limit int) ([]model.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.ReadLog(after, limit)
}

func (s *Store) ReadLogRaw(after uint64, limit int) ([]model.RawEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.ReadLogRaw(after, limit)
}

func (s *Store) Record(kind, key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Record(kind, key)
}

func (s *Store) Records(kind string, fn func(key string, value []byte) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Records(kind, fn)
}

func (s *Store) Snapshot(prefix model.Path, fn func(*model.Context) error) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Snapshot(prefix, fn)
}

// Badger returns the local store (tests, inspection). The result is
// valid until the replica installs a snapshot.
func (s *Store) Badger() *store.Badger {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db
}

// Event pruning and log compaction are replicated (retention.go).

// Search searches the local store's index.
func (s *Store) Search(ctx context.Context, q model.SearchQuery) (model.SearchPage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Search(ctx, q)
}

// Close is a no-op: the Cluster owns the local store and closes it.
func (s *Store) Close() error { return nil }

// fsm is the replica's Raft state machine. Apply, Snapshot and Restore
// run on Raft's one FSM goroutine; only they change applied, lastSeq and
// broken, and only Restore replaces the store.
type fsm struct {
	s       *Store
	c       *Cluster
	applied uint64 // the last index the local store holds
	lastSeq uint64 // the store's last sequence number
	lastID  uint64 // the ID of the batch applied at applied
	broken  error
}

// Apply applies one committed log entry. An entry at or below the index
// the store holds was applied before a restart and is skipped. A batch
// whose first sequence number does not follow the store's last is
// refused (ErrStale) by every replica alike, so the change log never
// forks; so is a batch built on another still in flight (After) unless
// that one is the last batch applied: its sequence numbers could follow
// a batch of another leader by chance.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if l.Index <= f.applied {
		f.c.skipped.Add(1)
		return nil
	}
	if len(l.Data) > 0 && l.Data[0] != entryBatch && l.Data[0] != entryChained {
		return f.applyRetention(l) // retention.go
	}
	p := f.s.take(l.Data)
	err := f.apply(l, p)
	if p != nil {
		p.err = err
		close(p.done)
	}
	return err
}

func (f *fsm) apply(l *raft.Log, p *pending) error {
	if f.broken != nil {
		return f.broken
	}
	if len(l.Data) == 0 {
		return ErrBadEntry
	}
	if kind := l.Data[0]; kind != entryBatch && kind != entryChained {
		f.c.log.Error("log entry of an unknown kind: this replica runs an older binary than the leader", "index", l.Index, "kind", l.Data[0])
		return f.fail(fmt.Errorf("%w %d at index %d", ErrUnknownEntry, l.Data[0], l.Index))
	}
	var b *model.Batch
	if p != nil {
		b = p.batch
	} else {
		var err error
		if b, err = decodeBatch(l.Data[0], l.Data[1:]); err != nil {
			f.c.log.Error("log entry does not decode", "index", l.Index, "err", err)
			return f.fail(err)
		}
	}
	if first := b.Entries[0].Seq; first != f.lastSeq+1 {
		f.c.metrics.stale.Inc()
		return fmt.Errorf("%w: batch starts at %d, the log is at %d", ErrStale, first, f.lastSeq)
	}
	if b.After != 0 && b.After != f.lastID {
		f.c.metrics.stale.Inc()
		return fmt.Errorf("%w: batch built on one that was not applied", ErrStale)
	}
	if err := f.s.db.CommitApplied(b, l.Index); err != nil {
		f.c.log.Error("the local store failed to apply a committed batch; the replica stops applying", "index", l.Index, "err", err)
		return f.fail(err)
	}
	f.applied, f.lastSeq, f.lastID = l.Index, b.LastSeq(), b.ID
	if r := f.s.publisher(); r != nil {
		r.Applied(b, p != nil)
	}
	// After publishing: a read that waited for this index (ReadBarrier)
	// finds the batch in the model's cache.
	f.c.setApplied(l.Index)
	return nil
}

// fail makes the replica stop applying: skipping an entry would fork it
// from the others. It leaves the cluster's service; a restart resumes
// after the last index applied.
func (f *fsm) fail(err error) error {
	f.broken = fmt.Errorf("%w: %v", ErrBroken, err)
	f.c.brokenStore(f.broken)
	return f.broken
}

// Snapshot takes a view of the store as of the last entry applied. The
// store stays open until Release, even if Restore replaces it meanwhile.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.broken != nil {
		return nil, f.broken
	}
	f.s.mu.RLock()
	db := f.s.db
	view := db.SnapshotView()
	f.s.vmu.Lock()
	f.s.views[db]++
	f.s.vmu.Unlock()
	f.s.mu.RUnlock()
	return &fsmSnapshot{s: f.s, c: f.c, db: db, view: view}, nil
}

// retire closes db, a store Restore replaced, and removes its directory:
// now, or at the release of its last snapshot view.
func (s *Store) retire(db *store.Badger, dir string) {
	s.vmu.Lock()
	if s.views[db] > 0 {
		s.retired[db] = dir
		s.vmu.Unlock()
		return
	}
	s.vmu.Unlock()
	s.closeRetired(db, dir)
}

// unview ends a snapshot view of db.
func (s *Store) unview(db *store.Badger) {
	s.vmu.Lock()
	s.views[db]--
	if s.views[db] > 0 {
		s.vmu.Unlock()
		return
	}
	delete(s.views, db)
	dir, retired := s.retired[db]
	delete(s.retired, db)
	s.vmu.Unlock()
	if retired {
		s.closeRetired(db, dir)
	}
}

func (s *Store) closeRetired(db *store.Badger, dir string) {
	if err := db.Close(); err != nil {
		s.c.log.Warn("closing the replaced store", "err", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		s.c.log.Warn("removing the replaced store", "dir", dir, "err", err)
	}
}

type fsmSnapshot struct {
	s    *Store
	c    *Cluster
	db   *store.Badger
	view *store.SnapshotView
	once sync.Once
}

// Persist streams the view into the sink.
func (x *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	if _, err := x.view.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	x.c.log.Info("snapshot written", "id", sink.ID(), "applied", x.view.Header().Applied,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (x *fsmSnapshot) Release() {
	x.once.Do(func() {
		x.view.Release()
		x.s.unview(x.db)
	})
}

// Restore replaces the local store with a snapshot's: written to a new
// directory, then swapped in (restore.go).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	h, err := f.c.restoreStore(rc)
	if err != nil {
		f.c.log.Error("installing a snapshot failed", "err", err)
		return err
	}
	id, err := f.s.Badger().AppliedBatch()
	if err != nil {
		f.c.log.Error("reading the installed snapshot", "err", err)
		return err
	}
	f.applied, f.lastSeq, f.lastID, f.broken = h.Applied, h.LastSeq, id, nil
	f.c.setApplied(h.Applied)
	if r := f.s.publisher(); r != nil {
		r.Reset(h.LastSeq)
	}
	f.c.metrics.restores.Inc()
	f.c.log.Info("snapshot installed", "applied", h.Applied, "last_seq", h.LastSeq, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
