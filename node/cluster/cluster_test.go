package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// Every replica holds the same change log, contexts and records as the
// leader, and each follower's model publishes what it applied: its
// OnCommit hooks see every entry, Changed wakes a reader, and Get shows
// the new state (no stale cache).
func TestReplicasHoldTheSameLog(t *testing.T) {
	h := newHarness(t, nil)
	h.noForward = true
	reps := h.cluster(3)
	leader := h.leader()
	follower := followers(reps, leader)[0]
	// A follower's reader waiting on the log wakes for entries it applies.
	woke := logWaiter(follower)
	// Read a context on the follower first, so its cache holds it.
	h.write(put("/devices/a", "v", "1"))
	tstest.WaitForErr(t, harnessTimeout, "the follower sees /devices/a", func() (bool, error) {
		_, err := follower.m.Get("/devices/a")
		return err == nil, err
	})

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				p := fmt.Sprintf("/devices/w%d-%d", w, i)
				// Through whichever replica leads (it may change on a
				// loaded machine).
				if _, err := h.tryWrite(put(p, "i", fmt.Sprint(i)),
					model.Mutation{Op: model.OpEvent, Path: model.Path(p), Event: &model.Event{Name: "boot", Level: model.LevelInfo}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	h.write(put("/devices/a", "v", "2"))
	h.write(model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "test", Key: "k", Value: []byte("v")}})
	h.write(model.Mutation{Op: model.OpDelete, Path: "/devices/w0-0"})
	v := h.converged()
	if len(v.Log) == 0 || v.Records["k"] != "v" {
		t.Fatalf("converged on %+v", v)
	}
	select {
	case es := <-woke:
		if len(es) == 0 {
			t.Fatal("the follower's log reader woke with nothing")
		}
	case <-time.After(harnessTimeout):
		t.Fatal("the follower's log reader never woke")
	}
	for _, r := range reps {
		if got := r.entries.Load(); got != int64(len(v.Log)) {
			t.Errorf("%s: OnCommit saw %d entries, the log holds %d", r.id, got, len(v.Log))
		}
		c, err := r.m.Get("/devices/a")
		if err != nil || c.Labels["v"] != "2" {
			t.Errorf("%s: /devices/a = %+v, %v; want label v=2", r.id, c, err)
		}
		if _, err := r.m.Get("/devices/w0-0"); err == nil {
			t.Errorf("%s: a deleted context is still shown", r.id)
		}
	}
	// A write on a follower is refused with ErrNotLeader, naming the leader.
	leader = h.leader()
	fs := followers(reps, leader)
	follower = fs[len(fs)-1]
	_, err := follower.m.Apply(context.Background(), put("/devices/nope"))
	if err == nil || !strings.Contains(err.Error(), ErrNotLeader.Error()) || !strings.Contains(err.Error(), leader.id) {
		t.Fatalf("write on a follower: %v", err)
	}
}

// Killing the leader elects another; writes go on; nothing acknowledged
// is lost; the killed replica, restarted, resumes from the index its
// store holds (applying nothing twice) and catches up.
func TestLeaderKillLosesNothing(t *testing.T) {
	h := newHarness(t, nil)
	h.cluster(3)
	var acked []model.Entry
	for round := range 3 {
		for i := range 10 {
			acked = append(acked, h.write(put(fmt.Sprintf("/devices/r%d-%d", round, i)))...)
		}
		old := h.leader()
		before, err := old.c.Store().Badger().Applied()
		if err != nil {
			t.Fatal(err)
		}
		old.kill()
		for i := range 10 {
			acked = append(acked, h.write(put(fmt.Sprintf("/devices/after%d-%d", round, i)))...)
		}
		if l := h.leader(); l == old {
			t.Fatal("the killed replica still leads")
		}
		old.start()
		if applied, err := old.c.Store().Badger().Applied(); err != nil || applied < before {
			t.Fatalf("restarted %s: store applied index %d, %v; it held %d", old.id, applied, err, before)
		}
		v := h.converged()
		// Raft hands the restarted replica its log from the start (no
		// snapshot was taken): what the store held was skipped, not
		// applied again.
		if got := old.c.skipped.Load(); got == 0 {
			t.Fatalf("restarted %s skipped no entry its store held", old.id)
		}
		have := map[string]bool{}
		for _, l := range v.Log {
			have[l] = true
		}
		for _, e := range acked {
			if !have[fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant)] {
				t.Fatalf("round %d: acknowledged entry %d %s lost", round, e.Seq, e.Mutation.Path)
			}
		}
	}
}

// A replica that joins after the leader compacted its log installs a
// snapshot while writes go on, then follows the log; restarted, it keeps
// its store rather than restoring again.
func TestNewReplicaCatchesUpFromSnapshot(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30 // only when asked
	})
	h.cluster(3)
	for i := range 60 {
		h.write(put(fmt.Sprintf("/devices/d%d", i), "i", fmt.Sprint(i)))
	}
	// Every replica snapshots and compacts its log, so that whichever
	// leads when r4 joins (leadership may move on a loaded machine) has
	// to send a snapshot.
	h.converged()
	for _, r := range h.replicas() {
		if err := r.c.raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s: snapshot: %v", r.id, err)
		}
	}
	leader := h.leader()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt() // before the cleanups stop the replicas
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.tryWrite(put(fmt.Sprintf("/devices/during%d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	r4 := h.add("r4")
	h.join(r4, leader.addr)
	halt()
	h.converged()
	if got := testutil.ToFloat64(r4.c.metrics.restores); got < 1 {
		t.Fatalf("the new replica installed %v snapshots", got)
	}
	st, err := h.leader().c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, m := range st.Members {
		roles = append(roles, m.ID+":"+m.Role+":"+m.State)
	}
	slices.Sort(roles)
	want := []string{"r1:voter:", "r2:voter:", "r3:voter:", "r4:voter:"}
	for i := range roles {
		if i >= len(want) || !strings.HasPrefix(roles[i], want[i]) || strings.HasSuffix(roles[i], "unreachable") {
			t.Fatalf("members %v", roles)
		}
	}
	if st.Leader == "" || st.Term == 0 {
		t.Fatalf("status %+v", st)
	}
	// Restarted, the new replica's store already holds the snapshot.
	r4.kill()
	h.write(put("/devices/while-r4-down"))
	r4.start()
	if r4.c.restore {
		t.Fatal("a store holding the snapshot is restored again at start")
	}
	h.converged()
}

// The whole cluster stopped and started again comes back with its data.
func TestClusterRestart(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	for i := range 20 {
		h.write(put(fmt.Sprintf("/devices/d%d", i)))
	}
	before := h.converged()
	for _, r := range reps {
		r.kill()
	}
	for _, r := range reps {
		r.start()
	}
	h.leader()
	after := h.converged()
	if after.Last != before.Last || len(after.Contexts) != len(before.Contexts) {
		t.Fatalf("after restart: last %d, %d contexts; before: %d, %d", after.Last, len(after.Contexts), before.Last, len(before.Contexts))
	}
	h.write(put("/devices/more"))
	if v := h.converged(); v.Last <= before.Last {
		t.Fatalf("no write after the restart: last %d", v.Last)
	}
}

// A follower down while the leader compacted its log past it catches up
// from a snapshot when it comes back, and keeps following.
func TestFollowerDownLongCatchesUp(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30
	})
	reps := h.cluster(3)
	leader := h.leader()
	down := followers(reps, leader)[0]
	h.write(put("/devices/before"))
	h.converged()
	down.kill()
	for i := range 40 {
		h.write(put(fmt.Sprintf("/devices/d%d", i)))
	}
	h.converged()
	for _, r := range h.replicas() { // whichever leads next has compacted its log
		if r.up() {
			if err := r.c.raft().Snapshot().Error(); err != nil {
				t.Fatalf("%s: snapshot: %v", r.id, err)
			}
		}
	}
	for i := range 10 {
		h.write(put(fmt.Sprintf("/devices/e%d", i)))
	}
	down.start()
	v := h.converged()
	if got := testutil.ToFloat64(down.c.metrics.restores); got < 1 {
		t.Fatalf("%s installed %v snapshots", down.id, got)
	}
	c, err := down.m.Get("/devices/e9")
	if err != nil || c.Path != "/devices/e9" {
		t.Fatalf("after the snapshot: %v, %v", c, err)
	}
	h.write(put("/devices/after"))
	if w := h.converged(); w.Last <= v.Last {
		t.Fatal("no progress after the catch-up")
	}
}

// A write through a follower is forwarded to the leader, and the
// follower shows it as soon as the write returns; errors keep their
// class across the hop; after the leader is killed, writes through a
// follower go to the new leader.
func TestFollowerForwardsWrites(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	leader := h.leader()
	fs := followers(reps, leader)
	ctx := context.Background()
	es, err := fs[0].m.Apply(ctx, put("/devices/via-follower", "k", "v"))
	if err != nil || len(es) == 0 {
		t.Fatalf("write through a follower: %v, %v", es, err)
	}
	if c, err := fs[0].m.Get("/devices/via-follower"); err != nil || c.Labels["k"] != "v" {
		t.Fatalf("the follower does not show its own write at once: %+v, %v", c, err)
	}
	// Tried again while there is no leader (an election on a loaded
	// machine), as a client retries a 503.
	refused := func(m model.Mutation) error {
		deadline := time.Now().Add(harnessTimeout)
		for {
			_, err := fs[0].m.Apply(ctx, m)
			if !errors.Is(err, ErrNotLeader) || time.Now().After(deadline) {
				return err
			}
			h.leader()
		}
	}
	if err := refused(model.Mutation{Op: model.OpDelete, Path: "/devices/missing"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("delete of a missing context through a follower: %v, want model.ErrNotFound", err)
	}
	if err := refused(model.Mutation{Op: model.OpDelete, Path: "/devices"}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("delete of a context with children through a follower: %v, want model.ErrConflict", err)
	}
	if got := testutil.ToFloat64(fs[0].c.metrics.forwarded.WithLabelValues("ok")); got != 1 {
		t.Fatalf("forwarded{ok} = %v, want 1", got)
	}
	leader.kill()
	tstest.WaitForErr(t, harnessTimeout, "a write through a follower after the leader died", func() (bool, error) {
		_, err := fs[1].m.Apply(ctx, put("/devices/after-kill"))
		return err == nil, err
	})
	h.converged()
}

// A leadership transfer interrupted by a kill of the leader leaves a
// cluster that elects a leader, takes writes and lost nothing.
func TestTransferInterruptedByKill(t *testing.T) {
	h := newHarness(t, nil)
	h.cluster(3)
	var acked []model.Entry
	for round := range 3 {
		for i := range 5 {
			acked = append(acked, h.write(put(fmt.Sprintf("/devices/r%d-%d", round, i)))...)
		}
		old := h.leader()
		done := make(chan error, 1)
		c := old.c
		go func() { done <- c.TransferLeadership(context.Background()) }()
		old.kill()
		<-done // either outcome: the transfer finished or was cut
		acked = append(acked, h.write(put(fmt.Sprintf("/devices/after%d", round)))...)
		old.start()
		v := h.converged()
		have := map[string]bool{}
		for _, l := range v.Log {
			have[l] = true
		}
		for _, e := range acked {
			if !have[fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant)] {
				t.Fatalf("round %d: acknowledged entry %d %s lost", round, e.Seq, e.Mutation.Path)
			}
		}
	}
}

// Handing leadership over and removing a replica work from any replica:
// a follower asks the leader.
func TestTransferAndRemoveThroughAFollower(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	old := h.leader()
	var f *replica
	for _, r := range reps {
		if r != old {
			f = r
			break
		}
	}
	ctx := context.Background()
	if err := f.c.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	if l := h.leader(); l == old {
		t.Fatal("the leader did not change")
	}
	if err := f.c.RemoveReplica(ctx, "r9"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("removing a replica that is not a member: %v", err)
	}
	var gone *replica
	for _, r := range reps {
		if !r.c.IsLeader() && r != f {
			gone = r
		}
	}
	if gone == nil {
		gone = f
	}
	via := f
	if via == gone {
		via = h.leader()
	}
	if err := via.c.RemoveReplica(ctx, gone.id); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessTimeout, "two members", func() (bool, error) {
		st, err := h.leader().c.Status(ctx)
		return err == nil && len(st.Members) == 2, fmt.Errorf("%+v", st)
	})
	gone.kill()
	h.write(put("/devices/after-remove"))
	h.converged()
}
