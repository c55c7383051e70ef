package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// The known failure modes of hashicorp/raft, with writes going on
// throughout (docs/cluster.md, "Testing"): a lagging follower installing
// a snapshot while new entries arrive, a follower down for long catching
// up, a leadership transfer cut by a kill of the leader. Each ends with
// every acknowledged write in the change log and every replica holding
// the same change log, contexts and records.

// writers keep writing through whichever replica leads, as clients
// retrying across replicas would, until halted; they remember what was
// acknowledged.
type writers struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	acked []model.Entry
	n     atomic.Int64 // writes acknowledged
	lost  atomic.Int64 // writes of unknown outcome (not acknowledged)
}

func (h *harness) startWriters(k int, prefix string) *writers {
	w := &writers{stop: make(chan struct{})}
	for wi := range k {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				es, err := h.tryWrite(put(fmt.Sprintf("/devices/%s-%d-%d", prefix, wi, i), "w", fmt.Sprint(wi)))
				if err != nil {
					// Not acknowledged: its outcome is unknown, and it is
					// not checked.
					w.lost.Add(1)
					h.t.Logf("writer %d: write %d not acknowledged: %v", wi, i, err)
					continue
				}
				w.mu.Lock()
				w.acked = append(w.acked, es...)
				w.mu.Unlock()
				w.n.Add(1)
			}
		}()
	}
	return w
}

// halt stops the writers and returns what they had acknowledged. Safe to
// call twice.
func (w *writers) halt() []model.Entry {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]model.Entry(nil), w.acked...)
}

// progress waits until the writers have had k more writes acknowledged.
func (w *writers) progress(t *testing.T, k int64, what string) {
	t.Helper()
	want := w.n.Load() + k
	tstest.WaitFor(t, harnessTimeout, fmt.Sprintf("%d writes acknowledged %s", k, what), func() bool { return w.n.Load() >= want })
}

// noneLost fails unless every acknowledged entry is in v's change log
// with its sequence number.
func noneLost(t *testing.T, v view, acked []model.Entry) {
	t.Helper()
	have := make(map[string]bool, len(v.Log))
	for _, l := range v.Log {
		have[l] = true
	}
	for _, e := range acked {
		if !have[fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant)] {
			t.Fatalf("acknowledged entry %d %s lost", e.Seq, e.Mutation.Path)
		}
	}
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}
}

func restores(r *replica) float64 { return testutil.ToFloat64(r.c.metrics.restores) }

// A follower that stays a member but falls behind (the leader's
// connections into it held, as by a partition) while the others compact
// their Raft log past it installs a snapshot once it is reachable again,
// while writes go on arriving, and then follows the log.
func TestLaggingFollowerInstallsSnapshotUnderWrites(t *testing.T) {
	px, err := tcpproxy.New("127.0.0.1:0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30 // only when asked
		if c.ID == "r3" {
			c.Advertise = px.Addr() // the others reach r3 through the proxy
		}
	})
	t.Cleanup(func() { px.Close() }) // after the replicas stop (cleanups run last first)
	r1 := h.add("r1")
	if err := r1.c.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	h.leader()
	r2 := h.add("r2")
	h.join(r2, r1.addr)
	r3 := h.add("r3")
	px.SetTarget(r3.c.ListenAddress())
	h.join(r3, r1.addr)

	var acked []model.Entry
	for i := range 10 {
		acked = append(acked, h.write(put(fmt.Sprintf("/devices/before%d", i)))...)
	}
	h.converged()
	px.Partition(true)
	for i := range 40 {
		acked = append(acked, h.write(put(fmt.Sprintf("/devices/lag%d", i), "i", fmt.Sprint(i)))...)
	}
	if got, want := r3.m.LastSeq(), max(r1.m.LastSeq(), r2.m.LastSeq()); got >= want {
		t.Fatalf("r3 does not lag: at %d, the others at %d", got, want)
	}
	// The two others snapshot and compact their Raft log past r3.
	for _, r := range []*replica{r1, r2} {
		if err := r.c.raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s: snapshot: %v", r.id, err)
		}
	}
	w := h.startWriters(3, "during")
	defer w.halt() // before the cleanups stop the replicas
	w.progress(t, 10, "before the partition heals")
	before := restores(r3)
	px.Partition(false)
	tstest.WaitFor(t, harnessTimeout, "r3 installs a snapshot", func() bool { return restores(r3) > before })
	w.progress(t, 20, "after r3 installed the snapshot")
	acked = append(acked, w.halt()...)
	v := h.converged()
	noneLost(t, v, acked)
	t.Logf("%d writes acknowledged, %d not; r3 installed %v snapshots", len(acked), w.lost.Load(), restores(r3)-before)
}

// A follower down while many entries are committed and the others
// compact their Raft log comes back while writes go on: it installs a
// snapshot, applies what arrived meanwhile, and holds the same as the
// others, with nothing acknowledged lost.
func TestFollowerDownLongCatchesUpUnderWrites(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30
	})
	reps := h.cluster(3)
	leader := h.leader()
	down := followers(reps, leader)[0]
	var acked []model.Entry
	for i := range 5 {
		acked = append(acked, h.write(put(fmt.Sprintf("/devices/before%d", i)))...)
	}
	h.converged()
	down.kill()
	w := h.startWriters(3, "w")
	defer w.halt()
	w.progress(t, 60, "while the follower is down")
	for _, r := range h.replicas() {
		if r.up() {
			if err := r.c.raft().Snapshot().Error(); err != nil {
				t.Fatalf("%s: snapshot: %v", r.id, err)
			}
		}
	}
	w.progress(t, 10, "after the snapshots")
	down.start()
	tstest.WaitFor(t, harnessTimeout, down.id+" installs a snapshot", func() bool { return restores(down) >= 1 })
	w.progress(t, 20, "after the follower came back")
	acked = append(acked, w.halt()...)
	v := h.converged()
	noneLost(t, v, acked)
	t.Logf("%d writes acknowledged, %d not", len(acked), w.lost.Load())
}

// A leadership transfer cut by a kill of the leader, three times, with
// writes going on through every replica: a leader is elected each time,
// writes resume, the killed replica comes back, and nothing acknowledged
// is lost.
func TestTransferInterruptedByKillUnderWrites(t *testing.T) {
	h := newHarness(t, nil)
	h.cluster(3)
	w := h.startWriters(3, "w")
	defer w.halt()
	for round := range 3 {
		w.progress(t, 10, fmt.Sprintf("before round %d", round))
		old := h.leader()
		c := old.c
		done := make(chan error, 1)
		go func() { done <- c.TransferLeadership(context.Background()) }()
		old.kill()
		if err := <-done; err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.Canceled) {
			t.Logf("round %d: the cut transfer: %v", round, err)
		}
		w.progress(t, 10, fmt.Sprintf("after the kill of round %d", round))
		old.start()
	}
	w.progress(t, 10, "after the last restart")
	acked := w.halt()
	v := h.converged()
	noneLost(t, v, acked)
	t.Logf("%d writes acknowledged, %d not", len(acked), w.lost.Load())
}

// neverFuture is a Raft future that is never answered, as one still queued
// for Raft's main loop when it shuts down.
type neverFuture struct{}

func (neverFuture) Error() error  { select {} }
func (neverFuture) Index() uint64 { return 0 }

// A wait on a future Raft never answers ends when the replica closes: a
// leadership transfer asked for just before a kill, or a proposal queued
// behind it, must not hold the caller (or Close) for ever.
func TestAwaitEndsWithTheReplica(t *testing.T) {
	h := newHarness(t, nil)
	r := h.cluster(1)[0]
	c := r.c
	done := make(chan error, 1)
	go func() { done <- c.await(neverFuture{}) }()
	r.kill()
	select {
	case err := <-done:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("await after close: %v, want %v", err, raft.ErrRaftShutdown)
		}
	case <-time.After(harnessTimeout):
		t.Fatal("await still waits after the replica closed")
	}
}
