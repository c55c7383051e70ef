// Package slots bounds how many goroutines do one kind of work at once.
//
// A Limiter has a fixed number of slots. A goroutine takes one before the
// work and gives it back after; while every slot is held, the next one
// waits parked — not runnable, so it is not in the Go scheduler's run
// queues ahead of other work. A node keeps its device work (MQTT ingest,
// federation sync application) under one Limiter with fewer slots than
// it has Ps, so that a P is always left for its operator API however
// much the devices send: the work waits for a slot, and its source waits
// for it (a device's socket is not read, a link's stream is not), which
// is backpressure, not loss.
//
// A nil *Limiter is unbounded: every method succeeds at once.
package slots

import (
	"context"
	"sync/atomic"
	"time"
)

// Limiter is a fixed number of slots.
type Limiter struct {
	c       chan struct{}
	waiting atomic.Int64 // goroutines waiting for a slot
}

// New returns a Limiter of n slots; nil (unbounded) when n < 1.
func New(n int) *Limiter {
	if n < 1 {
		return nil
	}
	return &Limiter{c: make(chan struct{}, n)}
}

// Acquire takes a slot, waiting while none is free, and returns how long
// it waited (0 when a slot was free).
func (l *Limiter) Acquire() time.Duration {
	if l == nil {
		return 0
	}
	select {
	case l.c <- struct{}{}:
		return 0
	default:
	}
	t0 := time.Now()
	l.waiting.Add(1)
	l.c <- struct{}{}
	l.waiting.Add(-1)
	return time.Since(t0)
}

// AcquireContext is Acquire, giving up when ctx ends; it then holds no
// slot and returns ctx's error.
func (l *Limiter) AcquireContext(ctx context.Context) (time.Duration, error) {
	if l == nil {
		return 0, nil
	}
	select {
	case l.c <- struct{}{}:
		return 0, nil
	default:
	}
	t0 := time.Now()
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case l.c <- struct{}{}:
		return time.Since(t0), nil
	case <-ctx.Done():
		return time.Since(t0), ctx.Err()
	}
}

// TryAcquire takes a slot if one is free now.
func (l *Limiter) TryAcquire() bool {
	if l == nil {
		return true
	}
	select {
	case l.c <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release gives back a slot taken by Acquire, AcquireContext or a
// successful TryAcquire, by any goroutine. Releasing more than was taken
// panics.
func (l *Limiter) Release() {
	if l == nil {
		return
	}
	select {
	case <-l.c:
	default:
		panic("slots: Release without a slot held")
	}
}

// Size is the number of slots (0: unbounded).
func (l *Limiter) Size() int {
	if l == nil {
		return 0
	}
	return cap(l.c)
}

// InUse is the number of slots held.
func (l *Limiter) InUse() int {
	if l == nil {
		return 0
	}
	return len(l.c)
}

// Waiting is the number of goroutines waiting for a slot.
func (l *Limiter) Waiting() int {
	if l == nil {
		return 0
	}
	return int(l.waiting.Load())
}
