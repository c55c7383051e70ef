package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// Measurements, not run in CI: they print figures (docs/benchmarks.md).
//
//	STRATA_CLUSTER_MEASURE=20 go test -run 'TestMeasure' -v ./node/cluster/
//	STRATA_CLUSTER_MEASURE=1 STRATA_CLUSTER_RAFTLOG=both go test -count=1 -run 'TestMeasureThroughput$' -v ./node/cluster/
//
// The value is the number of failover rounds per timing.

func measureRounds(t *testing.T) int {
	n, _ := strconv.Atoi(os.Getenv("STRATA_CLUSTER_MEASURE"))
	if n <= 0 {
		t.Skip("set STRATA_CLUSTER_MEASURE=ROUNDS to measure")
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// TestMeasureFailover times, over rounds, the time from killing the
// leader to the first write acknowledged through a client that retries
// across the surviving replicas, with the library's default timeouts and
// with tuned ones.
func TestMeasureFailover(t *testing.T) {
	rounds := measureRounds(t)
	for _, tc := range []struct {
		name                string
		hb, election, lease time.Duration
	}{
		{"library defaults (1s, 1s, 500ms)", time.Second, time.Second, 500 * time.Millisecond},
		{"tuned (300ms, 300ms, 150ms)", 300 * time.Millisecond, 300 * time.Millisecond, 150 * time.Millisecond},
	} {
		h := newHarness(t, func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = tc.hb, tc.election, tc.lease
			c.Logger = nil
		})
		h.noForward = true
		h.cluster(3)
		var ds []time.Duration
		for i := range rounds {
			h.write(put(fmt.Sprintf("/devices/r%d", i)))
			old := h.leader()
			start := time.Now()
			old.kill()
			h.write(put(fmt.Sprintf("/devices/after%d", i)))
			ds = append(ds, time.Since(start))
			old.start()
			h.converged()
		}
		t.Logf("%s: leader kill → first acknowledged write over %d rounds: p50 %v, p99 %v, max %v",
			tc.name, rounds, percentile(ds, 0.5).Round(time.Millisecond), percentile(ds, 0.99).Round(time.Millisecond),
			slices.Max(ds).Round(time.Millisecond))
		for _, r := range h.replicas() {
			r.kill()
		}
	}
}

// measureWriters is STRATA_CLUSTER_WRITERS, the concurrent writers of
// the throughput measurements (64 by default).
func measureWriters() int {
	n, _ := strconv.Atoi(os.Getenv("STRATA_CLUSTER_WRITERS"))
	if n <= 0 {
		n = 64
	}
	return n
}

// putLoad has writers goroutines apply one put at a time to m for dur,
// and returns how many were acknowledged.
func putLoad(t *testing.T, m *model.Model, writers int, dur time.Duration) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(dur)
	for w := range writers {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				if _, err := m.Apply(context.Background(), put(fmt.Sprintf("/devices/w%d/d%d", w, i%100), "i", strconv.Itoa(i))); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load()
}

// TestMeasureThroughput compares committed mutations per second through a
// three-replica cluster with a single node on the same Badger store, with
// concurrent writers of one put each.
func TestMeasureThroughput(t *testing.T) {
	measureRounds(t)
	writers := measureWriters()
	const dur = 5 * time.Second
	// cpu is the process's CPU time so far: per mutation, it measures
	// the work a mutation costs even on a machine others load.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var spent time.Duration
	var done int64
	run := func(m *model.Model) float64 {
		c0 := cpu()
		defer func() { spent = cpu() - c0 }()
		done = putLoad(t, m, writers, dur)
		return float64(done) / dur.Seconds()
	}
	db, err := store.OpenBadger(store.BadgerOptions{Dir: t.TempDir(), CacheMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	single := run(m)
	singleCPU := spent / time.Duration(max(done, 1))
	m.Close()
	db.Close()

	// STRATA_CLUSTER_RAFTLOG: the Raft log stores to measure, in turn
	// ("wal", "boltdb", "both" for boltdb then wal, or a list such as
	// "boltdb,wal,boltdb,wal"); the default store alone by default.
	kinds := strings.Split(os.Getenv("STRATA_CLUSTER_RAFTLOG"), ",")
	if kinds[0] == "both" {
		kinds = []string{RaftLogBoltDB, RaftLogWAL}
	}
	var mu sync.Mutex
	var logs []*timedLog
	wrapRaftLog = func(l raftLog) raftLog {
		mu.Lock()
		defer mu.Unlock()
		tl := &timedLog{raftLog: l}
		logs = append(logs, tl)
		return tl
	}
	defer func() { wrapRaftLog = nil }()
	for _, kind := range kinds {
		mu.Lock()
		logs = nil
		mu.Unlock()
		h := newHarness(t, func(c *Config) {
			c.Logger = nil
			c.Store.CacheMB = 64
			c.MaxInFlight, _ = strconv.Atoi(os.Getenv("STRATA_CLUSTER_INFLIGHT"))
			c.RaftLog = kind
		})
		h.noForward = true
		reps := h.cluster(3)
		leader := h.leader()
		first := leader.c.raft().LastIndex()
		mu.Lock()
		var calls0, took0 int64
		for _, l := range logs {
			calls0, took0 = calls0+l.calls.Load(), took0+l.took.Load()
		}
		mu.Unlock()
		clustered := run(leader.m)
		clusterCPU := spent / time.Duration(max(done, 1))
		// Raft log entries appended meanwhile: one per batch (and the odd
		// configuration or no-op entry).
		entries := max(leader.c.raft().LastIndex()-first, 1)
		mu.Lock()
		var calls, took int64
		for _, l := range logs {
			calls, took = calls+l.calls.Load(), took+l.took.Load()
		}
		mu.Unlock()
		calls, took = max(calls-calls0, 1), took-took0
		name := kind
		if name == "" {
			name = RaftLogWAL + " (default)"
		}
		t.Logf("raft log %s: %d writers, one put each, %v: single node %.0f mutations/s, three replicas %.0f mutations/s (%.2f×); CPU per mutation: single node %v, three replicas %v (all three in this process); %.1f mutations per Raft log entry; StoreLogs %d calls on the three replicas, %v each on average",
			name, writers, dur, single, clustered, clustered/single, singleCPU.Round(time.Microsecond/10), clusterCPU.Round(time.Microsecond/10),
			float64(done)/float64(entries), calls, (time.Duration(took) / time.Duration(calls)).Round(time.Microsecond))
		for _, r := range reps {
			r.kill()
		}
	}
}

// timedLog times a replica's StoreLogs calls.
type timedLog struct {
	raftLog
	calls, took atomic.Int64
}

func (l *timedLog) StoreLogs(ls []*raft.Log) error {
	start := time.Now()
	err := l.raftLog.StoreLogs(ls)
	l.took.Add(int64(time.Since(start)))
	l.calls.Add(1)
	return err
}

func (l *timedLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

// TestMeasureSnapshotCatchUp fills a three-replica cluster (or one:
// STRATA_CLUSTER_SNAPSHOT_REPLICAS) with
// STRATA_CLUSTER_SNAPSHOT contexts, snapshots the leader (its log is then
// compacted), and times a new replica, in a process of its own, from its
// start to its having applied everything the leader had applied when it
// joined (Join returns then), with that process's peak resident memory:
//
//	STRATA_CLUSTER_MEASURE=1 STRATA_CLUSTER_SNAPSHOT=1000000 go test -run TestMeasureSnapshotCatchUp -v -timeout 2h ./node/cluster/
func TestMeasureSnapshotCatchUp(t *testing.T) {
	measureRounds(t)
	n, _ := strconv.Atoi(os.Getenv("STRATA_CLUSTER_SNAPSHOT"))
	if n <= 0 {
		t.Skip("set STRATA_CLUSTER_SNAPSHOT=CONTEXTS")
	}
	h := newHarness(t, func(c *Config) {
		// Warnings and errors only: Badger's among them.
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.Store.CacheMB = 64
		// Long timeouts: this measures a catch-up, not a failover, with
		// big batches on a shared machine.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, 2*time.Second
		c.SnapshotThreshold = 1 << 40 // only the snapshot taken below
		c.TrailingLogs = 16
		c.ApplyTimeout = time.Minute
		c.JoinTimeout = time.Hour // the leader waits that long for the new replica
	})
	h.noForward = true
	// STRATA_CLUSTER_SNAPSHOT_REPLICAS=1 fills a cluster of one replica
	// instead of three: the same snapshot for the new replica, filled in
	// a third of the time on a busy machine.
	replicas, _ := strconv.Atoi(os.Getenv("STRATA_CLUSTER_SNAPSHOT_REPLICAS"))
	if replicas <= 0 {
		replicas = 3
	}
	h.cluster(replicas)
	leader := h.leader()
	const per = 500 // puts per proposal
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := int(next.Add(per)) - per
				if first >= n {
					return
				}
				muts := make([]model.Mutation, 0, per)
				for i := first; i < min(first+per, n); i++ {
					muts = append(muts, put(fmt.Sprintf("/devices/s%03d/d%07d", i%1000, i), "site", fmt.Sprintf("s%03d", i%1000), "rack", strconv.Itoa(i%40)))
				}
				if _, err := h.tryWrite(muts...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fill := time.Since(start)
	h.converged()
	leader = h.leader()
	start = time.Now()
	if err := leader.c.raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snap := time.Since(start)
	metas, err := leader.c.snaps.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("no snapshot: %v", err)
	}
	first, _ := leader.c.logs.FirstIndex()
	t.Logf("%d replicas: %d contexts written in %v (%.0f/s); leader snapshot %.1f MiB at index %d written in %v; log now starts at %d",
		replicas, n, fill.Round(time.Millisecond), float64(n)/fill.Seconds(), float64(metas[0].Size)/(1<<20), metas[0].Index, snap.Round(time.Millisecond), first)

	target := leader.c.raft().AppliedIndex()
	start = time.Now()
	ch := h.startChildWait("r4", filepath.Join(h.root, "r4"), "127.0.0.1:0", leader.addr, time.Hour)
	took := time.Since(start)
	st := ch.stop()
	var peak int64
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		peak = ru.Maxrss << 10 // KiB on Linux
	}
	anon, _ := strconv.ParseInt(ch.printed("PEAK_ANON"), 10, 64)
	t.Logf("new replica: started, installed the snapshot and applied up to index %d (leader's when it joined) in %v; peak resident memory %.0f MiB, of which anonymous (heap, stacks) %.0f MiB",
		target, took.Round(time.Millisecond), float64(peak)/(1<<20), float64(anon)/(1<<20))
}
