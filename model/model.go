// Package model is Strata's context tree: paths, contexts with variables,
// events and functions, the change log, and the state machine that turns
// mutations into durable state.
//
// Writes: callers hand mutations to Model.Apply. One applier goroutine
// collects the proposals of many concurrent callers into a batch, applies
// them in order to the current state (assigning strictly increasing sequence
// numbers), commits the batch to the Store in one durable write (group
// commit), and only then answers every caller. A replicated log can replace
// the proposal channel without changing callers: the state machine
// (machine.go) is a pure function of the current state and the entries.
//
// Reads go straight to the Store and see every acknowledged write.
//
// The change log can be followed from any cursor with ReadLog (and Follow);
// recent entries are served from memory, older ones from the Store.
//
// The package imports nothing else of Strata.
package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Config configures a Model.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock for entry times; time.Now when nil.
	Now func() time.Time
	// MaxBatch bounds the mutations committed together (default 16384).
	MaxBatch int
	// TailSize is how many recent log entries stay in memory for
	// followers (default 65536).
	TailSize int
	// CacheSize is how many contexts stay cached in memory (default
	// 100000; negative disables the cache).
	CacheSize int
	// Forward, when set, is offered every proposal first (a Raft
	// follower sends it to the leader).
	Forward Forwarder
}

// Forwarder sends proposals to the replica that commits them. Forward
// applies muts there and returns their entries; handled is false when
// they are to be applied here. Apply returns a forwarded proposal's
// entries once this model has them too, so a caller reads its own writes
// on the replica it wrote through; but not later than ForwardedWait after
// the write was acknowledged (or when ctx ends): the write is durable,
// and a replica cut off from the leader must not hold its callers.
type Forwarder interface {
	Forward(ctx context.Context, muts []Mutation) (entries []Entry, handled bool, err error)
}

// Model is one node's tree. It is safe for concurrent use.
type Model struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
	max   int
	depth int // batches in flight at most

	in   chan *proposal
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	last    uint64        // last committed sequence number
	changed chan struct{} // closed and replaced at every commit
	tail    *ring
	tailLen int
	closed  bool
	cache   *cache
	// replicated: the store publishes what it applies (Replicated), and
	// makeDurable does not.
	replicated bool

	commitHooks []func([]Entry)
	resetHooks  []func(last uint64)
	fwd         Forwarder
	// updaters: record kind → its updater (RegisterUpdater); replaced,
	// never changed in place, so the applier reads it without the lock.
	updaters map[string]RecordUpdater
	recs     *recCache
}

// RecordUpdater decides a change of a record (OpUpdateRecord) against
// the record as the state machine has it: cur is its value (nil when
// there is none), arg the mutation's Record.Value; it returns the new
// value, or an error that fails the whole proposal (model.ErrConflict
// when the change no longer applies, say). It runs on the one replica
// that builds a batch and its result is what the log carries, so every
// replica applies the same outcome; it must depend on nothing but its
// arguments, be quick, and must not change cur or arg.
type RecordUpdater func(key string, cur, arg []byte) ([]byte, error)

type proposal struct {
	muts    []Mutation
	entries []Entry
	err     error
	done    chan struct{}
}

// New starts a model on store. The caller keeps ownership of store and
// closes it after Close.
func New(cfg Config) (*Model, error) {
	if cfg.Store == nil {
		return nil, errors.New("model: no store")
	}
	last, err := cfg.Store.LastSeq()
	if err != nil {
		return nil, fmt.Errorf("model: read last sequence: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 16384
	}
	if cfg.TailSize <= 0 {
		cfg.TailSize = 65536
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 100000
	}
	m := &Model{
		store:   cfg.Store,
		log:     cfg.Logger.With("component", "model"),
		now:     cfg.Now,
		max:     cfg.MaxBatch,
		in:      make(chan *proposal, 1024),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		last:    last,
		changed: make(chan struct{}),
		tail:    newRing(cfg.TailSize, last),
		tailLen: cfg.TailSize,
		fwd:     cfg.Forward,
		cache:   newCache(max(cfg.CacheSize, 0)),
		recs:    newRecCache(recCacheSize),
	}
	m.depth = 1
	if ps, ok := cfg.Store.(Pipelined); ok {
		m.depth = max(ps.MaxInFlight(), 1)
	}
	if rs, ok := cfg.Store.(Replicated); ok {
		m.replicated = true
		rs.Attach(replica{m})
	}
	go m.apply(nil, nil)
	return m, nil
}

// OnCommit registers fn to be called with the entries of every committed
// batch, in log order, before callers are answered: on the applier's
// commit goroutine, or, with a Replicated store, on the store's (for the
// batches replication applies too, so a follower sees every batch). It
// must be fast and must not call Apply. Register before the first Apply.
func (m *Model) OnCommit(fn func([]Entry)) {
	m.mu.Lock()
	m.commitHooks = append(m.commitHooks, fn)
	m.mu.Unlock()
}

// OnReset registers fn to be called when a Replicated store replaced its
// state by a snapshot whose log ends at last (Replica.Reset): the commit
// hooks see none of the entries the snapshot covers, so what they keep
// must be rebuilt from the store. It is called on the store's goroutine,
// after the model dropped its own state; like a commit hook it must be
// fast. Register before the first Apply.
func (m *Model) OnReset(fn func(last uint64)) {
	m.mu.Lock()
	m.resetHooks = append(m.resetHooks, fn)
	m.mu.Unlock()
}

// RegisterUpdater makes fn decide the OpUpdateRecord mutations of records
// of kind (replacing the updater registered before, if any). A proposal
// updating a kind without an updater fails with ErrInvalid. On a replica
// of a cluster, register before the replica can lead: forwarded
// proposals are applied as soon as it does.
func (m *Model) RegisterUpdater(kind string, fn RecordUpdater) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := make(map[string]RecordUpdater, len(m.updaters)+1)
	for k, f := range m.updaters {
		u[k] = f
	}
	u[kind] = fn
	m.updaters = u
}

// Close stops the applier after the batch in flight; later Applies fail
// with ErrClosed. Closing twice is safe.
func (m *Model) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil
	}
	m.closed = true
	close(m.quit)
	ch := m.changed
	m.changed = make(chan struct{})
	m.mu.Unlock()
	close(ch)
	<-m.done
	return nil
}

// Apply proposes muts as one atomic unit and returns their log entries once
// they are durable. Either all of them apply or none does.
func (m *Model) Apply(ctx context.Context, muts ...Mutation) ([]Entry, error) {
	if len(muts) == 0 {
		return nil, nil
	}
	if len(muts) > m.max {
		return nil, fmt.Errorf("%w: more than %d mutations in one proposal", ErrInvalid, m.max)
	}
	for i := range muts {
		if err := muts[i].Validate(); err != nil {
			return nil, err
		}
	}
	if m.fwd != nil {
		if es, handled, err := m.fwd.Forward(ctx, muts); handled {
			if err == nil && len(es) > 0 {
				m.waitSeq(ctx, es[len(es)-1].Seq)
			}
			return es, err
		}
	}
	p := &proposal{muts: muts, done: make(chan struct{})}
	select {
	case m.in <- p:
	case <-m.quit:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once queued, the proposal is applied or failed by the applier; we
	// wait for the outcome even if ctx ends, so that an acknowledged
	// write is never reported as failed.
	select {
	case <-p.done:
		return p.entries, p.err
	case <-m.done:
		select {
		case <-p.done:
			return p.entries, p.err
		default:
			return nil, ErrClosed
		}
	}
}

// ForwardedWait bounds how long Apply waits for this model to show a
// write a Forwarder had acknowledged elsewhere.
const ForwardedWait = 10 * time.Second

// waitSeq waits until the model has published seq, ctx ends, the model
// closes or ForwardedWait passed.
func (m *Model) waitSeq(ctx context.Context, seq uint64) {
	ctx, cancel := context.WithTimeout(ctx, ForwardedWait)
	defer cancel()
	for {
		m.mu.Lock()
		last, ch, closed := m.last, m.changed, m.closed
		m.mu.Unlock()
		if last >= seq || closed {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// flight is a batch being committed by its own goroutine while the
// applier builds the next one on top of it.
type flight struct {
	props []*proposal
	batch *Batch
	over  map[Path]*staged
	recs  map[[2]string]recOp // the batch's last operation on each record
	err   error
	// proposed is closed once the store has queued the batch (a
	// Pipelined store) or it is durable: the applier may propose the
	// next one. durable is closed once the batch is durable and
	// published, or has failed (err). done is closed once every caller
	// of this batch and of the ones before it has been answered.
	proposed chan struct{}
	durable  chan struct{}
	done     chan struct{}
	prev     *flight // the batch before, until its callers are answered
}

func (f *flight) isDurable() bool {
	select {
	case <-f.durable:
		return true
	default:
		return false
	}
}

// apply is the applier: the only goroutine that proposes to the store.
// While batches are in flight (chain, oldest first; last is the newest
// batch, in flight or not) it collects and applies the proposals of the
// next batch on top of their state, and commits it as soon as the newest
// one is proposed (a Pipelined store, up to MaxInFlight batches in
// flight) or durable (any other store: one batch in flight). If a batch
// in flight fails, the next is rebuilt from the committed state once the
// chain has settled, so no proposal is applied on state that was lost;
// a Pipelined store fails the batches already proposed on top of it.
//
// To commit, the applier hands its role to a new goroutine and commits on
// its own: the commit starts at once, and the new applier runs as soon as
// the commit waits for the disk. (Started the other way round, the commit
// would wait in the run queue until the applier blocks: ~1 ms under load,
// a third of a commit, with the disk idle.)
func (m *Model) apply(last *flight, chain []*flight) {
	var first *proposal
	select {
	case first = <-m.in:
	case <-m.quit:
		if last != nil {
			<-last.done
		}
		m.failQueued()
		close(m.done)
		return
	}
	chain = m.settle(chain)
	props := []*proposal{first}
	sm := m.newMachine(chain)
	first.entries, first.err = sm.propose(first.muts)
	n := len(first.muts)
collect:
	for n < m.max {
		gate := m.gate(chain)
		if gate == nil {
			select {
			case p := <-m.in:
				props = append(props, p)
				p.entries, p.err = sm.propose(p.muts)
				n += len(p.muts)
			default:
				break collect
			}
			continue
		}
		select {
		case p := <-m.in:
			props = append(props, p)
			p.entries, p.err = sm.propose(p.muts)
			n += len(p.muts)
		case <-gate:
			break collect
		}
	}
	for gate := m.gate(chain); gate != nil; gate = m.gate(chain) {
		<-gate
	}
	if m.failed(chain) {
		// A batch it was built on failed: rebuild on the committed state.
		chain = m.settle(chain)
		sm = m.newMachine(nil)
		for _, p := range props {
			p.entries, p.err = sm.propose(p.muts)
		}
	}
	b := sm.batch()
	b.ID = batchID()
	if len(chain) > 0 {
		b.After = chain[len(chain)-1].batch.ID // the newest layer it was built on
	}
	f := &flight{props: props, batch: b, over: sm.ctx, recs: sm.recs, proposed: make(chan struct{}),
		durable: make(chan struct{}), done: make(chan struct{}), prev: last}
	next := m.inFlight(chain)
	if len(b.Entries) > 0 {
		// An empty batch never reaches the store: none is built on it.
		next = append(next, f)
	}
	go m.apply(f, next)
	m.commit(f)
}

// gate returns what the applier waits for before it may commit the next
// batch, nil when it may commit at once.
func (m *Model) gate(chain []*flight) <-chan struct{} {
	chain = m.inFlight(chain)
	if len(chain) == 0 || m.failed(chain) {
		return nil
	}
	if len(chain) >= m.depth {
		return chain[0].durable
	}
	newest := chain[len(chain)-1]
	select {
	case <-newest.proposed:
		return nil
	default:
		return newest.proposed
	}
}

// inFlight returns the batches of chain not yet durable (a batch becomes
// durable only after the ones before it).
func (m *Model) inFlight(chain []*flight) []*flight {
	for len(chain) > 0 && chain[0].isDurable() && chain[0].err == nil {
		chain = chain[1:]
	}
	return chain
}

// failed reports whether a batch of chain failed.
func (m *Model) failed(chain []*flight) bool {
	for _, f := range chain {
		if f.isDurable() && f.err != nil {
			return true
		}
	}
	return false
}

// settle drops the durable batches from chain; if one of them failed, it
// waits for every batch of chain (the ones built on it fail too) and
// returns none, so the next batch is built on the committed state.
func (m *Model) settle(chain []*flight) []*flight {
	if !m.failed(chain) {
		return m.inFlight(chain)
	}
	for _, f := range chain {
		<-f.durable
	}
	return nil
}

func (m *Model) newMachine(chain []*flight) *machine {
	ext := m.cache.external()
	m.mu.Lock()
	last, updaters := m.last, m.updaters
	m.mu.Unlock()
	var prev []map[Path]*staged
	var prevRecs []map[[2]string]recOp
	size := 16
	for i := len(chain) - 1; i >= 0; i-- {
		prev = append(prev, chain[i].over)
		prevRecs = append(prevRecs, chain[i].recs)
	}
	if len(chain) > 0 {
		b := chain[len(chain)-1].batch
		size = len(b.Entries) + len(b.Entries)/4
		if l := b.LastSeq(); l > last {
			last = l
		}
	}
	sm := newMachine(m.base(ext), m.store, prev, last, m.now().UTC(), size)
	sm.prevRecs, sm.updaters, sm.recCache = prevRecs, updaters, m.recs
	return sm
}

// batchID is a batch's random ID, never 0.
func batchID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// base reads committed state for the applier: cache, then store. What it
// reads from the store fills the cache unless a batch proposed elsewhere
// was applied since ext was read (see cache.fillApplier).
func (m *Model) base(ext uint64) func(p Path) (*Context, error) {
	return func(p Path) (*Context, error) {
		if c, ok := m.cache.get(p); ok {
			return c, nil
		}
		c, err := m.store.Context(p)
		if err == nil {
			m.cache.fillApplier(c, ext)
		}
		return c, err
	}
}

func (m *Model) failQueued() {
	for {
		select {
		case p := <-m.in:
			p.err = ErrClosed
			close(p.done)
		default:
			return
		}
	}
}

// commit makes one batch durable, publishes it, lets the applier commit
// the next one and then answers its callers.
func (m *Model) commit(f *flight) {
	f.err = m.makeDurable(f)
	close(f.durable)
	for _, p := range f.props {
		if f.err != nil && p.err == nil {
			p.err, p.entries = fmt.Errorf("commit: %w", f.err), nil
		}
		close(p.done)
	}
	if f.prev != nil {
		<-f.prev.done
		f.prev = nil
	}
	close(f.done)
}

// makeDurable commits f's batch to the store and publishes it (a
// Replicated store has published it before Commit returns); proposed is
// closed once the store has queued it.
func (m *Model) makeDurable(f *flight) error {
	b := f.batch
	if len(b.Entries) == 0 {
		close(f.proposed)
		return nil
	}
	var err error
	if ps, ok := m.store.(Pipelined); ok {
		var wait func() error
		wait, err = ps.Propose(b)
		close(f.proposed)
		if err == nil {
			err = wait()
		}
	} else {
		err = m.store.Commit(b)
		close(f.proposed)
	}
	if err != nil {
		m.log.Error("commit failed", "entries", len(b.Entries), "err", err)
		return err
	}
	if !m.replicated {
		m.publish(b, false)
	}
	return nil
}

// publish makes a durable batch visible: cache, tail, watchers and commit
// hooks. foreign marks a batch this model's applier did not build.
func (m *Model) publish(b *Batch, foreign bool) {
	m.cache.commit(b, foreign)
	m.mu.Lock()
	m.recs.commit(b, m.updaters)
	m.last = b.LastSeq()
	m.tail.append(b.Entries, b.Encoded)
	ch := m.changed
	m.changed = make(chan struct{})
	hooks := m.commitHooks
	m.mu.Unlock()
	close(ch)
	for _, h := range hooks {
		h(b.Entries)
	}
}

// replica is the model's side of a Replicated store.
type replica struct{ m *Model }

func (r replica) Applied(b *Batch, own bool) {
	if len(b.Entries) > 0 {
		r.m.publish(b, !own)
	}
}

func (r replica) Reset(last uint64) {
	m := r.m
	m.cache.reset()
	m.recs.reset()
	m.mu.Lock()
	m.last = last
	m.tail = newRing(m.tailLen, last)
	ch := m.changed
	m.changed = make(chan struct{})
	hooks := m.resetHooks
	m.mu.Unlock()
	close(ch)
	for _, h := range hooks {
		h(last)
	}
}

// LastSeq is the sequence number of the last durable entry.
func (m *Model) LastSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Get returns the context at p. The result is shared: do not modify it
// (Clone it first).
func (m *Model) Get(p Path) (*Context, error) {
	if c, ok := m.cache.get(p); ok {
		return c, nil
	}
	gen := m.cache.generation()
	c, err := m.store.Context(p)
	if err == nil {
		m.cache.fill(c, gen, ^uint64(0))
	}
	return c, err
}

// Children lists p's direct children (see Store.Children).
func (m *Model) Children(p Path, after string, limit int) ([]Child, error) {
	if _, err := m.Get(p); err != nil && !p.IsRoot() {
		return nil, err
	}
	return m.store.Children(p, after, limit)
}

// Events returns p's event history, newest first.
func (m *Model) Events(p Path, q EventQuery) ([]Event, error) { return m.store.Events(p, q) }

// Snapshot walks the subtree at prefix from one consistent view and returns
// the sequence number it reflects; follow the log after it for the tail.
func (m *Model) Snapshot(prefix Path, fn func(*Context) error) (uint64, error) {
	return m.store.Snapshot(prefix, fn)
}

// Record returns a node-local record's value or ErrNotFound.
func (m *Model) Record(kind, key string) ([]byte, error) { return m.store.Record(kind, key) }

// Records calls fn for every record of a kind, in key order.
func (m *Model) Records(kind string, fn func(key string, value []byte) error) error {
	return m.store.Records(kind, fn)
}

// PutRecord durably stores a node-local record.
func (m *Model) PutRecord(ctx context.Context, kind, key string, value []byte) error {
	_, err := m.Apply(ctx, Mutation{Op: OpPutRecord, Record: &Record{Kind: kind, Key: key, Value: value}})
	return err
}

// DeleteRecord durably removes a node-local record; deleting a missing
// record is not an error.
func (m *Model) DeleteRecord(ctx context.Context, kind, key string) error {
	_, err := m.Apply(ctx, Mutation{Op: OpDeleteRecord, Record: &Record{Kind: kind, Key: key}})
	return err
}
