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
	leader := h.leader()
	ctx := context.Background()
	for i := range 50 {
		if _, err := leader.m.Apply(ctx, put("/devices/r", "i", string(rune('a'+i%26)))); err != nil {
			t.Fatal(err)
		}
		want := string(rune('a' + i%26))
		for _, r := range reps {
			if err := r.c.ReadBarrier(ctx); err != nil {
				t.Fatalf("read barrier on %s: %v", r.c.ID(), err)
			}
			if c, err := r.m.Get("/devices/r"); err != nil || c.Labels["i"] != want {
				t.Fatalf("%s after the read barrier: %+v, %v; want i=%s", r.c.ID(), c, err, want)
			}
		}
	}
	var fs []*replica
	for _, r := range reps {
		if r != leader {
			fs = append(fs, r)
		}
	}
	leader.kill()
	fs[0].kill()
	tstest.WaitForErr(t, harnessTimeout, "a read barrier refused without a quorum", func() (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := fs[1].c.ReadBarrier(ctx)
		return errors.Is(err, model.ErrNotLeader), err
	})
}
