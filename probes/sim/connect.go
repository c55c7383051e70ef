package sim

import (
	"context"
	"errors"
	"sync"
	"time"
)

// pacer spaces events at a fixed rate: each wait takes the next slot. It
// keeps no credit for idle time, so it never bursts.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newPacer(perSecond float64) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / perSecond)}
}

// wait blocks until the caller's slot, or ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(p.interval)
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// enqueue queues a device for a connection attempt. The queue holds every
// device at most once (a device is queued only while it has no session
// and no attempt in progress), so the send never blocks.
func (f *Fleet) enqueue(d *device) {
	select {
	case f.queue <- d:
	default:
	}
}

// connectWorker opens sessions for queued devices, paced by the fleet's
// connect rate, until ctx ends. Transient failures are retried with
// backoff when Reconnect is set; auth refusals never are.
func (f *Fleet) connectWorker(ctx context.Context) {
	for {
		var d *device
		select {
		case <-ctx.Done():
			return
		case d = <-f.queue:
		}
		if f.pacer.wait(ctx) != nil {
			return
		}
		first, err := d.connect(ctx)
		if err != nil && !errors.Is(err, errClosedByClient) && ctx.Err() == nil {
			f.note(&f.stats.connectFails, "connect", err)
			if f.cfg.Reconnect && !authRefused(err) {
				d.retryLater()
			}
		}
		if first && f.firstLeft.Add(-1) == 0 {
			f.mu.Lock()
			f.connectTime = time.Since(f.connectStart)
			f.connectsAtReady = f.stats.connects.Load()
			f.mu.Unlock()
			close(f.ready)
		}
	}
}
