package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// Measurements of the PostgreSQL mode, not run in CI, each beside its
// baseline in the same run (docs/benchmarks.md):
//
//	STRATA_CLUSTER_MEASURE=20 go test -run 'TestMeasurePG' -v ./node/cluster/

// TestMeasurePGFailover times, over rounds, the leader kill to the first
// write acknowledged through a client retrying across the survivors, in
// PostgreSQL mode and, as the baseline, in the embedded mode, with the
// same tuned Raft timeouts.
func TestMeasurePGFailover(t *testing.T) {
	rounds := measureRounds(t)
	tuned := func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
		c.Logger = nil
		if c.Postgres != nil {
			c.Postgres.writerDSN = "" // no proxy
		}
	}
	for _, mode := range []string{"embedded (Badger)", "postgresql"} {
		var h *harness
		if mode == "postgresql" {
			h = newPGHarness(t, tuned).harness
		} else {
			h = newHarness(t, tuned)
		}
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
		t.Logf("%s, tuned (300ms, 300ms, 150ms): leader kill → first acknowledged write over %d rounds: p50 %v, p99 %v, max %v",
			mode, rounds, percentile(ds, 0.5).Round(time.Millisecond), percentile(ds, 0.99).Round(time.Millisecond),
			slices.Max(ds).Round(time.Millisecond))
		for _, r := range h.replicas() {
			r.kill()
		}
	}
}

// TestMeasurePGThroughput compares committed mutations per second
// through the leader of a PostgreSQL-mode cluster with a single node on
// the same PostgreSQL server, with concurrent writers of one put each.
func TestMeasurePGThroughput(t *testing.T) {
	measureRounds(t)
	writers := measureWriters()
	const dur = 5 * time.Second
	run := func(m *model.Model) float64 { return float64(putLoad(t, m, writers, dur)) / dur.Seconds() }
	db, err := store.OpenPostgres(context.Background(), store.PostgresOptions{DSN: pgtest.Shared(t).NewDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	single := run(m)
	m.Close()
	db.Close()

	ph := newPGHarness(t, func(c *Config) { c.Logger = nil; c.Postgres.writerDSN = "" })
	ph.noForward = true
	ph.cluster(3)
	clustered := run(ph.leader().m)
	t.Logf("%d writers, one put each, %v: single node on PostgreSQL %.0f mutations/s, three replicas in PostgreSQL mode %.0f mutations/s (%.2f×)",
		writers, dur, single, clustered, clustered/single)
}
