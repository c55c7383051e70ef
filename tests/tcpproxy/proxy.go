// Package tcpproxy is a TCP fault proxy for tests of links that run over
// TCP (the replicas' Raft and forwarding channel, the API, MQTT). It sits
// between clients and a target, forwards bytes both ways, and can cut the
// link the way a network partition does, or reset its connections.
//
// A partition (Partition(true)) holds every byte in flight: connections
// stay open and nothing crosses until the partition heals, when what was
// held is delivered in order, as TCP's retransmissions would deliver it.
// A peer on either side therefore sees a silent link (its writes fill the
// buffers, then block; its reads wait), never an error, which is what
// timeouts and heartbeats must detect. New connections during a
// partition are accepted and held the same way. Reset closes every open
// connection at once, as a restarted peer or a firewall's RST would.
//
// Links can be told apart by where they come from: with Options.Accept
// (which may, for instance, terminate TLS and read the client's
// certificate) each link is given a source name, and PartitionFrom holds
// only the links of one source, both ways. A proxy in front of each
// member of a group, naming the member that dials, then cuts any pair of
// members apart while the others still talk: one proxy per pair in
// effect, with each member advertising one address.
//
// Lifecycle: New listens and starts the accept loop; Close stops every
// goroutine the proxy started, closes every connection and waits for
// them. Closing twice is safe. Setters may be called at any time from any
// goroutine.
package tcpproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards connections to one target. Create it with New.
type Proxy struct {
	ln     net.Listener
	target atomic.Pointer[string]
	opts   Options

	mu          sync.Mutex
	partitioned bool                     // guarded by mu
	healed      chan struct{}            // closed when no partition is in force; guarded by mu
	held        map[string]chan struct{} // sources partitioned, each closed when healed; guarded by mu
	links       map[*link]bool           // open links; guarded by mu
	closed      bool                     // guarded by mu
	accepted    atomic.Uint64            // connections accepted
	forwarded   [2]atomic.Uint64         // bytes to the target, to the client
	cutAfter    atomic.Int64             // CutAfter's budget; <= 0: none
	wg          sync.WaitGroup           // every goroutine of the proxy
	closeOnce   sync.Once
}

// link is one client connection and its connection to the target.
type link struct {
	client net.Conn
	done   chan struct{}
	source string // set before anything is forwarded

	mu    sync.Mutex
	up    net.Conn // nil until dialled; guarded by mu
	ended bool     // guarded by mu
}

// end closes both connections and wakes what waits on the link.
func (l *link) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	close(l.done)
	l.client.Close()
	if l.up != nil {
		l.up.Close()
	}
}

// setClient replaces the client connection by what Options.Accept made
// of it; false (and c closed) when the link ended meanwhile.
func (l *link) setClient(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		c.Close()
		return false
	}
	l.client = c
	return true
}

// setUp records the connection to the target; false (and up closed) when
// the link ended meanwhile.
func (l *link) setUp(up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		up.Close()
		return false
	}
	l.up = up
	return true
}

// CutAfter makes the proxy cut the next link that carries n more bytes
// to its client, after exactly those n bytes (a transfer interrupted in
// the middle); once. n <= 0 cancels it.
func (p *Proxy) CutAfter(n int64) { p.cutAfter.Store(n) }

// Stats are the proxy's counters since New.
type Stats struct {
	Accepted      uint64 // connections accepted
	Open          int    // links open
	BytesToTarget uint64
	BytesToClient uint64
	Partitioned   bool
}

// Options tailor a proxy; the zero value forwards bytes as they come.
type Options struct {
	// Accept, when set, is called on each accepted connection before
	// anything is forwarded: it returns the connection to forward (the
	// same, or e.g. a TLS server connection over it) and the name of the
	// link's source, which PartitionFrom holds. An error closes the
	// connection. It must return once the connection is closed.
	Accept func(net.Conn) (net.Conn, string, error)
	// Dial connects to the target (default: TCP), e.g. to originate TLS
	// again after Accept terminated it.
	Dial func(target string) (net.Conn, error)
}

// New listens on listen (e.g. "127.0.0.1:0") and forwards each connection
// to target.
func New(listen, target string) (*Proxy, error) { return NewWith(listen, target, Options{}) }

// NewWith is New with options.
func NewWith(listen, target string, o Options) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: %w", err)
	}
	if o.Dial == nil {
		o.Dial = func(target string) (net.Conn, error) { return net.Dial("tcp", target) }
	}
	p := &Proxy{ln: ln, opts: o, links: map[*link]bool{}, held: map[string]chan struct{}{}, healed: make(chan struct{})}
	close(p.healed) // not partitioned
	p.target.Store(&target)
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget makes new connections go to addr; open ones keep theirs.
func (p *Proxy) SetTarget(addr string) { p.target.Store(&addr) }

// Partition cuts (true) or heals (false) the link: see the package doc.
func (p *Proxy) Partition(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && !p.partitioned:
		p.partitioned, p.healed = true, make(chan struct{})
	case !on && p.partitioned:
		p.partitioned = false
		close(p.healed)
	}
}

// PartitionFrom cuts (true) or heals (false) the links whose source (see
// Options.Accept) is source, both ways, as Partition does for all.
func (p *Proxy) PartitionFrom(source string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	healed, held := p.held[source]
	switch {
	case on && !held:
		p.held[source] = make(chan struct{})
	case !on && held:
		delete(p.held, source)
		close(healed)
	}
}

// Reset closes every open connection; the proxy keeps accepting.
func (p *Proxy) Reset() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.end()
	}
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Open: len(p.links), BytesToTarget: p.forwarded[0].Load(),
		BytesToClient: p.forwarded[1].Load(), Partitioned: p.partitioned}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		err = p.ln.Close()
		p.Reset()
		p.wg.Wait()
	})
	return err
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		closed := p.closed
		if !closed {
			p.links[l] = true
		}
		p.mu.Unlock()
		if closed {
			c.Close()
			return
		}
		p.wg.Go(func() { p.serve(l) })
	}
}

// serve connects l's client to the target (once no partition holds it)
// and copies both ways until either side ends; then both are closed.
func (p *Proxy) serve(l *link) {
	defer func() {
		l.end()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	if p.opts.Accept != nil {
		c, source, err := p.opts.Accept(l.client)
		if err != nil {
			return
		}
		l.source = source
		if !l.setClient(c) {
			return
		}
	}
	if !p.wait(l) {
		return
	}
	up, err := p.opts.Dial(*p.target.Load())
	if err != nil {
		return // the client sees its connection close
	}
	if !l.setUp(up) {
		return // reset while dialling
	}
	var both sync.WaitGroup
	both.Go(func() { p.copy(l, up, l.client, &p.forwarded[0], false) })
	both.Go(func() { p.copy(l, l.client, up, &p.forwarded[1], true) })
	both.Wait()
}

// copy forwards src to dst, holding each chunk while partitioned, and
// passes a half-close on.
func (p *Proxy) copy(l *link, dst, src net.Conn, n *atomic.Uint64, toClient bool) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !p.wait(l) {
				return
			}
			if toClient {
				if left := p.cutAfter.Load(); left > 0 {
					if int64(k) >= left {
						// The budget ends inside this chunk: send what it
						// allows, then cut the link (once).
						p.cutAfter.Store(0)
						dst.Write(buf[:left])
						n.Add(uint64(left))
						l.end()
						return
					}
					p.cutAfter.Add(-int64(k))
				}
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				l.end()
				return
			}
			n.Add(uint64(k))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			l.end()
			return
		}
	}
}

// wait holds until no partition of all links or of l's source is in
// force; false when the link ended meanwhile (Reset, Close, or its other
// direction failed).
func (p *Proxy) wait(l *link) bool {
	for {
		p.mu.Lock()
		hold := p.healed
		if !p.partitioned {
			hold = p.held[l.source] // nil: not held
		}
		p.mu.Unlock()
		if hold == nil {
			select {
			case <-l.done:
				return false
			default:
				return true
			}
		}
		select {
		case <-hold: // healed: look again, the other kind may hold it
		case <-l.done:
			return false
		}
	}
}
