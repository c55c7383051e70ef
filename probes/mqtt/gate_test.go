package mqtt

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/internal/tstest"
)

// gateHarness is a broker with slots ingest slots over a tree that can be
// held shut, and n devices d0..d(n-1) (tenant t1).
func gateHarness(t *testing.T, slots, n int) (*harness, *gatedTree, *prometheus.Registry) {
	t.Helper()
	m := testTree(t)
	tree := &gatedTree{Tree: m}
	h := &harness{t: t, model: m, devs: &fakeDevices{secrets: map[string]string{}}}
	for i := range n {
		h.devs.secrets[fmt.Sprintf("d%d", i)] = fmt.Sprintf("s%d", i)
	}
	reg := prometheus.NewRegistry()
	h.broker = startBroker(t, Config{TCPAddr: "127.0.0.1:0", Devices: h.devs, Tree: tree, Registerer: reg, IngestSlots: slots})
	return h, tree, reg
}

// gauge reads a gauge of reg by name.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// With every ingest slot taken, a device's publish is not read: it is
// neither stored nor acknowledged, and its connection is counted as
// waiting. Once a slot is free it is read, stored, then acknowledged.
func TestIngestGateHoldsBackReads(t *testing.T) {
	h, _, reg := gateHarness(t, 1, 1)
	c := h.mustConnect("d0", "s0")
	tstest.WaitFor(t, tstest.DefaultTimeout, "presence written", func() bool { v, _ := h.variable("d0", "online"); return v == "true" })
	if got := gauge(t, reg, "strata_mqtt_ingest_slots"); got != 1 {
		t.Fatalf("strata_mqtt_ingest_slots = %v", got)
	}
	g := h.broker.gate
	tstest.WaitFor(t, tstest.DefaultTimeout, "the reader idle, without a slot", func() bool { return g.inUse() == 0 })
	g.acquire() // the only slot
	released := false
	defer func() {
		if !released {
			g.release()
		}
	}()
	waitsBefore := histogramCount(t, g.wait)
	tok := c.Publish("strata/d0/telemetry", 1, false, `{"seq": 7}`)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the connection waiting for a slot", func() bool {
		return gauge(t, reg, "strata_mqtt_ingest_waiting") == 1
	})
	if tok.WaitTimeout(0) {
		t.Fatalf("acknowledged while no slot was free (err %v)", tok.Error())
	}
	if _, ok := h.variable("d0", "seq"); ok {
		t.Fatal("stored while no slot was free")
	}
	g.release()
	released = true
	if !tok.WaitTimeout(tstest.DefaultTimeout) || tok.Error() != nil {
		t.Fatalf("publish after the slot was freed: %v", tok.Error())
	}
	if v, _ := h.variable("d0", "seq"); v != "7" {
		t.Fatalf("seq = %q after PUBACK", v)
	}
	if gauge(t, reg, "strata_mqtt_ingest_waiting") != 0 || histogramCount(t, g.wait) <= waitsBefore {
		t.Fatal("the wait was not counted")
	}
}

// A connection that must wait for room in its window (the store is slow)
// gives its ingest slot back: with a single slot, another device can
// still connect meanwhile. Then every message of every device is stored
// and acknowledged, none lost, each device's last one last.
func TestIngestGateBackpressureLosesNothing(t *testing.T) {
	const devices, each = 6, 3 * uplinkWindow
	h, tree, reg := gateHarness(t, 1, devices+1)
	var clients []paho.Client
	for i := range devices {
		id := fmt.Sprintf("d%d", i)
		clients = append(clients, h.mustConnect(id, "s"+id[1:]))
		tstest.WaitFor(t, tstest.DefaultTimeout, id+" online", func() bool { v, _ := h.variable(id, "online"); return v == "true" })
	}
	tree.shut()
	opened := false
	defer func() {
		if !opened {
			tree.open()
		}
	}()
	var wg sync.WaitGroup
	toks := make([][]paho.Token, devices)
	for i, c := range clients {
		wg.Go(func() {
			for seq := range each {
				toks[i] = append(toks[i], c.Publish(fmt.Sprintf("strata/d%d/telemetry", i), 1, false, fmt.Sprintf(`{"seq": %d}`, seq)))
			}
		})
	}
	wg.Wait()
	// Every window fills, the readers wait for room (not for a slot).
	tstest.WaitFor(t, tstest.DefaultTimeout, "every window full", func() bool {
		return gauge(t, reg, "strata_mqtt_uplink_queued") == devices*uplinkWindow
	})
	// Connecting needs the slot to read the CONNECT: the waiting readers
	// gave theirs back. (Its presence write waits for the store; the
	// CONNACK comes before it.)
	late := h.mustConnect(fmt.Sprintf("d%d", devices), fmt.Sprintf("s%d", devices))
	if !late.IsConnected() {
		t.Fatal("late device not connected")
	}
	stored := counterValue(t, h.broker.metrics.stored[topicTelemetry])
	if stored != 0 {
		t.Fatalf("%v messages stored while the store was shut", stored)
	}
	tree.open()
	opened = true
	for i := range toks {
		for seq, tok := range toks[i] {
			if !tok.WaitTimeout(tstest.DefaultTimeout) || tok.Error() != nil {
				t.Fatalf("d%d message %d: not acknowledged: %v", i, seq, tok.Error())
			}
		}
		if v, _ := h.variable(fmt.Sprintf("d%d", i), "seq"); v != fmt.Sprint(each-1) {
			t.Errorf("d%d: seq = %s, want %d", i, v, each-1)
		}
	}
	if got := counterValue(t, h.broker.metrics.stored[topicTelemetry]); got != devices*each {
		t.Fatalf("%v telemetry messages stored, want %d", got, devices*each)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "queue empty", func() bool { return gauge(t, reg, "strata_mqtt_uplink_queued") == 0 })
}

// Many devices publishing at once through two slots: every message is
// stored and acknowledged.
func TestIngestGateManyDevices(t *testing.T) {
	const devices, each, slots = 24, 50, 2
	h, _, _ := gateHarness(t, slots, devices)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for i := range devices {
		id := fmt.Sprintf("d%d", i)
		c := h.mustConnect(id, fmt.Sprintf("s%d", i))
		wg.Go(func() {
			var toks []paho.Token
			for seq := range each {
				toks = append(toks, c.Publish("strata/"+id+"/telemetry", 1, false, fmt.Sprintf(`{"seq": %d}`, seq)))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(tstest.DefaultTimeout) || tok.Error() != nil {
					errs <- fmt.Errorf("%s: %v", id, tok.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range devices {
		if v, _ := h.variable(fmt.Sprintf("d%d", i), "seq"); v != fmt.Sprint(each-1) {
			t.Errorf("d%d: seq = %s", i, v)
		}
	}
	if got := counterValue(t, h.broker.metrics.stored[topicTelemetry]); got != devices*each {
		t.Fatalf("%v messages stored, want %d", got, devices*each)
	}
}

func TestIngestGateUnbounded(t *testing.T) {
	h, _, reg := gateHarness(t, -1, 1)
	if h.broker.gate != nil {
		t.Fatal("IngestSlots -1 made a gate")
	}
	c := h.mustConnect("d0", "s0")
	publish(t, c, "strata/d0/telemetry", 1, `{"seq": 1}`)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "strata_mqtt_ingest_slots" {
			t.Fatal("ingest metrics without a gate")
		}
	}
}

// A device that stops reading its socket and keeps sending packets the
// broker answers (PINGREQ) ends with its reader blocked writing to it;
// that reader must not hold the only ingest slot meanwhile (the kernel
// lets the write progress now and then, so without this rule the other
// devices would crawl rather than stop): another device's telemetry is
// still read, stored and acknowledged.
func TestIngestGateReaderBlockedWritingGivesSlotBack(t *testing.T) {
	h, _, _ := gateHarness(t, 1, 2)
	d1 := h.mustConnect("d1", "s1")
	tstest.WaitFor(t, tstest.DefaultTimeout, "d1 online", func() bool { v, _ := h.variable("d1", "online"); return v == "true" })

	conn, server := h.slowLink(t)
	defer conn.Close()
	// PINGREQs, never reading the PINGRESPs, until the broker's side of
	// the connection cannot take more: its reader then blocks writing.
	pings := bytes.Repeat([]byte{packets.PINGREQ << 4, 0}, 4<<10)
	var flood sync.WaitGroup
	flood.Go(func() {
		for {
			if _, err := conn.Write(pings); err != nil {
				return // closed at the end of the test
			}
		}
	})
	defer flood.Wait()
	defer conn.Close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "d0's reader blocked writing a PINGRESP", func() bool {
		return !writable(server.Conn) && goroutineWaiting("[IO wait", "(*gatedConn).Write", "processPingreq")
	})
	if server.held.Load() {
		t.Fatal("d0's reader holds an ingest slot while blocked writing")
	}
	tok := d1.Publish("strata/d1/telemetry", 1, false, `{"seq": 5}`)
	if !tok.WaitTimeout(tstest.DefaultTimeout) || tok.Error() != nil {
		t.Fatalf("d1's telemetry while d0's reader is blocked writing: %v", tok.Error())
	}
	if v, _ := h.variable("d1", "seq"); v != "5" {
		t.Fatalf("seq = %q", v)
	}
}

// goroutineWaiting reports whether a goroutine's stack dump holds every
// one of parts (its state first: "[IO wait").
func goroutineWaiting(parts ...string) bool {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(g, p)
		}
		if all {
			return true
		}
	}
	return false
}

// slowLink connects device d0 (secret s0) over TCP with small socket
// buffers on both ends, a slow link that fills soon when a side stops
// reading; it returns the device's end and the broker's.
func (h *harness) slowLink(t *testing.T) (net.Conn, *gatedConn) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	conn, err := d.Dial("tcp", h.broker.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.Username, c.Password, c.UsernameFlag, c.PasswordFlag, c.CleanStart, c.KeepAlive = "d0", "d0", []byte("s0"), true, true, true, 300
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if ack, err := packets.ReadPacket(conn); err != nil || ack.Type != packets.CONNACK {
		t.Fatalf("CONNACK %v %v", ack, err)
	}
	var cl *mochi.Client
	tstest.WaitFor(t, tstest.DefaultTimeout, "d0 registered", func() bool { cl = h.broker.hook.current("d0"); return cl != nil })
	server := gateOf(cl.Net.Conn)
	server.Conn.(*net.TCPConn).SetWriteBuffer(4096) // a slow link: fills sooner
	return conn, server
}
