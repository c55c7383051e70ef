package tcpproxy_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// echo is a line echo server on loopback.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *tcpproxy.Proxy {
	t.Helper()
	p, err := tcpproxy.New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c, bufio.NewReader(c)}
}

// line sends msg and returns the line read back within d, or an error.
func (c *client) line(msg string, d time.Duration) (string, error) {
	if _, err := c.c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	c.c.SetReadDeadline(time.Now().Add(d))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func TestForward(t *testing.T) {
	p := newProxy(t, echo(t))
	c := dial(t, p.Addr())
	if got, err := c.line("hello", tstest.DefaultTimeout); err != nil || got != "hello" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	// A byte is counted once written on: the echo may reach the client
	// just before its count.
	tstest.WaitFor(t, tstest.DefaultTimeout, "the echo counted", func() bool { return p.Stats().BytesToClient == 6 })
	st := p.Stats()
	if st.Accepted != 1 || st.Open != 1 || st.BytesToTarget != 6 || st.BytesToClient != 6 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPartitionHoldsThenDelivers: nothing crosses a partition, the
// connection stays open, and what was held arrives in order once it heals.
func TestPartitionHoldsThenDelivers(t *testing.T) {
	p := newProxy(t, echo(t))
	c := dial(t, p.Addr())
	if _, err := c.line("before", tstest.DefaultTimeout); err != nil {
		t.Fatal(err)
	}
	p.Partition(true)
	if got, err := c.line("held-1", 200*time.Millisecond); err == nil {
		t.Fatalf("a line crossed the partition: %q", got)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the connection failed instead of going silent: %v", err)
	}
	// A new connection during the partition is accepted and held too.
	c2 := dial(t, p.Addr())
	if _, err := c2.c.Write([]byte("held-2\n")); err != nil {
		t.Fatal(err)
	}
	p.Partition(false)
	c.c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if got, err := c.r.ReadString('\n'); err != nil || got != "held-1\n" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
	c2.c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if got, err := c2.r.ReadString('\n'); err != nil || got != "held-2\n" {
		t.Fatalf("the connection made during the partition: %q, %v", got, err)
	}
}

// TestReset closes open connections, during a partition too; new ones
// still work.
func TestReset(t *testing.T) {
	p := newProxy(t, echo(t))
	c := dial(t, p.Addr())
	if _, err := c.line("x", tstest.DefaultTimeout); err != nil {
		t.Fatal(err)
	}
	p.Partition(true)
	held := dial(t, p.Addr())
	tstest.WaitFor(t, tstest.DefaultTimeout, "two links open", func() bool { return p.Stats().Open == 2 })
	p.Reset()
	for _, cl := range []*client{c, held} {
		cl.c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
		if _, err := cl.r.ReadString('\n'); err == nil {
			t.Fatal("read after reset")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a reset connection stayed open")
		}
	}
	p.Partition(false)
	tstest.WaitFor(t, tstest.DefaultTimeout, "no link open", func() bool { return p.Stats().Open == 0 })
	if got, err := dial(t, p.Addr()).line("again", tstest.DefaultTimeout); err != nil || got != "again" {
		t.Fatalf("after reset: %q, %v", got, err)
	}
}

func TestSetTargetAndClose(t *testing.T) {
	a, b := echo(t), echo(t)
	p := newProxy(t, "127.0.0.1:1") // nothing listens there
	c := dial(t, p.Addr())
	if _, err := c.line("x", tstest.DefaultTimeout); err == nil {
		t.Fatal("a refused target answered")
	}
	p.SetTarget(a)
	if got, err := dial(t, p.Addr()).line("a", tstest.DefaultTimeout); err != nil || got != "a" {
		t.Fatalf("%q, %v", got, err)
	}
	p.SetTarget(b)
	open := dial(t, p.Addr())
	if _, err := open.line("b", tstest.DefaultTimeout); err != nil {
		t.Fatal(err)
	}
	p.Partition(true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p.Close() // twice is safe
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("dialled a closed proxy")
	}
}

// TestPartitionFrom holds only the links of one source, both ways, while
// the others go on; a partition of all and of a source may overlap.
func TestPartitionFrom(t *testing.T) {
	target := echo(t)
	p, err := tcpproxy.NewWith("127.0.0.1:0", target, tcpproxy.Options{
		// The client names itself in its first byte.
		Accept: func(c net.Conn) (net.Conn, string, error) {
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return nil, "", err
			}
			return c, string(b), nil
		},
		Dial: func(target string) (net.Conn, error) { return net.Dial("tcp", target) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	named := func(name string) *client {
		c := dial(t, p.Addr())
		if _, err := c.c.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := named("a"), named("b")
	for _, c := range []*client{a, b} {
		if _, err := c.line("before", tstest.DefaultTimeout); err != nil {
			t.Fatal(err)
		}
	}
	p.PartitionFrom("a", true)
	if got, err := a.line("held", 200*time.Millisecond); err == nil {
		t.Fatalf("a line of a crossed its partition: %q", got)
	}
	if got, err := b.line("b-during", tstest.DefaultTimeout); err != nil || got != "b-during" {
		t.Fatalf("b during a's partition: %q, %v", got, err)
	}
	// A new link from a is held too; one from b is not.
	a2 := named("a")
	if _, err := a2.c.Write([]byte("a2\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := named("b").line("b2", tstest.DefaultTimeout); err != nil || got != "b2" {
		t.Fatalf("a new link of b: %q, %v", got, err)
	}
	// Healing a while everything is held delivers nothing yet.
	p.Partition(true)
	p.PartitionFrom("a", false)
	a.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if got, err := a.r.ReadString('\n'); err == nil {
		t.Fatalf("a line crossed a partition of all: %q", got)
	}
	p.Partition(false)
	a.c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if got, err := a.r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("a after healing: %q, %v", got, err)
	}
	a2.c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	if got, err := a2.r.ReadString('\n'); err != nil || got != "a2\n" {
		t.Fatalf("a's link made during the partition: %q, %v", got, err)
	}
}

// CutAfter cuts a link after exactly the bytes it allows to the client,
// once: the next connection is whole again.
func TestCutAfter(t *testing.T) {
	p := newProxy(t, echo(t))
	p.CutAfter(10)
	c := dial(t, p.Addr())
	c.c.Write([]byte("0123456789abcdef\n"))
	got, err := io.ReadAll(c.c)
	if string(got) != "0123456789" || err != nil {
		t.Fatalf("cut link read %q, %v", got, err)
	}
	if got, err := dial(t, p.Addr()).line("whole", 5*time.Second); err != nil || got != "whole" {
		t.Fatalf("next link: %q %v", got, err)
	}
}
