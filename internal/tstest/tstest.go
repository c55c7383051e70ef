// Package tstest is what the tests of every package share: waiting for a
// condition with a deadline (never sleeping to synchronise) and a logger
// that writes to the test.
package tstest

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultTimeout is the deadline tests use when they have no reason to
// pick another.
const DefaultTimeout = 10 * time.Second

// pollInterval is how often a condition is checked; it is a polling
// interval, not synchronisation.
const pollInterval = 5 * time.Millisecond

// WaitFor checks cond until it holds and fails the test when it still
// does not after timeout. what names the condition in the failure.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForErr(t, timeout, what, func() (bool, error) { return cond(), nil })
}

// WaitForErr is WaitFor for conditions that can fail along the way: the
// last error seen is part of the failure message.
func WaitForErr(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, last)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollInterval)
	}
}

// Logger returns a logger that writes to t (shown when the test fails or
// runs with -v) at Info, or Debug when STRATA_TEST_LOG=debug. Lines logged
// after the test's cleanups started are dropped, so goroutines that outlive
// the test cannot make it panic.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if strings.EqualFold(os.Getenv("STRATA_TEST_LOG"), "debug") {
		level = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("test", t.Name())
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
