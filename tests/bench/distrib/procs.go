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

// runNode is a node process: node.New on its own Badger store and fs
// object store in dir, as strata serve builds it, the API and
// federation on loopback.
func runNode(a nodeArgs) error {
	cfg, err := nodeConfig(a)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if a.verbose {
		level = slog.LevelInfo
	}
	n, err := benchproc.StartNodeLogging(cfg, level) // as strata serve does
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	if err := benchproc.Announce(nodeInfo{API: n.APIAddr(), Fed: n.FederationAddr()}); err != nil {
		return err
	}
	var m benchproc.PhaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.Handle(cmd, args); ok {
			return v, err
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	m.Stop()
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
