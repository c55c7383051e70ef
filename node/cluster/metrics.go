package cluster

import (
	"strconv"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a replica's Prometheus metrics (docs/operations.md).
type metrics struct {
	reg           prometheus.Registerer
	cs            []prometheus.Collector
	commitSeconds prometheus.Histogram
	leaderChanges prometheus.Counter
	stale         prometheus.Counter
	restores      prometheus.Counter
	rebuilds      prometheus.Counter
	refused       *prometheus.CounterVec
	forwarded     *prometheus.CounterVec
	silentLeader  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, c *Cluster) *metrics {
	m := &metrics{reg: reg,
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_cluster_commit_seconds",
			Help:    "Time from proposing a batch to its being committed by a quorum and applied on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_cluster_leadership_changes_total",
			Help: "Times this replica became or stopped being the leader.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_cluster_stale_batches_total",
			Help: "Batches refused by every replica because they were built on a state the log had moved past (a change of leader).",
		}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_cluster_snapshot_installs_total",
			Help: "Snapshots installed as the local store.",
		}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_cluster_store_rebuilds_total",
			Help: "Local stores discarded at start because the machine stopped while they were open without syncing; Raft fills the new one again.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cluster_connections_refused_total",
			Help: "Connections to the replicas' channel refused, by reason (tls: handshake or certificate; mux: unknown channel).",
		}, []string{"reason"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cluster_forwarded_total",
			Help: "Proposals a follower forwarded to the leader, by outcome (ok; refused: the leader answered an error; unreachable).",
		}, []string{"outcome"}),
		silentLeader: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_cluster_silent_leader_elections_total",
			Help: "Elections this follower started at the heartbeat timeout because its leader went silent, before Raft's own timer would have.",
		}),
	}
	applyLag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_cluster_apply_lag_entries",
		Help: "Raft log entries committed but not yet applied on this replica.",
	}, func() float64 {
		r := c.raft()
		if r == nil {
			return 0
		}
		commit, _ := strconv.ParseUint(r.Stats()["commit_index"], 10, 64)
		applied := r.AppliedIndex()
		if commit < applied {
			return 0
		}
		return float64(commit - applied)
	})
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_cluster_leader",
		Help: "1 when this replica is the leader, else 0.",
	}, func() float64 {
		if r := c.raft(); r != nil && r.State() == raft.Leader {
			return 1
		}
		return 0
	})
	m.cs = []prometheus.Collector{m.commitSeconds, m.leaderChanges, m.stale, m.restores, m.rebuilds, m.refused, m.forwarded, m.silentLeader, applyLag, leader}
	if reg != nil {
		for _, col := range m.cs {
			reg.MustRegister(col)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, col := range m.cs {
		m.reg.Unregister(col)
	}
}
