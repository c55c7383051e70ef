package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseCluster(t *testing.T) {
	cfg, err := Parse([]byte("name: plant7\ncluster:\n  id: r2\n  addr: 0.0.0.0:7400\n  advertise: 10.0.0.2:7400\n  join: [10.0.0.1:7400]\n  election_timeout: 300ms\n  snapshot_threshold: 100\n  trailing_logs: 50\n  snapshot_interval: 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.Cluster.Enabled() || cfg.Cluster.Join[0] != "10.0.0.1:7400" || cfg.Cluster.TLSCert != "tls/replica.crt" ||
		cfg.Cluster.ElectionTimeout.D().Milliseconds() != 300 || cfg.Cluster.SnapshotThreshold != 100 ||
		cfg.Cluster.TrailingLogs != 50 || cfg.Cluster.SnapshotInterval.D() != time.Second {
		t.Fatalf("cluster = %+v", cfg.Cluster)
	}
	if _, err := Parse([]byte("name: x\ncluster:\n  idd: r1\n")); err == nil {
		t.Fatal("a misspelt cluster key was accepted")
	}
}

func TestValidateCluster(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"off", func(c *Config) {}, ""},
		{"on", func(c *Config) { c.Cluster.ID, c.Cluster.Addr = "r1", ":7400" }, ""},
		{"addr without id", func(c *Config) { c.Cluster.Addr = ":7400" }, "need cluster.id"},
		{"no addr", func(c *Config) { c.Cluster.ID = "r1" }, "cluster.addr"},
		{"bad id", func(c *Config) { c.Cluster.ID, c.Cluster.Addr = "r 1", ":7400" }, "cluster.id"},
		{"bad join", func(c *Config) { c.Cluster.ID, c.Cluster.Addr, c.Cluster.Join = "r1", ":7400", []string{"nohost"} }, "cluster.join[0]"},
		{"bootstrap and join", func(c *Config) {
			c.Cluster.ID, c.Cluster.Addr, c.Cluster.Bootstrap, c.Cluster.Join = "r1", ":7400", true, []string{"a:1"}
		}, "exclude"},
		{"postgres", func(c *Config) {
			c.Cluster.ID, c.Cluster.Addr = "r1", ":7400"
			c.Store.Kind, c.Store.DSN, c.Store.ReadDSNs = StorePostgres, "postgres://x", []string{"postgres://replica"}
		}, ""},
		{"postgres without dsn", func(c *Config) {
			c.Cluster.ID, c.Cluster.Addr = "r1", ":7400"
			c.Store.Kind = StorePostgres
		}, "store.dsn"},
		{"snapshot interval", func(c *Config) {
			c.Cluster.ID, c.Cluster.Addr, c.Cluster.SnapshotInterval = "r1", ":7400", Duration(time.Millisecond)
		}, "cluster.snapshot_interval"},
		{"snapshots", func(c *Config) {
			c.Cluster.ID, c.Cluster.Addr = "r1", ":7400"
			c.Cluster.SnapshotInterval, c.Cluster.SnapshotThreshold, c.Cluster.TrailingLogs = Duration(time.Second), 100, 50
		}, ""},
		{"federation", func(c *Config) { c.Cluster.ID, c.Cluster.Addr, c.Federation.Addr = "r1", ":7400", ":7443" }, ""},
	} {
		cfg := validConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}
