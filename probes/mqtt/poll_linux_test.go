//go:build linux

package mqtt

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/internal/tstest"
)

// polledPair is a loopback TCP connection whose server side is under a
// gate of one slot with its poller; it returns the device's side too.
func polledPair(t *testing.T) (*ingestGate, *gatedConn, net.Conn) {
	t.Helper()
	g := newIngestGate(slots.New(1))
	p, err := newPoller(g)
	if err != nil {
		t.Fatal(err)
	}
	g.p = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dev, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	gc := newGatedConn(srv, g, time.Time{})
	if gc.p == nil {
		t.Fatal("a TCP connection not under the poller")
	}
	t.Cleanup(func() {
		dev.Close()
		gc.Close()
		p.close()
	})
	return g, gc, dev
}

func (c *gatedConn) state() pollState {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.pstate
}

type readResult struct {
	n   int
	err error
}

func readAsync(c *gatedConn) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		n, err := c.Read(make([]byte, 16))
		ch <- readResult{n, err}
	}()
	return ch
}

// A reader waiting for data is woken only with a slot: while the only
// slot is held, data that comes leaves it parked (not runnable), the
// poller waiting for the slot on its behalf; once the slot is free the
// read returns with the slot held, and the next read gives it back.
func TestPollerWakesReaderWithSlot(t *testing.T) {
	g, gc, dev := polledPair(t)
	res := readAsync(gc)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the reader waiting for data", func() bool { return gc.state() == pollWaiting })

	g.acquire() // the only slot
	if _, err := dev.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "the poller taking a slot for the reader", func() bool {
		return gc.state() == pollGranting && g.slots.Waiting() == 1
	})
	select {
	case r := <-res:
		t.Fatalf("read returned %v while every slot was held", r)
	default:
	}
	g.release()
	r := <-res
	if r.err != nil || r.n != 1 {
		t.Fatalf("read = %d, %v", r.n, r.err)
	}
	if !gc.held.Load() || g.inUse() != 1 {
		t.Fatal("the read returned without the slot")
	}

	res = readAsync(gc) // gives the slot back, then waits
	tstest.WaitFor(t, tstest.DefaultTimeout, "the slot given back while waiting", func() bool {
		return g.inUse() == 0 && gc.state() == pollWaiting
	})
	dev.Close()
	if r := <-res; r.err == nil || r.n != 0 {
		t.Fatalf("read after the device closed = %d, %v; want EOF", r.n, r.err)
	}
	if g.inUse() != 0 {
		t.Fatal("slot held after the reader ended")
	}
}

// A waiting reader returns at its read deadline, and when its
// connection is closed, holding no slot either way.
func TestPollerDeadlineAndClose(t *testing.T) {
	g, gc, _ := polledPair(t)
	if err := gc.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	if err := gc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	// A deadline moved into the past while the reader waits ends its
	// read, as it would end one waiting in Go's poller.
	res := readAsync(gc)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the reader waiting for data", func() bool { return gc.state() == pollWaiting })
	if err := gc.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if r := <-res; !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("read whose deadline passed while it waited: %v", r.err)
	}
	if err := gc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	res = readAsync(gc)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the reader waiting for data", func() bool { return gc.state() == pollWaiting })
	gc.Close()
	if r := <-res; r.err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	if g.inUse() != 0 {
		t.Fatal("slot held after close")
	}
}
