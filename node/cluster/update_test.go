package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// A record update (model.OpUpdateRecord) proposed through any replica is
// decided once, by the leader's state machine against the record as the
// log has it, and every replica holds the outcome: concurrent increments
// through all three replicas lose none, and a refusal keeps its class
// across the forwarding hop.
func TestUpdatesDecidedByTheLeader(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	add := func(key string, cur, arg []byte) ([]byte, error) {
		n, _ := strconv.Atoi(string(cur))
		d, _ := strconv.Atoi(string(arg))
		if n+d > 1000 {
			return nil, fmt.Errorf("%w: %s would pass 1000", model.ErrConflict, key)
		}
		return []byte(strconv.Itoa(n + d)), nil
	}
	for _, r := range reps {
		r.m.RegisterUpdater("test", add)
	}
	upd := func(d string) model.Mutation {
		return model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: "test", Key: "c", Value: []byte(d)}}
	}
	const each = 40
	var wg sync.WaitGroup
	errs := make(chan error, len(reps))
	for _, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := r.m.Apply(context.Background(), upd("1")); err != nil {
					errs <- fmt.Errorf("%s: %w", r.id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v := h.converged()
	if got := v.Records["c"]; got != strconv.Itoa(each*len(reps)) {
		t.Fatalf("counter %q on every replica; want %d", got, each*len(reps))
	}
	for _, r := range reps {
		// Through every replica, followers included (an election under
		// load answers ErrNotLeader: try again).
		tstest.WaitForErr(t, harnessTimeout, "a refused update through "+r.id, func() (bool, error) {
			_, err := r.m.Apply(context.Background(), upd("1000"))
			if errors.Is(err, ErrNotLeader) {
				return false, err
			}
			if !errors.Is(err, model.ErrConflict) {
				t.Fatalf("a refused update through %s: %v; want model.ErrConflict", r.id, err)
			}
			return true, nil
		})
	}
	if v := h.converged(); v.Records["c"] != strconv.Itoa(each*len(reps)) {
		t.Fatalf("counter %q after refused updates", v.Records["c"])
	}
}
