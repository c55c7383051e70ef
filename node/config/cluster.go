package config

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Cluster makes the node one replica of a Raft cluster: several replicas
// that are one logical node (docs/cluster.md). Empty ID: not a cluster.
type Cluster struct {
	// ID names this replica in the cluster: 1 to 64 letters, digits, '.',
	// '_' or '-', stable across restarts.
	ID string `yaml:"id"`
	// Addr is the replicas' channel listener (TCP HOST:PORT, mutual TLS);
	// Advertise the address the other replicas dial (default Addr).
	Addr      string `yaml:"addr"`
	Advertise string `yaml:"advertise"`
	// Bootstrap makes this replica a new cluster of one, on its first
	// start; Join lists members (HOST:PORT of their channel) through which
	// a new replica asks to be added. A replica that was part of the
	// cluster before needs neither.
	Bootstrap bool     `yaml:"bootstrap"`
	Join      []string `yaml:"join"`
	// TLSCert and TLSKey are this replica's certificate on the channel,
	// issued by the node CA (mqtt.ca_cert) as a replica certificate; when
	// the files do not exist and the CA key is at hand, the node issues
	// them at start for the advertised host.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Raft timing (defaults: the library's, 1s, 1s and 500ms).
	HeartbeatTimeout   Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout Duration `yaml:"leader_lease_timeout"`
	// Snapshots: every SnapshotInterval (jittered up to twice it) a
	// replica that applied SnapshotThreshold entries since its last
	// snapshot takes one and keeps TrailingLogs entries of its log
	// behind it (defaults: the library's, 120s, 8192 and 10240). Low
	// values snapshot often: tests that aim at snapshots use them.
	SnapshotInterval  Duration `yaml:"snapshot_interval"`
	SnapshotThreshold uint64   `yaml:"snapshot_threshold"`
	TrailingLogs      uint64   `yaml:"trailing_logs"`
	// RaftLog is the Raft log's store: "wal" (the default) or "boltdb"
	// (the store before, kept selectable for one release).
	RaftLog string `yaml:"raft_log"`
}

// Enabled reports whether the node is a replica of a cluster.
func (c *Cluster) Enabled() bool { return c.ID != "" }

func (c *Config) validateCluster() error {
	cl := &c.Cluster
	if !cl.Enabled() {
		if cl.Addr != "" || cl.Bootstrap || len(cl.Join) > 0 {
			return errors.New("cluster: addr, bootstrap and join need cluster.id")
		}
		return nil
	}
	if len(cl.ID) > 64 {
		return fmt.Errorf("cluster.id: %q is longer than 64 characters", cl.ID)
	}
	for _, r := range cl.ID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("cluster.id: %q: use letters, digits, '.', '_' and '-'", cl.ID)
		}
	}
	if err := validAddr(cl.Addr, false); err != nil {
		return fmt.Errorf("cluster.addr: %w", err)
	}
	if cl.Advertise != "" {
		if _, _, err := net.SplitHostPort(cl.Advertise); err != nil {
			return fmt.Errorf("cluster.advertise: %w", err)
		}
	}
	for i, j := range cl.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("cluster.join[%d]: %w", i, err)
		}
	}
	switch cl.RaftLog {
	case "", "wal", "boltdb":
	default:
		return fmt.Errorf("cluster.raft_log: %q: want wal or boltdb", cl.RaftLog)
	}
	if cl.Bootstrap && len(cl.Join) > 0 {
		return errors.New("cluster: bootstrap (a new cluster) and join (an existing one) exclude each other")
	}
	if cl.TLSCert == "" || cl.TLSKey == "" {
		return errors.New("cluster.tls_cert and cluster.tls_key are required")
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"cluster.heartbeat_timeout", cl.HeartbeatTimeout},
		{"cluster.election_timeout", cl.ElectionTimeout},
		{"cluster.leader_lease_timeout", cl.LeaderLeaseTimeout},
	} {
		if d.d < 0 {
			return fmt.Errorf("%s: %v must not be negative", d.key, d.d.D())
		}
	}
	if si := cl.SnapshotInterval.D(); si != 0 && si < 5*time.Millisecond {
		return fmt.Errorf("cluster.snapshot_interval: %v is below 5ms", si)
	}
	// Either store: badger (the embedded mode: every replica its own,
	// the batches replicated by Raft) or postgres (the replicas share
	// store.dsn; Raft elects the one writer). docs/cluster.md.
	return nil
}
