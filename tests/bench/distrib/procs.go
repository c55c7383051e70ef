package main

// The child processes of the bench: nodes (-role node) and the raw QUIC
// endpoints of the baseline (-role raw), each announcing itself on
// standard output and then answering the bench's commands
// (tests/bench/benchproc).

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// childEnv marks a child process, so that a test binary started as one
// runs the child's role instead of the tests.
const childEnv = "STRATA_DISTRIB_CHILD=1"

// nodeInfo is what a node process announces once it serves.
type nodeInfo struct {
	API string `json:"api"`
	Fed string `json:"fed"`
}

// nodeArgs configure a node process.
type nodeArgs struct {
	dir, name, role, upstream, token string
	trusted                          string // the release signing key, base64
	listen                           bool   // a federation listener (the consumer)
	verbose                          bool   // log at info (fetches with their times)
}

// usage is a process's CPU over a phase.
type usage struct {
	Wall time.Duration `json:"wall"`
	CPU  time.Duration `json:"cpu"`
	RSS  float64       `json:"rss_mb"`
}

// phaseMeter serves the "begin", "end" and profile commands of a child.
type phaseMeter struct {
	t0   time.Time
	cpu0 time.Duration
	prof benchproc.Profiler
}

func (m *phaseMeter) handle(cmd string, args []string) (any, bool, error) {
	switch cmd {
	case "begin":
		m.t0, m.cpu0 = time.Now(), benchproc.CPUTime()
		return struct{}{}, true, nil
	case "end":
		return usage{Wall: time.Since(m.t0), CPU: benchproc.CPUTime() - m.cpu0, RSS: benchproc.StatusMB("VmRSS")}, true, nil
	case "profile-start":
		return struct{}{}, true, m.prof.Start(args)
	case "profile-stop":
		m.prof.Stop()
		return struct{}{}, true, nil
	}
	return nil, false, nil
}

// runNode is a node process: node.New on its own Badger store and fs
// object store in dir, as strata serve builds it, the API and
// federation on loopback.
func runNode(a nodeArgs) error {
	cfg, err := nodeConfig(a)
	if err != nil {
		return err
	}
	// As strata serve does: the Go runtime's Ps and the MQTT ingest
	// slots from node.Procs (unless GOMAXPROCS is set).
	cores := runtime.GOMAXPROCS(0)
	procs, slots := node.Procs(cfg.MQTT, cores)
	cfg.MQTT.IngestSlots = slots
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && procs != cores {
		runtime.GOMAXPROCS(procs)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	level := slog.LevelWarn
	if a.verbose {
		level = slog.LevelInfo
	}
	n, err := node.New(node.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))})
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	if err := benchproc.Announce(nodeInfo{API: n.APIAddr(), Fed: n.FederationAddr()}); err != nil {
		return err
	}
	var m phaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.handle(cmd, args); ok {
			return v, err
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	m.prof.Stop()
	return nil
}

func nodeConfig(a nodeArgs) (config.Config, error) {
	ca, err := certs.NewCA(a.name + " CA")
	if err != nil {
		return config.Config{}, err
	}
	srv, err := ca.IssueServer(a.name, certs.ServerHosts())
	if err != nil {
		return config.Config{}, err
	}
	if err := ca.WriteFiles(filepath.Join(a.dir, "tls/ca.crt"), filepath.Join(a.dir, "tls/ca.key")); err != nil {
		return config.Config{}, err
	}
	if err := srv.WriteFiles(filepath.Join(a.dir, "tls/api.crt"), filepath.Join(a.dir, "tls/api.key")); err != nil {
		return config.Config{}, err
	}
	t, err := auth.NewTokenSecret()
	if err != nil {
		return config.Config{}, err
	}
	if err := os.WriteFile(filepath.Join(a.dir, node.AdminTokenFile), []byte(t), 0o600); err != nil {
		return config.Config{}, err
	}
	cfg := config.Default()
	cfg.Name = a.name
	cfg.Dir = a.dir
	cfg.Role = a.role
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Software.TrustedKeys = []string{a.trusted}
	if a.listen {
		cfg.Federation.Addr = "127.0.0.1:0"
	}
	if a.upstream != "" {
		cfg.Federation.Upstreams = []config.Upstream{{Address: a.upstream, Token: a.token, Publish: []string{"/devices"}}}
	}
	return cfg, nil
}
