package mqtt

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
)

// writable tells a socket that takes a write now from one whose peer
// stopped reading and whose buffers are full.
func TestWritable(t *testing.T) {
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
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("no connection accepted")
	}
	defer peer.Close() // never read
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
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("no connection accepted")
	}
	defer peer.Close() // never read
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

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// The gate passes on a deadline only when it moves the one in force
// earlier, or later by an eighth of its distance from now or more.
func TestGatedConnDeadline(t *testing.T) {
	dc := &deadlineConn{}
	c := &gatedConn{Conn: dc}
	now := time.Now()
	span := 90 * time.Second
	c.SetDeadline(now.Add(span)) // first: set
	c.SetDeadline(now.Add(span + time.Second))
	c.SetDeadline(now.Add(span + 5*time.Second))  // kept: less than an eighth of 95 s later
	c.SetDeadline(now.Add(span + 15*time.Second)) // set: 15 s later, more than (90+15)/8
	c.SetDeadline(now.Add(span - time.Second))    // earlier: set
	c.SetDeadline(time.Time{})                    // none: set
	c.SetDeadline(now.Add(span))                  // after none: set
	want := []time.Time{now.Add(span), now.Add(span + 15*time.Second), now.Add(span - time.Second), {}, now.Add(span)}
	if len(dc.set) != len(want) {
		t.Fatalf("set %v, want %v", dc.set, want)
	}
	for i := range want {
		if !dc.set[i].Equal(want[i]) {
			t.Fatalf("set %v, want %v", dc.set, want)
		}
	}
}
