// Package udpproxy is a UDP fault proxy for tests of links that run over
// UDP (federation over QUIC). It sits between a client and a target,
// forwards datagrams both ways and can blackhole, delay and drop them.
//
// The proxy keeps one upstream socket per client address, like a NAT: a
// client that keeps its source address keeps its upstream socket (so the
// target sees one stable peer per client), replies read on that socket go
// back to that client, and a client that moves to a new source address (a
// QUIC connection migration) gets a new upstream socket. Mappings without
// traffic in either direction for the idle timeout are released.
//
// Lifecycle: New binds the listening socket and starts the read loop and
// the delay line; Close stops every goroutine the proxy started, closes
// every socket and waits for them. Closing twice is safe. All setters may
// be called at any time from any goroutine; they apply to datagrams read
// after the call (and blackhole also to datagrams still waiting in the
// delay line).
package udpproxy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is how long a client mapping lives without traffic.
const DefaultIdleTimeout = 2 * time.Minute

// maxDatagram is the largest UDP payload.
const maxDatagram = 64 << 10

// Proxy forwards datagrams between clients and one target. Create it with
// New.
type Proxy struct {
	pc     *net.UDPConn
	bindIP netip.Addr // address upstream sockets bind to

	target    atomic.Pointer[netip.AddrPort]
	blackhole atomic.Bool
	delay     atomic.Int64  // time.Duration
	dropRate  atomic.Uint64 // math.Float64bits of a probability
	idle      atomic.Int64  // time.Duration

	toTarget, toClient counters

	line *delayLine

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow // guarded by mu
	closed bool                     // guarded by mu

	wg        sync.WaitGroup // every goroutine of the proxy
	closeOnce sync.Once
	closeErr  error
}

// flow is the mapping of one client address to its upstream socket.
type flow struct {
	client netip.AddrPort
	up     *net.UDPConn
	last   atomic.Int64 // unix nanoseconds of the last datagram either way
}

func (f *flow) touch() { f.last.Store(time.Now().UnixNano()) }

// Stats are the proxy's counters since New.
type Stats struct {
	ToTarget Counters // client → target
	ToClient Counters // target → client
	Flows    int      // client mappings currently open
}

// Counters count the datagrams of one direction. Dropped includes
// datagrams dropped by Blackhole, by SetDropRate and by failed writes.
type Counters struct {
	Forwarded, ForwardedBytes uint64
	Dropped, DroppedBytes     uint64
}

type counters struct {
	fwd, fwdBytes, drop, dropBytes atomic.Uint64
}

func (c *counters) forwarded(n int) { c.fwd.Add(1); c.fwdBytes.Add(uint64(n)) }
func (c *counters) dropped(n int)   { c.drop.Add(1); c.dropBytes.Add(uint64(n)) }
func (c *counters) snapshot() Counters {
	return Counters{Forwarded: c.fwd.Load(), ForwardedBytes: c.fwdBytes.Load(), Dropped: c.drop.Load(), DroppedBytes: c.dropBytes.Load()}
}

// New listens on the UDP address listen (for example "127.0.0.1:0") and
// forwards what it receives to target. Upstream sockets bind to the IP of
// listen on an ephemeral port.
func New(listen, target string) (*Proxy, error) {
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: listen address: %w", err)
	}
	taddr, err := resolve(target)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: %w", err)
	}
	p := &Proxy{
		pc:     pc,
		bindIP: pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(),
		flows:  make(map[netip.AddrPort]*flow),
	}
	p.target.Store(&taddr)
	p.idle.Store(int64(DefaultIdleTimeout))
	p.line = newDelayLine()
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.line.run() }()
	go func() { defer p.wg.Done(); p.readClients() }()
	return p, nil
}

func resolve(addr string) (netip.AddrPort, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("udpproxy: target address: %w", err)
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Addr is the address the proxy listens on, for clients to dial.
func (p *Proxy) Addr() string { return p.pc.LocalAddr().String() }

// SetTarget sends later datagrams (including those still in the delay
// line) to addr, for example after the target restarted on a new port.
// Existing client mappings keep their upstream sockets.
func (p *Proxy) SetTarget(addr string) error {
	ap, err := resolve(addr)
	if err != nil {
		return err
	}
	p.target.Store(&ap)
	return nil
}

// Blackhole drops every datagram in both directions while on.
func (p *Proxy) Blackhole(on bool) { p.blackhole.Store(on) }

// SetDelay delays every datagram by d in each direction (so a round trip
// gains 2d). Order is preserved within the proxy: lowering the delay never
// lets a datagram overtake one read before it. Zero turns the delay off.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(max(d, 0))) }

// SetDropRate drops each datagram, in either direction, with probability
// prob (clamped to [0, 1]).
func (p *Proxy) SetDropRate(prob float64) {
	if math.IsNaN(prob) {
		prob = 0
	}
	p.dropRate.Store(math.Float64bits(min(max(prob, 0), 1)))
}

// SetIdleTimeout sets how long a client mapping lives without traffic
// (default DefaultIdleTimeout). Existing mappings pick it up at their next
// deadline, so set it before the traffic it is meant for.
func (p *Proxy) SetIdleTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultIdleTimeout
	}
	p.idle.Store(int64(d))
}

// Stats returns the counters and the number of open client mappings.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.flows)
	p.mu.Unlock()
	return Stats{ToTarget: p.toTarget.snapshot(), ToClient: p.toClient.snapshot(), Flows: n}
}

// Close stops the proxy: it closes the listening socket and every upstream
// socket and waits for the proxy's goroutines. It is safe to call twice;
// later calls return the first call's result.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		flows := p.flows
		p.flows = nil
		p.mu.Unlock()
		p.closeErr = p.pc.Close()
		for _, f := range flows {
			f.up.Close()
		}
		p.line.stop()
		p.wg.Wait()
	})
	return p.closeErr
}

// readClients is the read loop of the listening socket.
func (p *Proxy) readClients() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f, err := p.flowFor(from)
		if err != nil {
			p.toTarget.dropped(n)
			continue
		}
		f.touch()
		p.forward(&p.toTarget, buf[:n], func(b []byte) error {
			_, err := f.up.WriteToUDPAddrPort(b, *p.target.Load())
			return err
		})
	}
}

// readTarget is the read loop of one flow's upstream socket; it also
// expires the flow when it has been idle for the idle timeout.
func (p *Proxy) readTarget(f *flow) {
	buf := make([]byte, maxDatagram)
	for {
		idle := time.Duration(p.idle.Load())
		f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		n, _, err := f.up.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if time.Since(time.Unix(0, f.last.Load())) >= idle {
					p.expire(f)
					return
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.touch()
		p.forward(&p.toClient, buf[:n], func(b []byte) error {
			_, err := p.pc.WriteToUDPAddrPort(b, f.client)
			return err
		})
	}
}

// flowFor returns the mapping of client, creating it on first use.
func (p *Proxy) flowFor(client netip.AddrPort) (*flow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if f := p.flows[client]; f != nil {
		return f, nil
	}
	up, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.bindIP, 0)))
	if err != nil {
		return nil, err
	}
	f := &flow{client: client, up: up}
	f.touch()
	p.flows[client] = f
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.readTarget(f) }()
	return f, nil
}

// expire removes an idle flow and closes its socket.
func (p *Proxy) expire(f *flow) {
	p.mu.Lock()
	if p.flows[f.client] == f {
		delete(p.flows, f.client)
	}
	p.mu.Unlock()
	f.up.Close()
}

// forward applies the faults to one datagram read in direction c and
// writes it with send, now or after the delay. b is only valid during the
// call.
func (p *Proxy) forward(c *counters, b []byte, send func([]byte) error) {
	if p.blackhole.Load() {
		c.dropped(len(b))
		return
	}
	if r := math.Float64frombits(p.dropRate.Load()); r > 0 && rand.Float64() < r {
		c.dropped(len(b))
		return
	}
	deliver := func(b []byte) {
		if p.blackhole.Load() {
			c.dropped(len(b))
			return
		}
		if err := send(b); err != nil {
			c.dropped(len(b))
			return
		}
		c.forwarded(len(b))
	}
	p.line.submit(time.Duration(p.delay.Load()), b, deliver)
}
