package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Noticing that the leader is gone (docs/cluster.md, "Failover").
//
// Raft's follower looks at its leader's last contact on a timer drawn
// anew in [HeartbeatTimeout, 2×HeartbeatTimeout) each time it fires, so a
// follower notices a leader that went silent anywhere from one to three
// heartbeat timeouts after the last contact. Until it has noticed, it
// still knows a leader and refuses the votes (and pre-votes) of a replica
// that has: with the leader of three replicas killed, the election can
// only end once both survivors have noticed, the later of two such draws;
// and when the one that noticed first holds the longer log, the other
// cannot win, and the first campaigns again only after an election
// timeout.
//
// watchLeaderContact makes a follower notice at the heartbeat timeout
// itself: every tenth of it, it looks at the last contact, and once the
// leader has been silent for longer than the heartbeat timeout it has
// Raft look at once (promptHeartbeatCheck), which then starts an election
// exactly as its own timer would have. Both survivors so notice within a
// tenth of a heartbeat timeout of each other. A follower that merely
// missed heartbeats under load (the leader is alive) runs a pre-vote that
// the others refuse, as when Raft's own timer fires, and follows the
// leader again at its next heartbeat.
//
// Forward and readIndex refuse at once (ErrNotLeader) to call a leader
// that has been silent for longer than the heartbeat timeout
// (leaderSilent): it is gone or cut off, and the caller does better to
// retry than to wait on a connection to it.

// watchLeaderContact runs until the replica closes (see above).
func (c *Cluster) watchLeaderContact(r *raft.Raft) {
	hb := r.ReloadableConfig().HeartbeatTimeout
	t := time.NewTicker(max(hb/10, 5*time.Millisecond))
	defer t.Stop()
	var prompted time.Time // the last contact a check was prompted for
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		last, silent := silentLeader(r, hb)
		if !silent || last.Equal(prompted) {
			continue
		}
		prompted = last
		if err := promptHeartbeatCheck(r); err != nil {
			// Raft's own timer notices, later (a configuration whose
			// leader lease equals its heartbeat timeout cannot be lowered).
			c.log.Warn("cannot prompt Raft to notice a silent leader: it notices on its own timer", "err", err)
			return
		}
		c.log.Info("the leader is silent: an election is due", "silent_for", time.Since(last).Round(time.Millisecond), "heartbeat_timeout", hb)
	}
}

// silentLeader reports whether r follows a leader it has not heard from
// for longer than hb, and the time it last did.
func silentLeader(r *raft.Raft, hb time.Duration) (time.Time, bool) {
	if r.State() != raft.Follower {
		return time.Time{}, false
	}
	if addr, _ := r.LeaderWithID(); addr == "" {
		return time.Time{}, false
	}
	last := r.LastContact()
	return last, !last.IsZero() && time.Since(last) > hb
}

// promptHeartbeatCheck has a follower's Raft look at its leader's last
// contact now rather than when its heartbeat timer next fires. Raft
// re-arms a follower's timer to fire at once when its heartbeat timeout
// is lowered (ReloadConfig); the timeout is lowered by a nanosecond and
// set back at once: what Raft then compares the last contact with is the
// timeout as it was.
func promptHeartbeatCheck(r *raft.Raft) error {
	rc := r.ReloadableConfig()
	lower := rc
	lower.HeartbeatTimeout -= time.Nanosecond
	if err := r.ReloadConfig(lower); err != nil {
		return err
	}
	return r.ReloadConfig(rc)
}

// leaderSilent is ErrNotLeader when this replica follows a leader it has
// not heard from for longer than the heartbeat timeout: that leader is
// gone or cut off, and an election is due.
func (c *Cluster) leaderSilent() error {
	r := c.raft()
	if r == nil {
		return nil
	}
	hb := r.ReloadableConfig().HeartbeatTimeout
	if last, silent := silentLeader(r, hb); silent {
		id, _ := c.Leader()
		return fmt.Errorf("%w: leader %s silent for %v (heartbeat timeout %v)", ErrNotLeader, id, time.Since(last).Round(time.Millisecond), hb)
	}
	return nil
}
