package federation_test

import (
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
)

// fakeClock is a federation.Clock that moves only when told.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// waiting reports whether a timer is set (the provider is idle).
func (c *fakeClock) waiting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters) > 0
}

var _ federation.Clock = (*fakeClock)(nil)

// On a live link, a renewal that gets no answer, a refusal, or a
// certificate for another key is retried with backoff until one
// succeeds; time is a fake clock, so nothing waits for real.
func TestRenewalRetriedWithBackoff(t *testing.T) {
	hc := newHostileConsumer(t, federation.GrantRead, func() federation.WireWelcome { return federation.WireWelcome{Grant: federation.GrantRead} })
	expires := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	hc.setIssue(func(csr []byte, node string) ([]byte, error) {
		return hc.agedCert(csr, node, expires.Add(-30*24*time.Hour), expires)
	})
	clk := newFakeClock(time.Now())
	p := newTNode(t, "p1", false)
	p.configure = func(c *federation.Config) { c.Clock = clk }
	p.stop()
	p.start()
	p.ups = []federation.Upstream{{Address: hc.addr, Token: hc.token}}
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		t.Fatal(err)
	}
	link := hc.next()
	frames := link.frames(t)
	tick := func() { clk.Advance(time.Minute) }

	nextRenew(t, frames, nil) // due at once
	// No answer: asked again once the answer is overdue.
	nextRenew(t, frames, tick)
	// Refused: asked again after a backoff.
	if err := federation.WriteFrame(link.ctrl, federation.KindRefuse, federation.WireRefuse{Code: "internal", Message: "store unavailable"}); err != nil {
		t.Fatal(err)
	}
	nextRenew(t, frames, tick)
	// A certificate for another key is not kept.
	_, otherCSR, err := federation.NewCSR("p1")
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := federation.SignCSR(hc.ca.Cert, hc.ca.Key, otherCSR, "p1", 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(link.ctrl, federation.KindRenewed, federation.WireRenewed{Cert: wrong.Raw}); err != nil {
		t.Fatal(err)
	}
	// Asked again; answered properly, the renewal is kept. (Retries may
	// cross answers, so every request seen is answered until one is.)
	renewed := func() bool { return p.peer("hq", "consumer").CertExpires.After(expires) }
	deadline := time.After(wait)
	for !renewed() {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatal("the link ended")
			}
			var r federation.WireRenew
			if f.kind != federation.KindRenew || federation.DecodeBody(f.kind, f.body, &r) != nil {
				continue
			}
			good, err := federation.SignCSR(hc.ca.Cert, hc.ca.Key, r.CSR, "p1", 90*24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := federation.WriteFrame(link.ctrl, federation.KindRenewed, federation.WireRenewed{Cert: good.Raw}); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("timed out waiting for the renewal to succeed")
		case <-time.After(5 * time.Millisecond):
			tick()
		}
	}
	if p.peer("hq", "consumer").CertExpires.Equal(wrong.NotAfter) {
		t.Fatal("a certificate for another key was kept")
	}
}
