package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
)

// The fault rounds of TestClusterFaults.

type roundKindT int

const (
	roundKill         roundKindT = iota // kill -9 of the leader at a random moment: mid-batch, mid-job, mid-sync
	roundKillSnapshot                   // kill -9 of the leader as it starts a snapshot
	roundKillInstall                    // kill -9 of the leader while a restarted replica installs its snapshot
	roundHoldInbound                    // every connection into the leader held (it still reaches the followers)
	roundIsolate                        // the leader cut from both followers, both ways
	roundCutAll                         // every replica cut from every other
)

// roundKind is round's fault: a cycle of ten rounds, six of them kills.
// Kills only: every tenth a kill aimed at a snapshot, the others at
// random moments.
func roundKind(round int, killsOnly bool) roundKindT {
	k := [10]roundKindT{roundKill, roundKill, roundKillSnapshot, roundHoldInbound, roundKill,
		roundKillInstall, roundKill, roundIsolate, roundKill, roundCutAll}[round%10]
	switch {
	case (k == roundKillSnapshot || k == roundKillInstall) && !frequentSnapshots():
		return roundKill // no snapshot to aim at
	case killsOnly && k != roundKillSnapshot:
		return roundKill
	}
	return k
}

// faultRun is one run's rounds and figures.
type faultRun struct {
	t  *testing.T
	cp *clusterProcs
	w  *clusterWorkload
	wg sync.WaitGroup // the round's watch of HQ's mirror

	mu         sync.Mutex
	failovers  []time.Duration // kill → first acknowledged write
	linkBack   []time.Duration // kill → HQ's mirror holds that write; guarded by mu
	isolations []time.Duration // leader isolated → first acknowledged write through the others

	kills, partitions, midSnapshot, midInstall int
}

// kill kills leader, measures the failover and HQ's link, and restarts it.
func (f *faultRun) kill(round int, leader *replicaProc) {
	f.killAt(round, leader, nil)
	leader.start()
}

// killAt kills leader and measures the time to the first acknowledged
// write, and (in the background, waited for at the end of the round) to
// HQ's mirror holding it. why, when not nil, says what the kill hit, from
// the leader's last output.
func (f *faultRun) killAt(round int, leader *replicaProc, why func(log string) string) {
	out := leader.p.out
	leader.kill()
	at := time.Now()
	f.kills++
	what := ""
	if why != nil {
		what = why(out.String())
	}
	d := f.w.firstWrite(leader, at, round)
	f.failovers = append(f.failovers, d)
	f.t.Logf("round %d: killed leader %s%s; first acknowledged write after %v", round, leader.id, what, d)
	f.watchHQ(round, at)
}

// watchHQ polls HQ's mirror until it holds round's write to /lin/probe,
// and records the time since at.
func (f *faultRun) watchHQ(round int, at time.Time) {
	hq := f.cp.hq.admin()
	f.wg.Go(func() {
		deadline := at.Add(time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			x, err := hq.GetContext(ctx, "/peers/plant7/lin/probe")
			cancel()
			if err == nil {
				var got int
				if json.Unmarshal(x.Variables["round"].Value, &got) == nil && got == round {
					d := time.Since(at)
					f.mu.Lock()
					f.linkBack = append(f.linkBack, d)
					f.mu.Unlock()
					f.t.Logf("round %d: HQ's mirror holds the round's write %v after the fault", round, d)
					return
				}
			}
			if time.Now().After(deadline) {
				f.w.fail(fmt.Errorf("round %d: HQ's mirror does not hold the round's write a minute after the fault (last error %v)", round, err))
				return
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
	})
}

// killMidSnapshot kills the leader as soon as it logs the start of a
// snapshot (snapshotSettings make them frequent), and tells whether the
// kill landed before the snapshot completed.
func (f *faultRun) killMidSnapshot(round int, leader *replicaProc) {
	started := leader.watch("starting snapshot up to")
	select {
	case <-started.seen:
	case <-time.After(20 * time.Second):
		leader.unwatch(started)
		f.t.Logf("round %d: leader %s took no snapshot in 20s; killing it anyway", round, leader.id)
	}
	f.killAt(round, leader, func(log string) string {
		i := strings.LastIndex(log, "starting snapshot up to")
		switch {
		case i < 0:
			return " (it had started no snapshot)"
		case !strings.Contains(log[i:], "snapshot complete up to"):
			f.midSnapshot++
			return " while it took a snapshot"
		}
		return " (its snapshot had completed)"
	})
	leader.start()
}

// killMidInstall kills the leader, keeps it down until the new leader
// compacted its log past it (twice), restarts it, and kills the new
// leader as soon as the restarted replica has received the snapshot and
// is installing it.
func (f *faultRun) killMidInstall(round int, first *replicaProc) {
	f.killAt(round, first, nil)
	next := f.cp.waitLeader(30 * time.Second)
	for range 2 {
		c := next.watch("compacting logs")
		select {
		case <-c.seen:
		case <-time.After(20 * time.Second):
			next.unwatch(c)
		}
	}
	copied := first.watch("copied to local snapshot")
	killed := make(chan time.Time, 1)
	var g sync.WaitGroup
	defer g.Wait() // also when the restart below fails the test
	g.Go(func() {
		select {
		case <-copied.seen:
			next.kill()
			killed <- time.Now()
		case <-time.After(30 * time.Second):
			first.unwatch(copied)
		}
	})
	first.start()
	g.Wait()
	select {
	case at := <-killed:
		f.kills++
		f.midInstall++
		d := f.w.firstWrite(next, at, round)
		f.t.Logf("round %d: killed leader %s while %s installed a snapshot; first acknowledged write after %v (%s installing)", round, next.id, first.id, d, first.id)
		next.start()
	default:
		f.t.Logf("round %d: %s restarted without installing a snapshot; leader %s left running", round, first.id, next.id)
	}
}

// holdInbound holds every connection into the leader for a while: the
// followers' forwarded writes and read-index requests, and their votes,
// wait.
func (f *faultRun) holdInbound(round int, leader *replicaProc) {
	f.partitions++
	leader.proxy.Partition(true)
	time.Sleep(time.Duration(500+rand.Int64N(1500)) * time.Millisecond) // the partition's length
	leader.proxy.Partition(false)
	f.t.Logf("round %d: held the links into leader %s, healed", round, leader.id)
}

// isolate cuts the leader from both followers, both ways, until a write
// is acknowledged through them (they elected another leader), then a
// while longer; clients go on talking to every replica.
func (f *faultRun) isolate(round int, leader *replicaProc) {
	f.partitions++
	for _, r := range f.cp.reps {
		if r != leader {
			f.cp.cut(leader, r, true)
		}
	}
	at := time.Now()
	d := f.w.firstWrite(leader, at, round)
	f.isolations = append(f.isolations, d)
	f.watchHQ(round, at)
	time.Sleep(time.Duration(rand.Int64N(int64(time.Second)))) // the partition's length beyond the election
	for _, r := range f.cp.reps {
		if r != leader {
			f.cp.cut(leader, r, false)
		}
	}
	f.t.Logf("round %d: cut leader %s from both followers both ways; a write acknowledged through them after %v; healed", round, leader.id, d)
}

// cutAll cuts every replica from every other: no quorum anywhere, until
// healed.
func (f *faultRun) cutAll(round int, leader *replicaProc) {
	f.partitions++
	for _, r := range f.cp.reps {
		r.proxy.Partition(true)
	}
	time.Sleep(time.Duration(500+rand.Int64N(1500)) * time.Millisecond) // the partition's length
	for _, r := range f.cp.reps {
		r.proxy.Partition(false)
	}
	f.t.Logf("round %d: held every replica's links (leader was %s), healed", round, leader.id)
}

// percentiles is "p50 X, p99 Y, max Z over N".
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %v, p99 %v, max %v over %d", s[len(s)/2].Round(time.Millisecond),
		s[len(s)*99/100].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

// summary is the run's figures.
func (f *faultRun) summary() string {
	name := "library default timeouts"
	if f.cp.tuned {
		name = "tuned timeouts 300ms/300ms/150ms"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%s: leader kill → first acknowledged write: %s; fault → HQ's mirror holds that write (upstream link back): %s; leader isolated both ways → first acknowledged write: %s",
		name, percentiles(f.failovers), percentiles(f.linkBack), percentiles(f.isolations))
}

// checkHQ proves HQ's mirror equal to the cluster's tree: the end
// marker reaches it, then federation verify matches.
func (f *faultRun) checkHQ() {
	t := f.t
	hq := f.cp.hq.admin()
	var last []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := hq.GetContext(ctx, "/peers/plant7/lin/end")
		last, match := last[:0], false
		if err == nil {
			var checks []client.MountCheck
			checks, err = hq.VerifyFederation(ctx)
			for _, m := range checks {
				match = len(checks) == 1 && m.Match
				last = append(last, fmt.Sprintf("%s %s match=%v seq=%d contexts=%d digest=%s source=%s error=%q",
					m.Peer, m.Mount, m.Match, m.Seq, m.Contexts, m.Digest, m.Source, m.Error))
			}
		}
		cancel()
		if err == nil && match {
			t.Logf("HQ's mirror verifies equal to the cluster's tree: %s", last[0])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HQ's mirror does not verify equal to the cluster's tree: %v %v", err, last)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
}
