package udpproxy_test

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/tests/udpproxy"
)

// echoServer answers every datagram with the same bytes and records the
// source addresses it saw.
type echoServer struct {
	pc *net.UDPConn
	wg sync.WaitGroup

	mu    sync.Mutex
	peers map[string]int
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{pc: pc, peers: map[string]int{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers[from.String()]++
			s.mu.Unlock()
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) addr() string { return s.pc.LocalAddr().String() }

func (s *echoServer) close() { s.pc.Close(); s.wg.Wait() }

func (s *echoServer) peerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

func newProxy(t *testing.T, target string) *udpproxy.Proxy {
	t.Helper()
	p, err := udpproxy.New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// client is a UDP socket on its own source address, talking to the proxy.
type client struct {
	pc *net.UDPConn
	to *net.UDPAddr
}

func newClient(t *testing.T, proxyAddr string) *client {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	to, err := net.ResolveUDPAddr("udp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	return &client{pc: pc, to: to}
}

func (c *client) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.pc.WriteToUDP(b, c.to); err != nil {
		t.Fatal(err)
	}
}

// recv reads one datagram, or returns an error after timeout.
func (c *client) recv(timeout time.Duration) ([]byte, error) {
	buf := make([]byte, 64<<10)
	c.pc.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.pc.Read(buf)
	return buf[:n], err
}

// echo sends msg and expects it back within a generous timeout.
func (c *client) echo(t *testing.T, msg string) {
	t.Helper()
	c.send(t, []byte(msg))
	got, err := c.recv(5 * time.Second)
	if err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q: got %q", msg, got)
	}
}

func TestEcho(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	c := newClient(t, p.Addr())
	for i := range 10 {
		c.echo(t, fmt.Sprintf("hello %d", i))
	}
	big := bytes.Repeat([]byte("x"), 60000)
	c.send(t, big)
	if got, err := c.recv(5 * time.Second); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("large datagram: %d bytes, %v", len(got), err)
	}
	st := p.Stats()
	if st.ToTarget.Forwarded != 11 || st.ToClient.Forwarded != 11 || st.ToTarget.Dropped != 0 || st.Flows != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if want := uint64(60000 + 10*len("hello 0")); st.ToTarget.ForwardedBytes != want || st.ToClient.ForwardedBytes != want {
		t.Fatalf("bytes = %d/%d, want %d", st.ToTarget.ForwardedBytes, st.ToClient.ForwardedBytes, want)
	}
}

func TestClientsKeepTheirOwnMapping(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	a, b := newClient(t, p.Addr()), newClient(t, p.Addr())
	for i := range 20 {
		// Both in flight before either reply is read: each reply must
		// reach the client that sent it.
		a.send(t, []byte(fmt.Sprintf("a%d", i)))
		b.send(t, []byte(fmt.Sprintf("b%d", i)))
		for _, c := range []struct {
			c    *client
			want string
		}{{a, fmt.Sprintf("a%d", i)}, {b, fmt.Sprintf("b%d", i)}} {
			got, err := c.c.recv(5 * time.Second)
			if err != nil || string(got) != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		}
	}
	if n := srv.peerCount(); n != 2 {
		t.Fatalf("target saw %d source addresses, want 2 (one per client)", n)
	}
	if st := p.Stats(); st.Flows != 2 {
		t.Fatalf("flows = %d, want 2", st.Flows)
	}
}

func TestBlackholeThenHeal(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	c := newClient(t, p.Addr())
	c.echo(t, "before")

	p.Blackhole(true)
	c.send(t, []byte("lost"))
	tstest.WaitFor(t, 5*time.Second, "the datagram to be dropped", func() bool { return p.Stats().ToTarget.Dropped == 1 })
	if got, err := c.recv(100 * time.Millisecond); err == nil {
		t.Fatalf("got %q through a blackhole", got)
	}
	if st := p.Stats(); st.ToClient.Dropped != 0 || st.ToTarget.DroppedBytes != 4 {
		t.Fatalf("stats = %+v", st)
	}

	p.Blackhole(false)
	c.echo(t, "after")
	if st := p.Stats(); st.ToTarget.Forwarded != 2 || st.ToClient.Forwarded != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestBlackholeDropsReplies(t *testing.T) {
	// A target that answers late: its reply arrives while the blackhole
	// is on and must not reach the client.
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	p := newProxy(t, pc.LocalAddr().String())
	c := newClient(t, p.Addr())
	c.send(t, []byte("q"))
	buf := make([]byte, 16)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, from, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	p.Blackhole(true)
	pc.WriteToUDPAddrPort([]byte("late"), from)
	tstest.WaitFor(t, 5*time.Second, "the reply to be dropped", func() bool { return p.Stats().ToClient.Dropped == 1 })
	if got, err := c.recv(100 * time.Millisecond); err == nil {
		t.Fatalf("got %q through a blackhole", got)
	}
	p.Blackhole(false)
	pc.WriteToUDPAddrPort([]byte("healed"), from)
	if got, err := c.recv(5 * time.Second); err != nil || string(got) != "healed" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestDelay(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	c := newClient(t, p.Addr())
	c.echo(t, "warm")

	const d = 40 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	c.echo(t, "slow")
	// Only a lower bound: the delay applies in each direction.
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip %s, want at least %s", rtt, 2*d)
	}

	// Order is kept, including across a lowered delay.
	const n = 100
	for i := range n {
		if i == n/2 {
			p.SetDelay(d / 4)
		}
		c.send(t, []byte(fmt.Sprint(i)))
	}
	last := -1
	for range n {
		got, err := c.recv(5 * time.Second)
		if err != nil {
			break // loss on loopback is possible; order is what is checked
		}
		var i int
		fmt.Sscan(string(got), &i)
		if i <= last {
			t.Fatalf("datagram %d after %d", i, last)
		}
		last = i
	}
	if last < 0 {
		t.Fatal("no delayed datagram came back")
	}

	p.SetDelay(0)
	c.echo(t, "fast again")
}

func TestDelayDoesNotBlockOtherFlows(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	a, b := newClient(t, p.Addr()), newClient(t, p.Addr())
	const d = 200 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	for i := range 10 {
		a.send(t, []byte(fmt.Sprintf("a%d", i)))
		b.send(t, []byte(fmt.Sprintf("b%d", i)))
	}
	for _, c := range []*client{a, b} {
		for range 10 {
			if _, err := c.recv(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	// All twenty share one delay instead of queuing behind each other
	// (a sleep per datagram in a read loop would take 20 × 2 × d); only
	// the lower bound is asserted, the total is logged.
	if el := time.Since(start); el < 2*d {
		t.Fatalf("round trips took %s, want at least %s", el, 2*d)
	} else {
		t.Logf("20 delayed round trips of %s each way in %s", d, el)
	}
}

func TestDropRate(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	c := newClient(t, p.Addr())

	const rate, total, burst = 0.25, 4000, 100
	p.SetDropRate(rate)
	for sent := 0; sent < total; {
		for range burst {
			c.send(t, []byte("d"))
			sent++
		}
		// Let the proxy read the burst before the next one, so the
		// kernel's socket buffer never drops for us.
		tstest.WaitFor(t, 5*time.Second, "the proxy to read the burst", func() bool {
			st := p.Stats().ToTarget
			return st.Forwarded+st.Dropped == uint64(sent)
		})
	}
	st := p.Stats().ToTarget
	got := float64(st.Dropped) / total
	t.Logf("drop rate %.2f: dropped %d of %d (%.3f)", rate, st.Dropped, total, got)
	if got < rate-0.07 || got > rate+0.07 {
		t.Fatalf("dropped %.3f of datagrams, want about %.2f", got, rate)
	}

	p.SetDropRate(1)
	before := p.Stats().ToTarget.Dropped
	c.send(t, []byte("gone"))
	tstest.WaitFor(t, 5*time.Second, "the datagram to be dropped", func() bool { return p.Stats().ToTarget.Dropped == before+1 })

	p.SetDropRate(0)
	for {
		// Drain echoes of the lossy phase, then check nothing is lost.
		if _, err := c.recv(50 * time.Millisecond); err != nil {
			break
		}
	}
	for i := range 20 {
		c.echo(t, fmt.Sprint("kept ", i))
	}
}

func TestSetTarget(t *testing.T) {
	first := startEcho(t)
	p := newProxy(t, first.addr())
	c := newClient(t, p.Addr())
	c.echo(t, "to first")

	first.close()
	second := startEcho(t)
	if err := p.SetTarget(second.addr()); err != nil {
		t.Fatal(err)
	}
	c.echo(t, "to second")
	if err := p.SetTarget("not an address"); err == nil {
		t.Fatal("SetTarget accepted a bad address")
	}
	c.echo(t, "still to second")
}

func TestIdleMappingsExpire(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	p.SetIdleTimeout(100 * time.Millisecond)
	c := newClient(t, p.Addr())
	c.echo(t, "one")
	if n := p.Stats().Flows; n != 1 {
		t.Fatalf("flows = %d, want 1", n)
	}
	tstest.WaitFor(t, 5*time.Second, "the idle mapping to expire", func() bool { return p.Stats().Flows == 0 })
	c.echo(t, "two")
	if n := p.Stats().Flows; n != 1 {
		t.Fatalf("flows = %d, want 1", n)
	}
	// The target now sees a new source address for the same client, as
	// after a NAT rebinding.
	if n := srv.peerCount(); n != 2 {
		t.Fatalf("target saw %d source addresses, want 2", n)
	}
}

func TestCloseTwice(t *testing.T) {
	srv := startEcho(t)
	p, err := udpproxy.New("127.0.0.1:0", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, p.Addr())
	p.SetDelay(time.Hour) // a datagram stuck in the delay line
	c.send(t, []byte("stuck"))
	tstest.WaitFor(t, 5*time.Second, "the proxy to read", func() bool { return p.Stats().Flows == 1 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Flows != 0 {
		t.Fatalf("flows after close = %d", st.Flows)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := udpproxy.New("127.0.0.1:0", "no port"); err == nil {
		t.Fatal("New accepted a bad target")
	}
	if _, err := udpproxy.New("256.0.0.1:0", "127.0.0.1:1"); err == nil {
		t.Fatal("New accepted a bad listen address")
	}
}
