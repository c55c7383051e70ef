package sim

import (
	"context"
	"errors"
	"time"
)

// errKeepalive closes a session whose PINGREQ went unanswered.
var errKeepalive = errors.New("keepalive: no PINGRESP")

// runKeepalive keeps every session alive from one goroutine instead of a
// timer per connection: a session that has written nothing for 3/4 of the
// keepalive sends PINGREQ; one whose PINGREQ is unanswered after a whole
// keepalive is closed. The scan visits every device each tick, which at
// 100,000 devices is a fraction of a millisecond.
func (f *Fleet) runKeepalive(ctx context.Context) {
	ka := f.cfg.Keepalive
	t := time.NewTicker(min(time.Second, ka/4))
	defer t.Stop()
	idle := (ka * 3 / 4).Nanoseconds()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := now.UnixNano()
			for _, d := range f.devices {
				c := d.conn.Load()
				if c == nil {
					continue
				}
				if sent := c.pingSent.Load(); sent != 0 {
					if n-sent > ka.Nanoseconds() {
						c.shut(errKeepalive)
					}
					continue
				}
				if n-c.lastWrite.Load() >= idle {
					_ = c.ping(now) // a failure closes c
				}
			}
		}
	}
}
