package mqtt

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/internal/tstest"
)

// recordingCommands records Delivered calls, in order.
type recordingCommands struct {
	fakeCommands
	mu   sync.Mutex
	seen []string
}

func (r *recordingCommands) Delivered(_ context.Context, device, job string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, device+"/"+job)
	return nil
}

func (r *recordingCommands) recorded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// Acknowledged commands are recorded by one goroutine from a bounded
// queue: with the queue full, the acknowledging reader gives its ingest
// slot back and waits (its connection is not read meanwhile); every
// delivery is recorded, in order, once the recorder runs.
func TestDeliveriesBoundedQueue(t *testing.T) {
	cmds := &recordingCommands{}
	b := &Broker{cfg: Config{Commands: cmds}, log: slog.New(slog.DiscardHandler),
		deliveries: make(chan delivery, 2), stopped: make(chan struct{}), quit: make(chan struct{})}
	g := newIngestGate(slots.New(1))
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	gc := &gatedConn{Conn: c1, g: g}
	gc.take() // the reader holds the only slot, as when it processes a PUBACK

	b.delivered(gc, delivery{"d1", "j1"})
	b.delivered(gc, delivery{"d1", "j2"})
	if g.inUse() != 1 {
		t.Fatal("the reader gave its slot back while the queue had room")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.delivered(gc, delivery{"d1", "j3"}) // the queue is full
	}()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the waiting reader's slot given back", func() bool { return g.inUse() == 0 })
	select {
	case <-done:
		t.Fatal("delivered returned with the queue full")
	default:
	}

	var wg sync.WaitGroup
	wg.Go(func() { b.recordDeliveries(b.quit) })
	<-done
	tstest.WaitFor(t, tstest.DefaultTimeout, "every delivery recorded", func() bool { return len(cmds.recorded()) == 3 })
	close(b.quit)
	wg.Wait()
	if got := cmds.recorded(); got[0] != "d1/j1" || got[1] != "d1/j2" || got[2] != "d1/j3" {
		t.Fatalf("recorded %v, want in acknowledgement order", got)
	}
}

// A reader waiting for room gives up when the broker stops, and what was
// queued before quit is recorded.
func TestDeliveriesStop(t *testing.T) {
	cmds := &recordingCommands{}
	b := &Broker{cfg: Config{Commands: cmds}, log: slog.New(slog.DiscardHandler),
		deliveries: make(chan delivery, 1), stopped: make(chan struct{}), quit: make(chan struct{})}
	b.delivered(nil, delivery{"d1", "j1"})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.delivered(nil, delivery{"d1", "j2"})
	}()
	close(b.stopped)
	<-done
	close(b.quit)
	b.recordDeliveries(b.quit)
	if got := cmds.recorded(); len(got) != 1 || got[0] != "d1/j1" {
		t.Fatalf("recorded %v, want the queued d1/j1 only", got)
	}
}
