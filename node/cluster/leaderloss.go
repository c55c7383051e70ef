package cluster

import (
	"context"
	"fmt"
	"sync"
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
// exactly as its own timer would have. A follower that merely missed
// heartbeats under load (the leader is alive) runs a pre-vote that the
// others refuse, as when Raft's own timer fires, and follows the leader
// again at its next heartbeat.
//
// Noticing together is not enough: the survivors then campaign within a
// few milliseconds of each other, and a survivor that campaigns a moment
// before the one holding the longer log (which alone can win) is refused
// by it (it still follows the silent leader), while one whose log equals
// the other's can split the vote with it; either way the election ends
// only after an election timeout. So the survivor that must win
// campaigns last (campaignOrder): before it has Raft look, a survivor asks
// the other voters for their last log entry ("status"); the one with the
// longest log (the highest id among equals) holds its campaign until
// each of the others has campaigned and asked it for a pre-vote, which
// Raft refuses as it still follows that leader (for at most half a
// heartbeat timeout, or up to one when another heard from the leader
// later; Raft's own timer is held off meanwhile by a heartbeat timeout
// set ten times as long). It then campaigns, and the others, no longer
// following anyone and with logs no longer than its own, grant its
// pre-vote and vote. The others campaign at once and are refused, or win
// if it is gone too. The voters are read ahead, while the leader is
// heard: Raft's main loop, which answers for the configuration, may be
// busy when it goes silent.
//
// Forward and readIndex refuse at once (ErrNotLeader) to call a leader
// that has been silent for longer than the heartbeat timeout
// (leaderSilent): it is gone or cut off, and the caller does better to
// retry than to wait on a connection to it.
//
// watchLeaderContact runs until the replica closes (see above).
func (c *Cluster) watchLeaderContact(r *raft.Raft) {
	hb := r.ReloadableConfig().HeartbeatTimeout
	p := &prevotes{ch: make(chan raft.Observation, 8), asked: map[string]prevote{}}
	obs := raft.NewObserver(p.ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RequestPreVoteRequest)
		return ok
	})
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	t := time.NewTicker(max(hb/10, 5*time.Millisecond))
	defer t.Stop()
	var (
		prompted time.Time         // the last contact a check was prompted for
		voters   map[string]string // the voters (id → address) as of votersAt
		votersAt time.Time
	)
	for {
		select {
		case <-c.quit:
			return
		case o := <-p.ch:
			p.note(o)
			continue
		case <-t.C:
		}
		last, silent := silentLeader(r, hb)
		if !silent {
			// The configuration, ready for when the leader goes silent
			// (asked of Raft's main loop, which may be busy then).
			if time.Since(votersAt) > votersRefresh {
				if f := r.GetConfiguration(); c.await(f) == nil {
					voters, votersAt = map[string]string{}, time.Now()
					for _, s := range f.Configuration().Servers {
						if s.Suffrage == raft.Voter {
							voters[string(s.ID)] = string(s.Address)
						}
					}
				}
			}
			continue
		}
		if last.Equal(prompted) {
			continue
		}
		prompted = last
		c.campaignOrder(r, hb, last, voters, p)
		if err := promptHeartbeatCheck(r); err != nil {
			// Raft's own timer notices, later (a configuration whose
			// leader lease equals its heartbeat timeout cannot be lowered).
			c.log.Warn("cannot prompt Raft to notice a silent leader: it notices on its own timer", "err", err)
			return
		}
		c.metrics.silentLeader.Inc()
		c.log.Info("the leader is silent: an election is due", "silent_for", time.Since(last).Round(time.Millisecond), "heartbeat_timeout", hb)
	}
}

// votersRefresh is how often watchLeaderContact reads the configuration
// while the leader is heard.
const votersRefresh = time.Second

// prevotes are the pre-votes this replica was asked for, as Raft observes
// them: the last each voter asked, for which term and when it was read
// (watchLeaderContact's goroutine only). A pre-vote asks for the term
// after the candidate's: a survivor campaigning after the leader of term T
// went silent asks for T+1 after that leader's last contact.
type prevotes struct {
	ch    chan raft.Observation
	asked map[string]prevote // voter id → its last pre-vote request
}

type prevote struct {
	term uint64
	at   time.Time
}

func (p *prevotes) note(o raft.Observation) {
	if req, ok := o.Data.(raft.RequestPreVoteRequest); ok {
		p.asked[string(req.ID)] = prevote{term: req.Term, at: time.Now()}
	}
}

// campaigned reports whether voter id asked for a pre-vote for a term
// after term since last.
func (p *prevotes) campaigned(id string, term uint64, last time.Time) bool {
	a := p.asked[id]
	return a.term > term && a.at.After(last)
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

// logPosition is a replica's last Raft log entry, which a vote compares.
type logPosition struct {
	Term  uint64 `json:"term"`
	Index uint64 `json:"index"`
}

// position is this replica's logPosition, nil before Start.
func (c *Cluster) position() *logPosition {
	r := c.raft()
	if r == nil {
		return nil
	}
	// A vote compares the later of the last log entry and the latest
	// snapshot: LastIndex, whose term the log holds, or else the snapshot.
	p := &logPosition{Index: r.LastIndex()}
	var l raft.Log
	if err := c.logs.GetLog(p.Index, &l); err == nil {
		p.Term = l.Term
	} else if metas, err := c.snaps.List(); err == nil && len(metas) > 0 && metas[0].Index == p.Index {
		p.Term = metas[0].Term
	}
	return p
}

// before reports whether a vote ranks p (of replica pid) below q (of
// qid): an older last term, a lower last index, or, equal, a lower id.
func (p logPosition) before(pid string, q logPosition, qid string) bool {
	if p.Term != q.Term {
		return p.Term < q.Term
	}
	if p.Index != q.Index {
		return p.Index < q.Index
	}
	return pid < qid
}

// campaignOrder returns when this follower, whose leader is silent,
// should have Raft look (see above): at once, unless it holds the
// longest log of the voters that answer; then once each of them has asked
// it for a pre-vote for a later term since last, the silent leader's last
// contact (which Raft refused, as this replica still follows that
// leader), once one of them turns out to hold a longer log (entries of the
// old leader may still be arriving), or after half a heartbeat timeout, or
// up to one for a peer that heard from that leader later. Raft's own timer
// is held off until it returns.
func (c *Cluster) campaignOrder(r *raft.Raft, hb time.Duration, last time.Time, voters map[string]string, pv *prevotes) {
	// Raft's own timer would campaign meanwhile: it is held off with a
	// heartbeat timeout ten times as long, set back on return (which,
	// lowering it, has Raft look at once).
	rc := r.ReloadableConfig()
	hold := rc
	hold.HeartbeatTimeout = 10 * rc.HeartbeatTimeout
	hold.ElectionTimeout = max(rc.ElectionTimeout, hold.HeartbeatTimeout)
	if err := r.ReloadConfig(hold); err != nil {
		return
	}
	defer r.ReloadConfig(rc)
	start := time.Now()
	_, silent := r.LeaderWithID()
	term := r.CurrentTerm()      // the silent leader's
	peers := map[string]string{} // voters other than this replica and the silent leader
	for id, addr := range voters {
		if id != c.cfg.ID && id != string(silent) {
			peers[id] = addr
		}
	}
	// The hold lasts until the others have noticed: half a heartbeat
	// timeout, or more for one that heard from the silent leader later
	// (entries still arriving), up to a heartbeat timeout.
	until := start.Add(hb / 2)
	// longest reports whether this replica holds the longest log of the
	// peers that answer within timeout, which it returns.
	longest := func(timeout time.Duration) (map[string]peerState, bool) {
		mine := c.position()
		answered := c.peerPositions(peers, timeout)
		for id, p := range answered {
			if mine == nil || mine.before(c.cfg.ID, p.logPosition, id) {
				return answered, false
			}
			if notices := p.lastContact.Add(hb + hb/5); notices.After(until) {
				until = notices
				if most := start.Add(hb); until.After(most) {
					until = most
				}
			}
		}
		return answered, true
	}
	answered, first := longest(hb / 4)
	if !first {
		return // another holds a longer log: campaign now
	}
	deadline := time.NewTimer(time.Until(until))
	defer deadline.Stop()
	again := time.NewTicker(max(hb/10, time.Millisecond)) // asking the peers again
	defer again.Stop()
	for {
		waiting := 0 // peers that answered and have not campaigned since the silent leader's last contact
		for id := range answered {
			if !pv.campaigned(id, term, last) {
				waiting++
			}
		}
		if waiting == 0 {
			if time.Since(start) > hb/20 {
				c.log.Info("the leader is silent; campaigning with the longest log now that the other replicas have", "held", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		select {
		case o := <-pv.ch:
			pv.note(o)
		case <-again.C:
			if _, first := longest(hb / 10); !first {
				c.log.Info("the leader is silent; another replica holds a longer log now: campaigning", "held", time.Since(start).Round(time.Millisecond))
				return
			}
			deadline.Reset(time.Until(until))
		case <-deadline.C:
			c.log.Info("the leader is silent; campaigning with the longest log although other replicas have not campaigned yet", "waiting_for", waiting, "held", time.Since(start).Round(time.Millisecond))
			return
		case <-c.quit:
			return
		}
	}
}

// peerState is what a peer answers campaignOrder: its last log entry and
// its last contact with the leader (zero when it did not say).
type peerState struct {
	logPosition
	lastContact time.Time
}

// peerPositions asks the replicas at addrs (id → address) for their
// last log entry and last contact, within timeout; those that do not
// answer in time, or answer without a position, are left out.
func (c *Cluster) peerPositions(addrs map[string]string, timeout time.Duration) map[string]peerState {
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, time.Millisecond))
	defer cancel()
	ctx, stop := c.untilClosed(ctx)
	defer stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := map[string]peerState{}
	for id, addr := range addrs {
		wg.Go(func() {
			resp, err := c.call(ctx, addr, rpcRequest{Op: "status"})
			if err != nil || resp.Position == nil {
				return
			}
			p := peerState{logPosition: *resp.Position}
			if resp.Status != nil && resp.Status.State == "follower" {
				p.lastContact, _ = time.Parse(time.RFC3339Nano, resp.Status.LastContact)
			}
			mu.Lock()
			got[id] = p
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}
