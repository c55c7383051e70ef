package mqtt

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/internal/slots"
)

// The ingest gate bounds the CPU device connections take, so that the
// rest of the node (its operator API above all) keeps a share of the
// machine whatever the devices send.
//
// Every device connection has a read goroutine (mochi's) that reads its
// socket, parses packets, and runs OnPublish (decoding the payload and
// queueing it for the store). The gate has a fixed number of slots, below
// GOMAXPROCS: a read goroutine holds one from the moment its socket read
// returns data until it asks the socket for more. So at most that many
// connections parse and decode at once; the others wait parked — not
// runnable, so not in the Go scheduler's run queue ahead of API handlers
// — with data unread in their sockets: the device's publishes wait
// (TCP backpressure) and nothing is read, acknowledged or lost meanwhile.
// A slot passes from one connection to the next directly, so device
// ingest behaves like a small fixed pool of workers.
//
// A read goroutine gives its slot back before it blocks on anything but
// its socket (a full window, the store, a command result being written,
// authentication: yield; a write the socket cannot take now) and runs
// without one until its next read; and for good when its connection
// closes.
//
// Only the TLS and TCP listeners are gated; the WebSocket listener is
// mochi's and is not.

// DefaultIngestSlots is the number of slots when Config.IngestSlots is 0:
// half of GOMAXPROCS, at least one.
func DefaultIngestSlots() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// ingestGate is the broker's pool of slots; nil means ungated. The slots
// may be shared with other device work of the node (Config.Slots).
type ingestGate struct {
	slots *slots.Limiter
	wait  prometheus.Histogram
	// p wakes waiting readers with a slot taken for them (poll_linux.go);
	// nil: readers wait in Go's network poller.
	p *poller
}

func newIngestGate(l *slots.Limiter) *ingestGate {
	return &ingestGate{
		slots: l,
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_mqtt_ingest_wait_seconds",
			Help:    "Time a device connection with data to read waited for an ingest slot (mqtt.ingest_slots).",
			Buckets: []float64{0, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
	}
}

func (g *ingestGate) acquire() { g.wait.Observe(g.slots.Acquire().Seconds()) }

func (g *ingestGate) release() { g.slots.Release() }

// inUse is the number of slots held.
func (g *ingestGate) inUse() int { return g.slots.InUse() }

// gatedConn is a device connection under the gate. Read is called by one
// goroutine at a time (the connection's reader, or the TLS handshake
// before it); Close and the hold accounting may race with it.
type gatedConn struct {
	net.Conn
	g      *ingestGate
	held   atomic.Bool // the reader holds a slot
	closed atomic.Bool
	adm    admit // released when the session is established or the connection closes

	dmu      sync.Mutex
	asked    time.Time // the deadline asked for when the one in force was set; zero: unknown or none
	deadline time.Time // the read and write deadline in force (asked, plus slack)
	readDL   time.Time // the read deadline in force; zero: none

	// With the gate's poller (nil: none), the reader waits for data on
	// wake rather than in Go's network poller. rc and fd are the socket.
	p         *poller
	rc        syscall.RawConn
	fd        int
	nopoll    atomic.Bool // the poller is not used (any more)
	pmu       sync.Mutex
	pstate    pollState // guarded by pmu
	polled    bool      // the socket is registered with p; guarded by pmu
	wake      chan struct{}
	renew     chan struct{} // the read deadline changed while the reader waits
	gone      chan struct{} // closed by Close
	closeOnce sync.Once
}

// pollState is where a reader waiting through the poller stands.
type pollState uint8

const (
	pollIdle     pollState = iota // not waiting
	pollWaiting                   // registered, parked on wake
	pollGranting                  // readable: the poller is taking a slot for it
)

// newGatedConn puts c under g; deadline is the read deadline already set
// on c.
func newGatedConn(c net.Conn, g *ingestGate, deadline time.Time) *gatedConn {
	gc := &gatedConn{Conn: c, g: g, readDL: deadline, fd: -1}
	if g.p == nil {
		return gc
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return gc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return gc
	}
	if gc.fd = socketFD(rc); gc.fd < 0 {
		return gc
	}
	gc.p, gc.rc = g.p, rc
	gc.wake, gc.renew, gc.gone = make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	return gc
}

// SetDeadline sets the connection's deadline, late by at most an eighth
// of its distance from now, and keeps the one in force while it is no
// earlier than asked and no later than that slack: mochi sets now + 1.5 ×
// keepalive before every packet it reads, and moving the socket's timers
// costs more than the rest of reading a small packet. A connection is
// thus never closed before the deadline mochi asks for (1.5 × keepalive,
// as MQTT has it), and at most about 1.69 × keepalive after its last
// packet. A zero deadline (none) is set at once.
func (c *gatedConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !t.IsZero() && !c.asked.IsZero() && !t.Before(c.asked) && !t.After(c.deadline) {
		return nil
	}
	set := t
	if d := time.Until(t); !t.IsZero() && d > 0 {
		set = t.Add(d / 8)
	}
	err := c.Conn.SetDeadline(set)
	c.asked, c.deadline, c.readDL = t, set, set
	if err != nil || t.IsZero() {
		c.asked, c.deadline = time.Time{}, time.Time{}
	}
	c.nudge()
	return err
}

// SetReadDeadline and SetWriteDeadline set one of the two: the deadline
// SetDeadline keeps track of is then unknown.
func (c *gatedConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.asked, c.deadline, c.readDL = time.Time{}, time.Time{}, t
	c.nudge()
	return c.Conn.SetReadDeadline(t)
}

// nudge makes a reader waiting through the poller look at its read
// deadline again, as a read waiting in Go's poller would.
func (c *gatedConn) nudge() {
	if c.p == nil {
		return
	}
	c.pmu.Lock()
	waiting := c.pstate == pollWaiting
	c.pmu.Unlock()
	if waiting {
		select {
		case c.renew <- struct{}{}:
		default:
		}
	}
}

func (c *gatedConn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.asked, c.deadline = time.Time{}, time.Time{}
	return c.Conn.SetWriteDeadline(t)
}

// Read gives the slot back, waits for data, and takes a slot again
// before returning it. A read that fails takes none: the reader is done.
//
// With the poller, a reader whose socket has nothing to read waits
// parked until the poller wakes it with a slot taken for it, instead of
// in Go's network poller, which would make it runnable as soon as data
// came, slot or not.
func (c *gatedConn) Read(p []byte) (int, error) {
	c.drop()
	if c.p == nil || c.nopoll.Load() || len(p) == 0 {
		n, err := c.Conn.Read(p)
		if err != nil && n == 0 {
			return n, err
		}
		c.take()
		return n, err
	}
	for {
		n, err := rawRead(c.rc, p)
		switch {
		case err == nil && n == 0:
			c.drop()
			return 0, io.EOF
		case err == nil:
			if !c.held.Load() {
				c.take()
			}
			return n, nil
		case err != errWouldBlock:
			c.drop()
			return 0, err
		}
		c.drop() // woken, but the data was gone: wait again without a slot
		c.dmu.Lock()
		dl := c.readDL
		c.dmu.Unlock()
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		if !c.await(dl) {
			c.nopoll.Store(true)
			return c.Read(p)
		}
	}
}

// errWouldBlock is a socket that has nothing to read now.
var errWouldBlock = errors.New("mqtt: would block")

// await registers the socket with the poller and waits until the poller
// wakes the reader with a slot (then held), or until the connection
// closes, the read deadline dl passes or is changed (then the caller's
// next read says which). False when the poller cannot take the socket:
// the reader then waits in Go's poller.
func (c *gatedConn) await(dl time.Time) bool {
	c.pmu.Lock()
	first := !c.polled
	c.polled, c.pstate = true, pollWaiting
	c.pmu.Unlock()
	if !c.p.arm(c, c.fd, first) {
		c.pmu.Lock()
		c.polled, c.pstate = false, pollIdle
		c.pmu.Unlock()
		return false
	}
	if first && c.closed.Load() {
		c.p.forget(c, c.fd) // Close ran before the socket was registered
	}
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-c.wake:
		c.granted()
		return true
	case <-c.gone:
	case <-timeout:
	case <-c.renew:
	}
	c.pmu.Lock()
	if c.pstate == pollWaiting {
		c.pstate = pollIdle
		c.pmu.Unlock()
		return true
	}
	c.pmu.Unlock()
	<-c.wake // the poller is taking a slot for this reader: it comes
	c.granted()
	return true
}

// granted makes the slot the poller took the reader's.
func (c *gatedConn) granted() {
	c.held.Store(true)
	if c.closed.Load() {
		c.drop()
	}
}

// grant takes a slot for the reader and wakes it, if it waits for data;
// the poller calls it when the socket became readable (or closed).
func (c *gatedConn) grant() {
	c.pmu.Lock()
	if c.pstate != pollWaiting {
		c.pmu.Unlock()
		return
	}
	c.pstate = pollGranting
	c.pmu.Unlock()
	c.g.acquire()
	c.pmu.Lock()
	c.pstate = pollIdle
	c.pmu.Unlock()
	c.wake <- struct{}{}
}

// unpolled is called by a poller that closes while the socket is
// registered: the reader waits in Go's poller from its next read on. The
// broker closes its poller only once every connection has closed.
func (c *gatedConn) unpolled() { c.nopoll.Store(true) }

// take acquires a slot for the reader, unless the connection closed.
func (c *gatedConn) take() {
	c.g.acquire()
	c.held.Store(true)
	if c.closed.Load() {
		c.drop()
	}
}

// drop releases the reader's slot if it holds one.
func (c *gatedConn) drop() {
	if c.held.CompareAndSwap(true, false) {
		c.g.release()
	}
}

// Write gives the reader's slot back first when the socket cannot take
// the write now. The reader writes too (mochi answers a PINGREQ or a
// SUBSCRIBE on it): a device that stops reading its socket must not keep
// a reader blocked in a write while it holds a slot, which would stall
// every other device's ingest. Writes of other goroutines may take the
// reader's slot away the same way; it then runs without one until its
// next read.
func (c *gatedConn) Write(p []byte) (int, error) {
	if c.held.Load() && !writable(c.Conn) {
		c.drop()
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Close() error {
	c.closed.Store(true)
	c.drop()
	c.adm.connected()
	c.closeOnce.Do(func() {
		if c.p != nil {
			c.p.forget(c, c.fd) // before the socket's number can be reused
			close(c.gone)
		}
	})
	return c.Conn.Close()
}

// yield gives the reader's slot back while it is about to block on
// something other than its socket (the store, a full window, a lock): it
// runs without one until its next read. Taking a slot again there could
// deadlock (a slot holder may wait for a lock the yielder holds).
func (c *gatedConn) yield() {
	if c != nil {
		c.drop()
	}
}

// yieldSlot gives back the slot of conn's reader, if it holds one; only
// the reader calls it.
func yieldSlot(conn net.Conn) { gateOf(conn).yield() }

// gateOf is the gated connection under a client's connection, or nil.
func gateOf(conn net.Conn) *gatedConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	gc, _ := conn.(*gatedConn)
	return gc
}
