package model

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// pipeStore is a Pipelined store in memory whose batches wait, once
// proposed, until the test lets each one end (release), as a replicated
// log would while it replicates. It applies them in order, and refuses a
// batch built on one that was not the last applied.
type pipeStore struct {
	mu       sync.Mutex
	ctx      map[Path]*Context
	last     uint64
	lastID   uint64
	proposed chan *Batch
	outcome  map[uint64]chan error // by batch ID: what its wait returns
	depth    int
	tail     chan struct{} // closed once the last batch proposed ended
}

func newPipeStore(depth int) *pipeStore {
	return &pipeStore{ctx: map[Path]*Context{}, proposed: make(chan *Batch, 64),
		outcome: map[uint64]chan error{}, depth: depth, tail: closed()}
}

var errLost = errors.New("lost: a new leader")

func (s *pipeStore) MaxInFlight() int { return s.depth }

func closed() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func (s *pipeStore) Propose(b *Batch) (func() error, error) {
	ch := make(chan error, 1)
	done := make(chan struct{})
	s.mu.Lock()
	s.outcome[b.ID] = ch
	prev := s.tail
	s.tail = done
	s.mu.Unlock()
	s.proposed <- b
	return func() error {
		// In the order proposed, as a log applies its entries.
		<-prev
		defer close(done)
		if err := <-ch; err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if b.Entries[0].Seq != s.last+1 || b.After != 0 && b.After != s.lastID {
			return errLost
		}
		for _, w := range b.Contexts {
			s.ctx[w.Context.Path] = w.Context
		}
		s.last, s.lastID = b.LastSeq(), b.ID
		return nil
	}, nil
}

// release ends b's wait with err (nil: apply it).
func (s *pipeStore) release(b *Batch, err error) {
	s.mu.Lock()
	ch := s.outcome[b.ID]
	s.mu.Unlock()
	ch <- err
}

func (s *pipeStore) Commit(b *Batch) error {
	wait, err := s.Propose(b)
	if err != nil {
		return err
	}
	return wait()
}

func (s *pipeStore) LastSeq() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

func (s *pipeStore) Context(p Path) (*Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.ctx[p]; ok {
		return c, nil
	}
	return nil, ErrNotFound
}

func (s *pipeStore) Children(Path, string, int) ([]Child, error)      { return nil, nil }
func (s *pipeStore) Events(Path, EventQuery) ([]Event, error)         { return nil, nil }
func (s *pipeStore) ReadLog(uint64, int) ([]Entry, error)             { return nil, nil }
func (s *pipeStore) Record(string, string) ([]byte, error)            { return nil, ErrNotFound }
func (s *pipeStore) Records(string, func(string, []byte) error) error { return nil }
func (s *pipeStore) Snapshot(Path, func(*Context) error) (uint64, error) {
	return 0, nil
}
func (s *pipeStore) Close() error { return nil }

func (s *pipeStore) next(t *testing.T) *Batch {
	t.Helper()
	select {
	case b := <-s.proposed:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no batch proposed")
		return nil
	}
}

type applied struct {
	es  []Entry
	err error
}

func applyAsync(m *Model, p Path) chan applied {
	ch := make(chan applied, 1)
	go func() {
		es, err := m.Apply(context.Background(), Mutation{Op: OpPut, Path: p, Type: "device"})
		ch <- applied{es, err}
	}()
	return ch
}

// The model proposes the next batch while the previous one is still in
// flight, built on its state and naming it; when a batch fails, the ones
// built on it fail, and the next is built on the committed state again.
func TestPipelinedBatches(t *testing.T) {
	s := newPipeStore(4)
	m, err := New(Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	a := applyAsync(m, "/a")
	ba := s.next(t)
	// /a is in flight: /a/b sees it (its parent exists) and is proposed
	// before /a's batch ends.
	b := applyAsync(m, "/a/b")
	bb := s.next(t)
	if bb.After != ba.ID || bb.Entries[0].Seq != ba.LastSeq()+1 {
		t.Fatalf("second batch: after %d first seq %d; want after %d, seq %d", bb.After, bb.Entries[0].Seq, ba.ID, ba.LastSeq()+1)
	}
	if len(bb.Entries) != 1 {
		t.Fatalf("second batch has %d entries: it did not see the first's /a", len(bb.Entries))
	}
	s.release(ba, nil)
	s.release(bb, nil)
	for _, ch := range []chan applied{a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}

	// A batch fails (a new leader): the one built on it fails too, and
	// the next is built on what was applied.
	c := applyAsync(m, "/c")
	bc := s.next(t)
	d := applyAsync(m, "/c/d")
	bd := s.next(t)
	if bd.After != bc.ID {
		t.Fatalf("after %d, want %d", bd.After, bc.ID)
	}
	s.release(bc, errLost)
	s.release(bd, nil) // the store refuses it: /c was not applied
	if r := <-c; !errors.Is(r.err, errLost) {
		t.Fatalf("/c: %v, want errLost", r.err)
	}
	if r := <-d; !errors.Is(r.err, errLost) {
		t.Fatalf("/c/d: %v, want errLost", r.err)
	}
	e := applyAsync(m, "/e")
	be := s.next(t)
	last, _ := s.LastSeq()
	if be.After != 0 || be.Entries[0].Seq != last+1 {
		t.Fatalf("after a failure: after %d first seq %d; want 0, %d", be.After, be.Entries[0].Seq, last+1)
	}
	s.release(be, nil)
	if r := <-e; r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := m.Get("/c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("/c after its batch failed: %v", err)
	}
	if _, err := m.Get("/e"); err != nil {
		t.Fatal(err)
	}
}

// No more than MaxInFlight batches are proposed and not yet durable.
func TestPipelineDepth(t *testing.T) {
	s := newPipeStore(2)
	m, err := New(Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r1 := applyAsync(m, "/x1")
	b1 := s.next(t)
	r2 := applyAsync(m, "/x2")
	b2 := s.next(t)
	r3 := applyAsync(m, "/x3")
	select {
	case b := <-s.proposed:
		t.Fatalf("a third batch (%d entries) proposed with two in flight", len(b.Entries))
	case <-time.After(100 * time.Millisecond): // asserting nothing happens: a bounded look
	}
	s.release(b1, nil)
	b3 := s.next(t)
	if b3.After != b2.ID {
		t.Fatalf("third batch after %d, want %d", b3.After, b2.ID)
	}
	s.release(b2, nil)
	s.release(b3, nil)
	for _, ch := range []chan applied{r1, r2, r3} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
}

// A batch left empty (its only proposal failed) never reaches the store,
// so the next batch is not built on it.
func TestPipelineSkipsEmptyBatches(t *testing.T) {
	s := newPipeStore(4)
	m, err := New(Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := applyAsync(m, "/a")
	ba := s.next(t)
	// Deleting what does not exist fails in the state machine: an empty
	// batch.
	if _, err := m.Apply(context.Background(), Mutation{Op: OpDelete, Path: "/missing"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a missing context: %v", err)
	}
	b := applyAsync(m, "/b")
	bb := s.next(t)
	if bb.After != ba.ID {
		t.Fatalf("after %d, want %d (the batch in flight, not the empty one)", bb.After, ba.ID)
	}
	s.release(ba, nil)
	s.release(bb, nil)
	for _, ch := range []chan applied{a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
}
