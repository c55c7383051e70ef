package mqtt

import (
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Connection admission bounds the device connections that are connecting
// at once: accepted, and not yet through their TLS handshake, CONNECT and
// CONNACK. The listeners accept no more while the bound is reached; the
// connections beyond it wait in the kernel's accept queue (or have their
// SYN retried by the device), costing the node nothing.
//
// Without it, a reconnect storm (every device back at once) has every
// handshake in progress at once: they share the CPU and the ingest gate
// first come first served, so each takes about as long as all of them
// together, and once that passes the connect timeouts (the device's, the
// node's ConnectTimeout) most handshakes are thrown away after their CPU
// is spent, the devices retry, and the node does the same work again and
// again. With a bound, the admitted connections finish in milliseconds,
// and the node's handshake rate is what its CPU allows.
//
// One source address holds at most its share of the bound (perSource).
// A connection accepted while its source holds its share is parked: it
// waits, unread (its CONNECT or TLS ClientHello stays in the socket), in
// its source's queue, and takes over the admission of the next of its
// source's connections to finish, oldest first, directly. So devices
// behind one NAT connect at their share's pace instead of being closed
// and coming back after their back-off, again and again. A parked
// connection waits at most the connect timeout; one whose device closes
// it leaves the queue at once; one that arrives when its source's queue
// is full (maxParked) is closed as before ("crowded"). While parked, a
// connection costs a socket and a goroutine; only a source holding its
// share parks, so at most bound/perSource sources have a queue at once.

// DefaultMaxConnecting is Config.MaxConnecting when 0: 32 per core of
// GOMAXPROCS, at least 64.
func DefaultMaxConnecting() int { return max(64, 32*runtime.GOMAXPROCS(0)) }

// DefaultMaxParkedPerSource is Config.MaxParkedPerSource when 0.
const DefaultMaxParkedPerSource = 4096

// admission is a listener's bound of connecting connections, and of
// those from one source address: without the second, a client holding
// the bound's number of connections that send nothing (each for up to
// the connect timeout, again and again) would keep every device out.
type admission struct {
	slots     chan struct{}
	stop      chan struct{}
	once      sync.Once
	perSource int // at most this many connecting from one source address
	maxParked int // at most this many parked per source address

	mu      sync.Mutex
	sources map[string]*sourceState
	parked  int  // connections parked, all sources
	closed  bool // close was called: nothing parks any more
}

// sourceState is one source address's connecting connections and the
// queue of those waiting for one of them to finish.
type sourceState struct {
	connecting int
	queue      []*parkedConn // oldest first
}

// parkedConn is a connection waiting in its source's queue.
type parkedConn struct {
	net.Conn
	src string
	// admitted is set (under admission.mu) when it left the queue
	// holding the admission of one of its source's connections.
	admitted bool
}

// newAdmission bounds connecting connections to n, and to perSource from
// one source address (0: half of n, at least 1); parks up to maxParked
// connections per source beyond that (0: DefaultMaxParkedPerSource;
// negative: none, they are closed).
func newAdmission(n, perSource, maxParked int) *admission {
	if perSource <= 0 {
		perSource = max(1, n/2)
	}
	if maxParked == 0 {
		maxParked = DefaultMaxParkedPerSource
	}
	return &admission{slots: make(chan struct{}, n), stop: make(chan struct{}), perSource: perSource,
		maxParked: max(0, maxParked), sources: map[string]*sourceState{}}
}

// enter counts connection c from src against its source's share. When
// the share is held, c is parked instead (p non-nil), or, its source's
// queue full, refused (ok false).
func (a *admission) enter(src string, c net.Conn) (p *parkedConn, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sources[src]
	if s == nil {
		s = &sourceState{}
		a.sources[src] = s
	}
	if s.connecting < a.perSource {
		s.connecting++
		return nil, true
	}
	if len(s.queue) >= a.maxParked || a.closed {
		return nil, false
	}
	p = &parkedConn{Conn: c, src: src}
	s.queue = append(s.queue, p)
	a.parked++
	return p, true
}

// leave ends the admission of a connection from src: the oldest parked
// connection of src, if any, takes it over (returned, admitted);
// otherwise src counts one connecting fewer and the caller releases the
// slot.
func (a *admission) leave(src string) *parkedConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sources[src]
	if s == nil {
		return nil
	}
	if len(s.queue) > 0 {
		p := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		p.admitted = true
		a.parked--
		return p
	}
	if s.connecting--; s.connecting <= 0 {
		delete(a.sources, src)
	}
	return nil
}

// unpark takes p out of its source's queue, unless it was admitted
// already (then it holds an admission, and true is returned).
func (a *admission) unpark(p *parkedConn) (admitted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.admitted {
		return true
	}
	s := a.sources[p.src]
	if s == nil {
		return false
	}
	for i, q := range s.queue {
		if q == p {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			a.parked--
			break
		}
	}
	if s.connecting <= 0 && len(s.queue) == 0 {
		delete(a.sources, p.src)
	}
	return false
}

// source is the address a connection's share is counted by: its IP.
func source(c net.Conn) string {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return c.RemoteAddr().String()
}

// acquire waits for room; false when the listener is closed.
func (a *admission) acquire() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	case <-a.stop:
		return false
	}
}

func (a *admission) release() { <-a.slots }

// close stops admitting, and closes the parked connections (their
// goroutines then leave the queues).
func (a *admission) close() {
	a.once.Do(func() { close(a.stop) })
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for _, s := range a.sources {
		for _, p := range s.queue {
			p.Conn.Close()
		}
	}
}

// connecting is the number of connections admitted and not yet connected.
func (a *admission) connecting() int { return len(a.slots) }

// parkedNow is the number of connections parked.
func (a *admission) parkedNow() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.parked
}

// admit is one connection's admission, released once: when its session is
// established, or when it closes. A parked connection of the same source
// takes it over, if there is one; its listener's hand delivers it.
type admit struct {
	a    *admission
	src  string // the source address it counts against
	hand func(*parkedConn)
	done atomic.Bool
}

func (t *admit) connected() {
	if t != nil && t.a != nil && t.done.CompareAndSwap(false, true) {
		if p := t.a.leave(t.src); p != nil {
			t.hand(p)
		} else {
			t.a.release()
		}
	}
}

// admittedConn carries the admission of a connection outside the ingest
// gate (a gated connection carries its own).
type admittedConn struct {
	net.Conn
	adm admit
}

func (c *admittedConn) Close() error {
	c.adm.connected()
	return c.Conn.Close()
}

// admitted releases the admission of conn (a client's connection), if it
// holds one: its session is established.
func admitted(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	switch c := conn.(type) {
	case *gatedConn:
		c.adm.connected()
	case *admittedConn:
		c.adm.connected()
	}
}

// waitParked returns once c's device closed it (nil), or with the error
// that ended the wait: its read deadline (the connect timeout, or set in
// the past to wake it: handOver), or its closing. It reads nothing: it
// waits for the socket to become readable, again and again (each new
// segment, the device's FIN among them), and looks at its state.
func waitParked(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(sockGone)
}

// woken is the deadline that wakes a parked connection's goroutine.
var woken = time.Unix(1, 0)
