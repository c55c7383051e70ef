package slots

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
)

func TestNilIsUnbounded(t *testing.T) {
	for _, n := range []int{0, -1} {
		l := New(n)
		if l != nil {
			t.Fatalf("New(%d) = %v, want nil (unbounded)", n, l)
		}
		for range 3 {
			if d := l.Acquire(); d != 0 {
				t.Fatalf("nil Acquire waited %v", d)
			}
			if !l.TryAcquire() {
				t.Fatal("nil TryAcquire failed")
			}
			if _, err := l.AcquireContext(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		l.Release()
		if l.Size() != 0 || l.InUse() != 0 || l.Waiting() != 0 {
			t.Fatalf("nil limiter: size %d, in use %d, waiting %d", l.Size(), l.InUse(), l.Waiting())
		}
	}
}

// At most n goroutines hold a slot at once; the others wait, counted,
// and each gets one once a holder gives its slot back.
func TestBound(t *testing.T) {
	const n, workers = 2, 8
	l := New(n)
	if l.Size() != n {
		t.Fatalf("Size = %d", l.Size())
	}
	for range n {
		if d := l.Acquire(); d != 0 {
			t.Fatalf("a free slot waited %v", d)
		}
	}
	if l.TryAcquire() {
		t.Fatal("TryAcquire succeeded with every slot held")
	}
	var (
		mu         sync.Mutex
		held, most int
		wg         sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Acquire()
			mu.Lock()
			held++
			most = max(most, held)
			mu.Unlock()
			mu.Lock()
			held--
			mu.Unlock()
			l.Release()
		}()
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "every worker waiting", func() bool { return l.Waiting() == workers })
	if l.InUse() != n {
		t.Fatalf("InUse = %d, want %d", l.InUse(), n)
	}
	mu.Lock()
	if held != 0 {
		t.Fatalf("%d workers ran with every slot held", held)
	}
	mu.Unlock()
	for range n {
		l.Release()
	}
	wg.Wait()
	if most > n {
		t.Fatalf("%d held a slot at once, limit %d", most, n)
	}
	if l.InUse() != 0 || l.Waiting() != 0 {
		t.Fatalf("after: in use %d, waiting %d", l.InUse(), l.Waiting())
	}
}

// AcquireContext gives up when its context ends, holding nothing; it
// takes a slot given back while it waits.
func TestAcquireContext(t *testing.T) {
	l := New(1)
	l.Acquire()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.AcquireContext(ctx)
		errc <- err
	}()
	tstest.WaitFor(t, tstest.DefaultTimeout, "waiting", func() bool { return l.Waiting() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireContext = %v, want context.Canceled", err)
	}
	if l.InUse() != 1 || l.Waiting() != 0 {
		t.Fatalf("after giving up: in use %d, waiting %d", l.InUse(), l.Waiting())
	}

	go func() {
		d, err := l.AcquireContext(context.Background())
		if err == nil && d <= 0 {
			err = errors.New("a wait of 0 reported")
		}
		errc <- err
	}()
	tstest.WaitFor(t, tstest.DefaultTimeout, "waiting", func() bool { return l.Waiting() == 1 })
	l.Release()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if l.InUse() != 1 {
		t.Fatalf("in use %d, want the waiter's slot", l.InUse())
	}
	l.Release()
}

func TestReleaseWithoutSlotPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(1).Release()
}
