package cluster

import (
	"testing"
	"time"
)

// A killed leader's followers notice at the heartbeat timeout rather than
// on Raft's own timer (one to three heartbeat timeouts after the last
// contact), and the one that must win campaigns last, so that a write is
// acknowledged again soon after the heartbeat timeout (leaderloss.go).
// With a 2 s heartbeat timeout, Raft's timers alone would have both
// survivors notice within 3 s of the kill about one time in nine, and a
// refused pre-vote or a split vote would add an election timeout (2 s
// more) about one time in two.
func TestSilentLeaderReplacedAtTheHeartbeatTimeout(t *testing.T) {
	const hb = 2 * time.Second
	h := newHarness(t, func(c *Config) { c.HeartbeatTimeout, c.ElectionTimeout = hb, hb })
	h.cluster(3)
	h.write(put("/devices/a"))
	old := h.leader()
	old.kill()
	killed := time.Now()
	h.write(put("/devices/b"))
	d := time.Since(killed)
	l := h.leader()
	t.Logf("leader %s killed; %s leads; a write acknowledged %v after the kill (heartbeat timeout %v)", old.id, l.id, d.Round(time.Millisecond), hb)
	if d > hb+hb/2 {
		t.Fatalf("a write acknowledged %v after the leader's kill; want within %v of it (heartbeat timeout %v)", d, hb+hb/2, hb)
	}
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
