package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// A record update (model.OpUpdateRecord) proposed through any replica is
// decided by the leader's state machine against the record as the log
// has it, every replica holds the outcome, and a refusal keeps its class
// across the forwarding hop.
func TestUpdatesDecidedByTheLeader(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	for _, r := range reps {
		r.m.RegisterUpdater("test", addOnce)
	}
	try := func(r *replica, tok string) error {
		var err error
		// An election under load answers ErrNotLeader: try again.
		tstest.WaitFor(t, harnessTimeout, "an answer from "+r.id, func() bool {
			_, err = r.m.Apply(context.Background(), model.Mutation{Op: model.OpUpdateRecord,
				Record: &model.Record{Kind: "test", Key: "set", Value: []byte(tok)}})
			return !errors.Is(err, ErrNotLeader)
		})
		return err
	}
	for _, r := range reps {
		if err := try(r, r.id); err != nil && !errors.Is(err, model.ErrConflict) {
			t.Fatalf("update through %s: %v", r.id, err)
		}
	}
	for _, r := range reps {
		if err := try(r, reps[0].id); !errors.Is(err, model.ErrConflict) {
			t.Fatalf("a refused update through %s: %v; want model.ErrConflict", r.id, err)
		}
	}
	if v := h.converged(); v.Records["set"] != "r1,r2,r3" {
		t.Fatalf("record %q on every replica; want r1,r2,r3", v.Records["set"])
	}
}

// addOnce is an updater: the record is the list of tokens added; a token
// is added once.
func addOnce(key string, cur, arg []byte) ([]byte, error) {
	for _, tok := range strings.Split(string(cur), ",") {
		if tok == string(arg) {
			return nil, fmt.Errorf("%w: %s already has %s", model.ErrConflict, key, arg)
		}
	}
	if len(cur) == 0 {
		return arg, nil
	}
	return []byte(string(cur) + "," + string(arg)), nil
}

// Record updates through every replica while the leader is killed and
// restarted, then leadership moves round: every acknowledged update is in the record once, on every
// replica (the new leader decides from the records it applied, and the
// records it keeps for updates follow every batch it applies).
func TestUpdatesSurviveLeaderKill(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	for _, r := range reps {
		r.m.RegisterUpdater("test", addOnce)
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tok := fmt.Sprintf("w%d-%d", i, n)
				// Retried until it is known to be in (added, or refused as
				// there already: a try of unknown outcome that was applied).
				for {
					// Through its own replica, or another while it is down.
					var m *model.Model
					for j := range reps {
						if m = h.replicas()[(i+j)%len(reps)].model(); m != nil {
							break
						}
					}
					_, err := m.Apply(context.Background(), model.Mutation{Op: model.OpUpdateRecord,
						Record: &model.Record{Kind: "test", Key: "set", Value: []byte(tok)}})
					if err == nil || errors.Is(err, model.ErrConflict) {
						mu.Lock()
						acked[tok] = true
						mu.Unlock()
						break
					}
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond): // polling for a leader
					}
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	tstest.WaitFor(t, harnessTimeout, "updates acknowledged", func() bool { return count() >= 30 })
	old := h.leader()
	old.kill()
	n := count()
	tstest.WaitFor(t, harnessTimeout, "updates acknowledged by the new leader", func() bool { return count() >= n+30 })
	old.start()
	old.model().RegisterUpdater("test", addOnce)
	n = count()
	tstest.WaitFor(t, harnessTimeout, "updates acknowledged with the old leader back", func() bool { return count() >= n+30 })
	// Leadership moves round: a replica leads again after deciding
	// nothing for a while, on the records it applied meanwhile.
	for range 4 {
		l := h.leader()
		ctx, cancel := context.WithTimeout(context.Background(), harnessTimeout)
		err := l.c.TransferLeadership(ctx)
		cancel()
		if err != nil {
			t.Logf("transfer from %s: %v", l.id, err)
		}
		n = count()
		tstest.WaitFor(t, harnessTimeout, "updates acknowledged after a transfer", func() bool { return count() >= n+20 })
	}
	close(stop)
	wg.Wait()
	v := h.converged()
	have := map[string]int{}
	for _, tok := range strings.Split(v.Records["set"], ",") {
		have[tok]++
	}
	for tok := range acked {
		if have[tok] != 1 {
			t.Errorf("acknowledged token %s is in the record %d times", tok, have[tok])
		}
	}
	t.Logf("%d updates acknowledged, %d in the record", len(acked), len(have))
}

// A replica with no leader to forward to decides nothing: an update its
// own state machine would refuse on the records it holds (which may be
// behind the log) fails with ErrNotLeader, to be tried again, not with
// the refusal.
func TestNoLeaderDecidesNothing(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	refuse := func(key string, cur, arg []byte) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s", model.ErrNotFound, key)
	}
	for _, r := range reps {
		r.m.RegisterUpdater("test", refuse)
	}
	leader := h.leader()
	var alone *replica
	for _, r := range reps {
		if r != leader && alone == nil {
			alone = r
		} else {
			r.kill()
		}
	}
	tstest.WaitFor(t, harnessTimeout, alone.id+" knows no leader", func() bool {
		id, _ := alone.c.Leader()
		return id == ""
	})
	_, err := alone.m.Apply(context.Background(), model.Mutation{Op: model.OpUpdateRecord,
		Record: &model.Record{Kind: "test", Key: "k", Value: []byte("x")}})
	if !errors.Is(err, ErrNotLeader) || errors.Is(err, model.ErrNotFound) {
		t.Fatalf("update on a replica without a leader: %v; want ErrNotLeader only", err)
	}
}
