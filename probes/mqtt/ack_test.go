package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/strata-dm/strata/internal/tstest"
)

// tcpPair returns the dialing end of a loopback TCP connection whose
// accepting end never reads; both close when the test ends.
func tcpPair(t *testing.T) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	peer := <-accepted
	if peer == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { peer.Close() })
	return c
}

// writable tells a socket that takes a write now from one whose peer
// stopped reading and whose buffers are full.
func TestWritable(t *testing.T) {
	c := tcpPair(t) // its peer never reads
	if !writable(c) {
		t.Fatal("a fresh connection is not writable")
	}
	if !writable(&gatedConn{Conn: c}) {
		t.Fatal("the gate hides the socket")
	}
	chunk := make([]byte, 64<<10)
	for {
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)) // fills the buffers; not a synchronisation
		if _, err := c.Write(chunk); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			break
		}
	}
	if writable(c) {
		t.Fatal("a connection whose buffers are full is writable")
	}
}

// A connection that cannot be written to at the moment (here: its
// client's write lock is held, as while mochi writes a command to a slow
// device) does not hold up the PUBACKs of the other devices of its shard:
// its own come once it can be written again, after its message was
// stored.
func TestBlockedConnectionDoesNotHoldUpAcks(t *testing.T) {
	h, _, _ := gateHarness(t, 0, 64)
	// Two devices on one shard.
	first := map[*shard]string{}
	var a, b string
	for i := range 64 {
		id := fmt.Sprintf("d%d", i)
		sh := h.broker.shardOf(id)
		if other, ok := first[sh]; ok {
			a, b = other, id
			break
		}
		first[sh] = id
	}
	if a == "" {
		t.Fatal("no two devices share a shard")
	}
	ca := h.mustConnect(a, "s"+a[1:])
	cb := h.mustConnect(b, "s"+b[1:])
	for _, id := range []string{a, b} {
		tstest.WaitFor(t, tstest.DefaultTimeout, id+" online", func() bool { v, _ := h.variable(id, "online"); return v == "true" })
	}
	cl := h.broker.hook.current(a)
	cl.Lock()
	locked := true
	defer func() {
		if locked {
			cl.Unlock()
		}
	}()
	ta := ca.Publish("strata/"+a+"/telemetry", 1, false, `{"seq": 1}`)
	tstest.WaitFor(t, tstest.DefaultTimeout, a+"'s message stored", func() bool { v, _ := h.variable(a, "seq"); return v == "1" })
	publish(t, cb, "strata/"+b+"/telemetry", 1, `{"seq": 2}`) // acknowledged meanwhile
	if ta.WaitTimeout(0) {
		t.Fatal("acknowledged through a connection held by another writer")
	}
	cl.Unlock()
	locked = false
	if !ta.WaitTimeout(tstest.DefaultTimeout) || ta.Error() != nil {
		t.Fatalf("%s's PUBACK once writable: %v", a, ta.Error())
	}
}

// tryWrite writes what the socket takes without waiting: all of a small
// write on a fresh connection, part or nothing (and no error) once the
// peer stopped reading and the buffers are full.
func TestTryWrite(t *testing.T) {
	c := tcpPair(t) // its peer never reads
	rc, plain := rawSocket(&gatedConn{Conn: c})
	if rc == nil || !plain {
		t.Fatal("no raw socket under the gate")
	}
	if n, err := tryWrite(rc, []byte{0x40, 2, 0, 1}); n != 4 || err != nil {
		t.Fatalf("fresh connection: wrote %d, %v", n, err)
	}
	chunk := make([]byte, 64<<10)
	for {
		n, err := tryWrite(rc, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if n < len(chunk) {
			break // full: it did not wait
		}
	}
	if n, err := tryWrite(rc, chunk); n == len(chunk) || err != nil {
		t.Fatalf("full connection: wrote %d of %d, %v", n, len(chunk), err)
	}
}

// A device that stops reading lets its socket fill with PUBACKs: the
// committer's write, tried without waiting, then leaves the rest to the
// connection's ack writer, which writes it before anything else. Once the
// device reads again, every message it sent is acknowledged once, in
// order, as whole packets.
func TestPubacksThroughFullSocket(t *testing.T) {
	h, _, _ := gateHarness(t, 0, 1)
	conn, _ := h.slowLink(t)
	defer conn.Close()

	// Telemetry, never reading the PUBACKs, until an ack writer is
	// finishing a write the committer began.
	stop, stopped := make(chan struct{}), make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(stopped)
		var buf bytes.Buffer
		for id := 1; id < 65536; {
			select {
			case <-stop:
				return
			default:
			}
			buf.Reset()
			for range 64 {
				cp := packets.NewControlPacket(packets.PUBLISH)
				p := cp.Content.(*packets.Publish)
				p.Topic, p.QoS, p.PacketID, p.Payload = "strata/d0/telemetry", 1, uint16(id), fmt.Appendf(nil, `{"seq":%d}`, id)
				cp.WriteTo(&buf)
				id++
			}
			if _, err := conn.Write(buf.Bytes()); err != nil {
				return
			}
			sent.Add(64)
		}
	}()
	defer func() { <-stopped }()
	tstest.WaitFor(t, tstest.DefaultTimeout, "an ack writer finishing the committer's write", func() bool {
		return goroutineWaiting("(*uplink).writeRest", "(*gatedConn).Write")
	})
	close(stop)
	for want := 1; ; want++ {
		conn.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
		ack, err := packets.ReadPacket(conn)
		if err != nil {
			t.Fatalf("PUBACK %d: %v", want, err)
		}
		pa, ok := ack.Content.(*packets.Puback)
		if !ok || int(pa.PacketID) != want || pa.ReasonCode != packets.PubackSuccess {
			t.Fatalf("PUBACK %d: got %v", want, ack)
		}
		all := false
		select {
		case <-stopped:
			all = int64(want) == sent.Load() // every message sent is acknowledged
		default:
		}
		if all {
			break
		}
	}
	if v, _ := h.variable("d0", "seq"); v != fmt.Sprint(sent.Load()) {
		t.Fatalf("seq = %s, sent %d", v, sent.Load())
	}
}
