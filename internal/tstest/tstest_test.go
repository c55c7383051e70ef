package tstest

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitForReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, DefaultTimeout, "the third check", func() bool { return n.Add(1) >= 3 })
	if got := n.Load(); got != 3 {
		t.Fatalf("checked %d times, want 3", got)
	}
}

// fakeTB records Fatalf instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestWaitForErrFailsAfterDeadline(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("recovered %v, want the fake's Fatalf", r)
			}
		}()
		WaitForErr(f, 20*time.Millisecond, "never", func() (bool, error) { return false, errors.New("boom") })
	}()
	if f.failed == "" {
		t.Fatal("WaitForErr returned without failing")
	}
}

func TestLoggerDropsLinesAfterCleanup(t *testing.T) {
	var log = Logger(t)
	log.Info("during the test")
	t.Cleanup(func() { log.Info("in a later cleanup") }) // runs before Logger's own cleanup
}
