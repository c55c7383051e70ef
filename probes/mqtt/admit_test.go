package mqtt

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/internal/tstest"
)

// TestMaxConnecting: connections beyond MaxConnecting that are accepted
// and not yet connected wait to be accepted; a connection that closes, or
// whose session is established, makes room for the next.
func TestMaxConnecting(t *testing.T) {
	for _, slots := range []int{1, -1} { // under the ingest gate, and ungated
		t.Run(fmt.Sprintf("ingest_slots=%d", slots), func(t *testing.T) {
			m := testTree(t)
			h := &harness{t: t, model: m, devs: &fakeDevices{secrets: map[string]string{"d0": "s0", "d1": "s1"}}}
			reg := prometheus.NewRegistry()
			h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: m, Registerer: reg,
				IngestSlots: slots, MaxConnecting: 2, MaxConnectingPerSource: 2, ConnectTimeout: 2 * time.Second})
			connecting := func() float64 { return gauge(t, reg, "strata_mqtt_connecting") }

			// Two connections that send nothing hold the bound.
			var raw []net.Conn
			for range 2 {
				c, err := net.Dial("tcp", h.broker.Addr("tcp"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				raw = append(raw, c)
			}
			tstest.WaitFor(t, tstest.DefaultTimeout, "two connections connecting", func() bool { return connecting() == 2 })

			done := make(chan error, 1)
			go func() {
				_, err := h.connect("d0", "s0")
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("a device connected beyond the bound (err %v)", err)
			case <-time.After(300 * time.Millisecond): // it must still be waiting
			}
			if n := h.broker.Connected(); n != 0 {
				t.Fatalf("%d sessions beyond the bound", n)
			}

			raw[0].Close() // room for one
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(tstest.DefaultTimeout):
				t.Fatal("the device did not connect once there was room")
			}
			// Its session established, it no longer counts: room for d1.
			tstest.WaitFor(t, tstest.DefaultTimeout, "one connection connecting", func() bool { return connecting() == 1 })
			h.mustConnect("d1", "s1")
			tstest.WaitFor(t, tstest.DefaultTimeout, "two sessions", func() bool { return h.broker.Connected() == 2 })
		})
	}
}

// A connection the device closed while it waited to be accepted is closed
// on accept, without a handshake, and counted.
func TestAbandonedBeforeAccept(t *testing.T) {
	m := testTree(t)
	h := &harness{t: t, model: m, devs: &fakeDevices{secrets: map[string]string{"d0": "s0"}}}
	reg := prometheus.NewRegistry()
	h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: m, Registerer: reg, MaxConnecting: 1})
	hold, err := net.Dial("tcp", h.broker.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the bound held", func() bool { return gauge(t, reg, "strata_mqtt_connecting") == 1 })
	gone, err := net.Dial("tcp", h.broker.Addr("tcp")) // waits in the accept queue
	if err != nil {
		t.Fatal(err)
	}
	gone.Write([]byte{0x10}) // the start of a CONNECT
	gone.Close()
	hold.Close()
	abandoned := h.broker.metrics.connects.WithLabelValues("abandoned")
	tstest.WaitFor(t, tstest.DefaultTimeout, "the abandoned connection counted", func() bool { return counterValue(t, abandoned) == 1 })
	h.mustConnect("d0", "s0")
}

// One source address holds at most its share of the bound: a client that
// opens connections and sends nothing cannot keep devices elsewhere out.
// With no room to park (MaxParkedPerSource negative), its connections
// beyond the share are closed on accept and counted.
func TestMaxConnectingPerSource(t *testing.T) {
	m := testTree(t)
	h := &harness{t: t, model: m, devs: &fakeDevices{secrets: map[string]string{"d0": "s0"}}}
	reg := prometheus.NewRegistry()
	h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: m, Registerer: reg, MaxConnecting: 4, MaxParkedPerSource: -1})
	from := func(src string) int {
		a := h.broker.admissions[0]
		a.mu.Lock()
		defer a.mu.Unlock()
		if s := a.sources[src]; s != nil {
			return s.connecting
		}
		return 0
	}
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", h.broker.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	held := []net.Conn{dial("127.0.0.1"), dial("127.0.0.1")}
	tstest.WaitFor(t, tstest.DefaultTimeout, "the first source's share held", func() bool { return from("127.0.0.1") == 2 })
	third := dial("127.0.0.1")
	third.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection beyond its source's share was served")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a connection beyond its source's share was left open")
	}
	crowded := h.broker.metrics.connects.WithLabelValues("crowded")
	tstest.WaitFor(t, tstest.DefaultTimeout, "the refusal counted", func() bool { return counterValue(t, crowded) == 1 })
	// Another source still gets in.
	held = append(held, dial("127.0.0.2"))
	tstest.WaitFor(t, tstest.DefaultTimeout, "another source connecting", func() bool { return from("127.0.0.2") == 1 })
	if n := from("127.0.0.1"); n != 2 {
		t.Fatalf("the first source counts %d connecting, want 2", n)
	}
	// Closed, they give their share back (and their connections' ends
	// come before the broker's shutdown).
	for _, c := range held {
		c.Close()
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "every share given back", func() bool { return from("127.0.0.1") == 0 && from("127.0.0.2") == 0 })
}

// parkHarness is a broker bounding connecting connections to 4, 2 per
// source, with parked places per source for parked connections, and
// helpers to read its admission.
type parkHarness struct {
	*harness
	reg *prometheus.Registry
}

func newParkHarness(t *testing.T, parked int, timeout time.Duration, devs ...string) *parkHarness {
	m := testTree(t)
	secrets := map[string]string{}
	for _, d := range devs {
		secrets[d] = "s-" + d
	}
	h := &harness{t: t, model: m, devs: &fakeDevices{secrets: secrets}}
	reg := prometheus.NewRegistry()
	h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: m, Registerer: reg,
		MaxConnecting: 4, MaxParkedPerSource: parked, ConnectTimeout: timeout})
	return &parkHarness{harness: h, reg: reg}
}

func (p *parkHarness) parked() float64 { return gauge(p.t, p.reg, "strata_mqtt_parked") }

// connecting is the number of connections from 127.0.0.1 admitted and
// not yet connected. (The gauge strata_mqtt_connecting counts as well
// the slot the listener holds while it waits for the next connection.)
func (p *parkHarness) connecting() int {
	a := p.broker.admissions[0]
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.sources["127.0.0.1"]; s != nil {
		return s.connecting
	}
	return 0
}
func (p *parkHarness) count(result string) float64 {
	return counterValue(p.t, p.broker.metrics.connects.WithLabelValues(result))
}

// dial opens a connection from 127.0.0.1 that sends nothing.
func (p *parkHarness) dial() net.Conn {
	p.t.Helper()
	c, err := net.Dial("tcp", p.broker.Addr("tcp"))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// hold fills 127.0.0.1's share (2) with connections that send nothing.
func (p *parkHarness) hold() []net.Conn {
	held := []net.Conn{p.dial(), p.dial()}
	tstest.WaitFor(p.t, tstest.DefaultTimeout, "the share held", func() bool { return p.connecting() == 2 })
	return held
}

// release closes conns and waits until nothing of 127.0.0.1 connects or
// waits (mochi's shutdown must come after their ends).
func (p *parkHarness) release(conns ...net.Conn) {
	p.t.Helper()
	for _, c := range conns {
		c.Close()
	}
	tstest.WaitFor(p.t, tstest.DefaultTimeout, "nothing parked or connecting", func() bool {
		return p.parked() == 0 && p.connecting() == 0
	})
}

// connectAsync connects device id on a goroutine; its result comes on the
// channel.
func (p *parkHarness) connectAsync(id string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := p.connect(id, "s-"+id)
		done <- err
	}()
	return done
}

func waitConnected(t *testing.T, id string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	case <-time.After(tstest.DefaultTimeout):
		t.Fatalf("%s did not connect", id)
	}
}

// closedByNode reports whether the node closed c (rather than leaving it
// open until the deadline).
func closedByNode(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection was served")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection was left open")
	}
}

// Connections beyond their source's share wait, parked, and take over the
// admission of the source's connections that finish, oldest first; once
// the source's queue is full, the next is closed.
func TestParkedThenAdmitted(t *testing.T) {
	p := newParkHarness(t, 2, time.Minute, "d0")
	held := p.hold()

	first := p.dial() // parked first; it will send nothing
	tstest.WaitFor(t, tstest.DefaultTimeout, "a connection parked", func() bool { return p.parked() == 1 })
	d0 := p.connectAsync("d0")
	tstest.WaitFor(t, tstest.DefaultTimeout, "d0 parked", func() bool { return p.parked() == 2 })
	if n := p.count("parked"); n != 2 {
		t.Fatalf("%v connections counted as parked, want 2", n)
	}

	// The queue is full: the next is closed, and counted.
	closedByNode(t, p.dial())
	tstest.WaitFor(t, tstest.DefaultTimeout, "the refusal counted", func() bool { return p.count("crowded") == 1 })

	// One held connection goes: the oldest parked takes its place, and
	// d0 still waits.
	held[0].Close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the first parked admitted", func() bool { return p.parked() == 1 })
	select {
	case err := <-d0:
		t.Fatalf("d0 got past the connection parked before it (err %v)", err)
	default:
	}
	if n := p.connecting(); n != 2 {
		t.Fatalf("%d connecting from the source, want its share, 2", n)
	}
	// That one goes too: d0's turn.
	first.Close()
	waitConnected(t, "d0", d0)
	tstest.WaitFor(t, tstest.DefaultTimeout, "nothing parked, held[1] connecting", func() bool {
		return p.parked() == 0 && p.connecting() == 1
	})
	if n := p.broker.Connected(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	if n := p.count("crowded"); n != 1 {
		t.Fatalf("%v connections closed as crowded, want 1", n)
	}
	p.release(held[1])
}

// A parked connection whose device closes it leaves its source's queue at
// once: its place goes to the next connection of the source.
func TestParkedGoneFreesPlace(t *testing.T) {
	p := newParkHarness(t, 1, time.Minute, "d0")
	held := p.hold()
	abandoned0 := p.count("abandoned")

	gone := p.dial()
	tstest.WaitFor(t, tstest.DefaultTimeout, "a connection parked", func() bool { return p.parked() == 1 })
	gone.Write([]byte{0x10}) // the start of a CONNECT, left unread
	gone.Close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "its place freed", func() bool { return p.parked() == 0 })
	if n := p.count("abandoned") - abandoned0; n != 1 {
		t.Fatalf("%v parked connections counted as abandoned, want 1", n)
	}

	// The place is free: the next one parks rather than being closed,
	// and is admitted in turn.
	d0 := p.connectAsync("d0")
	tstest.WaitFor(t, tstest.DefaultTimeout, "d0 parked", func() bool { return p.parked() == 1 })
	held[0].Close()
	waitConnected(t, "d0", d0)
	if n := p.count("crowded"); n != 0 {
		t.Fatalf("%v connections closed as crowded, want 0", n)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "one connecting (held[1])", func() bool {
		return p.parked() == 0 && p.connecting() == 1
	})
	p.release(held[1])
}

// A parked connection waits at most the connect timeout: then it is
// closed as crowded, and the source's count is right after.
func TestParkedTimesOut(t *testing.T) {
	p := newParkHarness(t, 4, 500*time.Millisecond)
	p.hold()
	var parked []net.Conn
	for i := range 3 {
		parked = append(parked, p.dial())
		tstest.WaitFor(t, tstest.DefaultTimeout, "parked", func() bool { return p.parked() == float64(i+1) })
	}
	// The held connections reach their connect deadline first: two
	// parked ones take over their admissions (and reach theirs in turn);
	// the third waits out its own deadline in the queue.
	for _, c := range parked {
		closedByNode(t, c)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "nothing parked or connecting", func() bool {
		return p.parked() == 0 && p.connecting() == 0
	})
	if n := p.count("crowded"); n < 1 {
		t.Fatalf("%v connections closed as crowded after waiting, want at least 1", n)
	}
	a := p.broker.admissions[0]
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sources) != 0 {
		t.Fatalf("sources still counted: %v", a.sources)
	}
}

// Closing the listener closes its parked connections and waits for their
// goroutines. (The held connections close before the broker's shutdown,
// which would wait for their connect deadline.)
func TestParkedListenerClose(t *testing.T) {
	p := newParkHarness(t, 2, time.Minute)
	held := p.hold()
	c := p.dial()
	tstest.WaitFor(t, tstest.DefaultTimeout, "parked", func() bool { return p.parked() == 1 })
	p.broker.mu.Lock()
	ln := p.broker.listeners[0]
	p.broker.mu.Unlock()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	closedByNode(t, c)
	if n := p.parked(); n != 0 {
		t.Fatalf("%v parked after the listener closed", n)
	}
	p.release(held...)
}
