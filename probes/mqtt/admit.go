package mqtt

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
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

// DefaultMaxConnecting is Config.MaxConnecting when 0: 32 per core of
// GOMAXPROCS, at least 64.
func DefaultMaxConnecting() int { return max(64, 32*runtime.GOMAXPROCS(0)) }

// admission is a listener's bound of connecting connections, and of
// those from one source address: without the second, a client holding
// the bound's number of connections that send nothing (each for up to
// the connect timeout, again and again) would keep every device out.
type admission struct {
	slots     chan struct{}
	stop      chan struct{}
	once      sync.Once
	perSource int // at most this many connecting from one source address

	mu      sync.Mutex
	sources map[string]int // connecting connections by source address
}

// newAdmission bounds connecting connections to n, and to perSource from
// one source address (0: half of n, at least 1).
func newAdmission(n, perSource int) *admission {
	if perSource <= 0 {
		perSource = max(1, n/2)
	}
	return &admission{slots: make(chan struct{}, n), stop: make(chan struct{}), perSource: perSource, sources: map[string]int{}}
}

// enter counts a connection from src, or reports false when src holds
// its share of the bound already.
func (a *admission) enter(src string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sources[src] >= a.perSource {
		return false
	}
	a.sources[src]++
	return true
}

func (a *admission) leave(src string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sources[src]--; a.sources[src] <= 0 {
		delete(a.sources, src)
	}
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

func (a *admission) close() { a.once.Do(func() { close(a.stop) }) }

// connecting is the number of connections admitted and not yet connected.
func (a *admission) connecting() int { return len(a.slots) }

// admit is one connection's admission, released once: when its session is
// established, or when it closes.
type admit struct {
	a    *admission
	src  string // the source address it counts against
	done atomic.Bool
}

func (t *admit) connected() {
	if t != nil && t.a != nil && t.done.CompareAndSwap(false, true) {
		t.a.leave(t.src)
		t.a.release()
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
