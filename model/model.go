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
}

// Model is one node's tree. It is safe for concurrent use.
type Model struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
	max   int

	in   chan *proposal
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	last    uint64        // last committed sequence number
	changed chan struct{} // closed and replaced at every commit
	tail    *ring
	closed  bool

	commitHooks []func([]Entry)
}

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
	}
	go m.run()
	return m, nil
}

// OnCommit registers fn to be called, on the applier goroutine, with the
// entries of every committed batch, before callers are answered. It must
// be fast and must not call Apply. Register before the first Apply.
func (m *Model) OnCommit(fn func([]Entry)) {
	m.mu.Lock()
	m.commitHooks = append(m.commitHooks, fn)
	m.mu.Unlock()
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

// run is the applier: the only goroutine that writes to the store.
func (m *Model) run() {
	defer close(m.done)
	var batch []*proposal
	for {
		batch = batch[:0]
		select {
		case p := <-m.in:
			batch = append(batch, p)
		case <-m.quit:
			m.failQueued()
			return
		}
		n := len(batch[0].muts)
	drain:
		for n < m.max {
			select {
			case p := <-m.in:
				batch = append(batch, p)
				n += len(p.muts)
			default:
				break drain
			}
		}
		m.commit(batch)
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

func (m *Model) commit(batch []*proposal) {
	sm := newMachine(m.store, m.last, m.now().UTC())
	for _, p := range batch {
		p.entries, p.err = sm.propose(p.muts)
	}
	b := sm.batch()
	if len(b.Entries) > 0 {
		if err := m.store.Commit(b); err != nil {
			m.log.Error("commit failed", "entries", len(b.Entries), "err", err)
			for _, p := range batch {
				if p.err == nil {
					p.err, p.entries = fmt.Errorf("commit: %w", err), nil
				}
			}
			for _, p := range batch {
				close(p.done)
			}
			return
		}
		m.mu.Lock()
		m.last = b.LastSeq()
		m.tail.append(b.Entries)
		ch := m.changed
		m.changed = make(chan struct{})
		hooks := m.commitHooks
		m.mu.Unlock()
		close(ch)
		for _, h := range hooks {
			h(b.Entries)
		}
	}
	for _, p := range batch {
		close(p.done)
	}
}

// LastSeq is the sequence number of the last durable entry.
func (m *Model) LastSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Get returns the context at p.
func (m *Model) Get(p Path) (*Context, error) { return m.store.Context(p) }

// Children lists p's direct children (see Store.Children).
func (m *Model) Children(p Path, after string, limit int) ([]Child, error) {
	if _, err := m.store.Context(p); err != nil && !p.IsRoot() {
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
