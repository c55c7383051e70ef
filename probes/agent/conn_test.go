package agent

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
)

// TestAgentRefusesUntrustedBroker: a broker whose certificate is not signed
// by the enrollment CA never gets the device's credentials.
func TestAgentRefusesUntrustedBroker(t *testing.T) {
	trusted, impostor := newTestCA(t), newTestCA(t)
	b := startBroker(t, impostor.serverTLS())
	p := newProxy(t, b.addr)
	a := startAgent(t, Config{
		StateDir: newStateDir(t, p.addr(), trusted.pem), Logger: tstest.Logger(t),
		ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond, Journal: false,
	})
	tstest.WaitFor(t, 10*time.Second, "three connection attempts", func() bool { return p.accepted.Load() >= 3 })
	if a.connected() || b.srv.Clients.Len() > 1 { // the inline client is always there
		t.Fatal("agent connected to a broker it must not trust")
	}
}

// TestShutdownCutsAHangingConnect: a peer that accepts TCP and then says
// nothing must not hold up Shutdown for the connect timeout.
func TestShutdownCutsAHangingConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	accepted := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, silent
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	a, err := New(Config{StateDir: newStateDir(t, ln.Addr().String(), newTestCA(t).pem), Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("agent never dialled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown during a hanging connect: %v after %v", err, time.Since(start))
	}
}

func TestBackoffFullJitter(t *testing.T) {
	for attempt, ceiling := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		for range 100 {
			if d := backoff(attempt, time.Second, time.Minute); d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [0, %v]", attempt, d, ceiling)
			}
		}
	}
	for _, attempt := range []int{6, 7, 40, 1000} {
		if d := backoff(attempt, time.Second, time.Minute); d < 0 || d > time.Minute {
			t.Fatalf("backoff(%d) = %v, want within [0, 1m]", attempt, d)
		}
	}
}
