package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A killed leader's followers notice at the heartbeat timeout rather than
// on Raft's own timer, which fires one to three heartbeat timeouts after
// the last contact (leaderloss.go): a survivor starts the election
// itself. Raft's timer beats the prompt only when drawn within about a
// tenth of a heartbeat timeout of it, for both survivors at once about one
// kill in a hundred; three kills without a prompt fail the test.
func TestSilentLeaderReplacedAtTheHeartbeatTimeout(t *testing.T) {
	const hb = time.Second
	h := newHarness(t, func(c *Config) { c.HeartbeatTimeout, c.ElectionTimeout = hb, hb })
	h.cluster(3)
	prompted := 0.0
	for round := range 3 {
		h.write(put(fmt.Sprintf("/devices/a%d", round)))
		old := h.leader()
		var before float64
		survivors := followers(h.replicas(), old)
		for _, r := range survivors {
			before += testutil.ToFloat64(r.c.metrics.silentLeader)
		}
		old.kill()
		h.write(put(fmt.Sprintf("/devices/b%d", round)))
		var after float64
		for _, r := range survivors {
			after += testutil.ToFloat64(r.c.metrics.silentLeader)
		}
		prompted += after - before
		t.Logf("round %d: leader %s killed; %s leads; %v elections started at the heartbeat timeout", round, old.id, h.leader().id, after-before)
		old.start()
		h.converged()
		if prompted > 0 {
			return
		}
	}
	t.Fatal("three leader kills, and no survivor started an election at the heartbeat timeout")
}

// A vote ranks the later last term first, then the higher last index;
// campaignOrder breaks ties by id.
func TestLogPositionBefore(t *testing.T) {
	for _, c := range []struct {
		p, q   logPosition
		pid    string
		qid    string
		before bool
	}{
		{logPosition{Term: 2, Index: 9}, logPosition{Term: 3, Index: 1}, "r1", "r2", true},
		{logPosition{Term: 3, Index: 1}, logPosition{Term: 2, Index: 9}, "r1", "r2", false},
		{logPosition{Term: 3, Index: 8}, logPosition{Term: 3, Index: 9}, "r2", "r1", true},
		{logPosition{Term: 3, Index: 9}, logPosition{Term: 3, Index: 8}, "r1", "r2", false},
		{logPosition{Term: 3, Index: 9}, logPosition{Term: 3, Index: 9}, "r1", "r2", true},
		{logPosition{Term: 3, Index: 9}, logPosition{Term: 3, Index: 9}, "r2", "r1", false},
	} {
		if got := c.p.before(c.pid, c.q, c.qid); got != c.before {
			t.Errorf("%+v of %s before %+v of %s: %v, want %v", c.p, c.pid, c.q, c.qid, got, c.before)
		}
	}
}
