package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// After ReadBarrier, a replica's model holds every write the leader
// acknowledged before the call, on a follower as on the leader; with the
// leader gone and no quorum, ReadBarrier fails with ErrNotLeader.
func TestReadBarrier(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	ctx := context.Background()
	for i := range 50 {
		h.write(put("/devices/r", "i", string(rune('a'+i%26))))
		want := string(rune('a' + i%26))
		for _, r := range reps {
			// Refused without a leader (an election on a loaded machine),
			// it is asked again, as a client retries a 503.
			tstest.WaitForErr(t, harnessTimeout, "a read barrier on "+r.c.ID(), func() (bool, error) {
				err := r.c.ReadBarrier(ctx)
				if err != nil && !errors.Is(err, model.ErrNotLeader) {
					t.Fatalf("read barrier on %s: %v", r.c.ID(), err)
				}
				return err == nil, err
			})
			if c, err := r.m.Get("/devices/r"); err != nil || c.Labels["i"] != want {
				t.Fatalf("%s after the read barrier: %+v, %v; want i=%s", r.c.ID(), c, err, want)
			}
		}
	}
	leader := h.leader()
	fs := followers(reps, leader)
	leader.kill()
	fs[0].kill()
	tstest.WaitForErr(t, harnessTimeout, "a read barrier refused without a quorum", func() (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := fs[1].c.ReadBarrier(ctx)
		return errors.Is(err, model.ErrNotLeader), err
	})
}
