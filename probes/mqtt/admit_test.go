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
// Its connections beyond the share are closed on accept and counted.
func TestMaxConnectingPerSource(t *testing.T) {
	m := testTree(t)
	h := &harness{t: t, model: m, devs: &fakeDevices{secrets: map[string]string{"d0": "s0"}}}
	reg := prometheus.NewRegistry()
	h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: m, Registerer: reg, MaxConnecting: 4})
	from := func(src string) int {
		a := h.broker.admissions[0]
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.sources[src]
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
