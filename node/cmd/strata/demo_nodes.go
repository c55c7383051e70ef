package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// demoNodeSpec is one node of the demo hierarchy.
type demoNodeSpec struct {
	name, role string
	mqtt       bool // devices connect to it
	listen     bool // providers dial into it (federation listener)
	// upstreams are the consumers it publishes to, with the grant each
	// gets; a consumer is always earlier in demoTopology.
	upstreams []demoUpstream
}

type demoUpstream struct {
	consumer, grant string
}

// demoTopology is the hierarchy, in start order: a consumer starts before
// its providers, so they can be given its join token and address. eu
// publishes to hq (operators: operate) and to reporting (a second
// consumer with read, as docs/federation.md describes); both probes
// publish their devices to eu.
var demoTopology = []demoNodeSpec{
	{name: "hq", role: config.RoleHQ, listen: true},
	{name: "reporting", role: config.RoleReporting, listen: true},
	{name: "eu", role: config.RoleRegional, listen: true,
		upstreams: []demoUpstream{{"hq", "operate"}, {"reporting", "read"}}},
	{name: "probe-a", role: config.RoleProbe, mqtt: true, upstreams: []demoUpstream{{"eu", "operate"}}},
	{name: "probe-b", role: config.RoleProbe, mqtt: true, upstreams: []demoUpstream{{"eu", "operate"}}},
}

// demoNode is one running node of the demo.
type demoNode struct {
	spec   demoNodeSpec
	dir    string
	config string // its strata.yaml
	n      *node.Node
	admin  *client.Client // its API with the admin token
}

func (d *demoNode) apiURL() string { return "https://" + d.n.APIAddr() }

// demoHasNodes reports whether dir holds the nodes of an earlier demo
// (every node's strata.yaml), none of them, or something else (an error:
// the demo does not write into a folder it did not make).
func demoHasNodes(dir string) (bool, error) {
	found := 0
	for _, s := range demoTopology {
		if _, err := os.Stat(filepath.Join(dir, s.name, configFile)); err == nil {
			found++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	if found == len(demoTopology) {
		return true, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if found > 0 || len(entries) > 0 {
		return false, fmt.Errorf("%s is neither empty nor a demo folder (a demo has %s): give an empty or new folder", dir, demoNodeNames())
	}
	return false, nil
}

func demoNodeNames() string {
	var names []string
	for _, s := range demoTopology {
		names = append(names, s.name+"/"+configFile)
	}
	return strings.Join(names, ", ")
}

// initDemoNode writes the node's folder as strata init does, with every
// listener on a loopback port free at this moment. The ports are kept in
// the config, so a demo started again on the same folder listens on the
// same ones (the providers' upstream addresses and node certificates name
// them).
func initDemoNode(dir string, s demoNodeSpec) error {
	o := initOptions{dir: dir, name: s.name, role: s.role, store: config.StoreBadger}
	var err error
	if o.apiAddr, err = freeLoopback("tcp"); err != nil {
		return err
	}
	if s.mqtt {
		if o.mqttAddr, err = freeLoopback("tcp"); err != nil {
			return err
		}
	}
	if s.listen {
		if o.fedAddr, err = freeLoopback("udp"); err != nil {
			return err
		}
	}
	return runInit(o, io.Discard)
}

// freeLoopback returns a loopback address with a port the system just
// handed out on network ("tcp" or "udp") and took back.
func freeLoopback(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// joinDemoUpstreams adds the node's consumers to its config as strata join
// does on a stopped node: a one-time peer token from each consumer's API
// with the grant, and the consumer's federation address.
func joinDemoUpstreams(ctx context.Context, nd *demoNode, consumers map[string]*demoNode) error {
	data, err := os.ReadFile(nd.config)
	if err != nil {
		return err
	}
	st, err := os.Stat(nd.config)
	if err != nil {
		return err
	}
	for _, up := range nd.spec.upstreams {
		c := consumers[up.consumer]
		tok, err := c.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: nd.spec.name, Grant: up.grant})
		if err != nil {
			return fmt.Errorf("peer token for %s on %s: %w", nd.spec.name, up.consumer, err)
		}
		u := config.Upstream{Address: c.n.FederationAddr(), Token: tok.Token}
		if nd.spec.role == config.RoleProbe {
			u.Publish = []string{"/devices"}
		}
		if data, _, err = setUpstream(data, u); err != nil {
			return err
		}
	}
	return atomicfile.Write(nd.config, data, st.Mode().Perm())
}

// loadDemoConfig reads a demo node's config. Unlike strata serve it does
// not apply STRATA_* variables: they are meant for one node, and the demo
// runs five.
func loadDemoConfig(path string) (config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Config{}, err
	}
	cfg, err := config.Parse(data)
	if err != nil {
		return config.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	cfg.Dir = filepath.Dir(path)
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// startDemoNode starts the node of nd.config and connects an admin client.
func startDemoNode(ctx context.Context, nd *demoNode, logger *slog.Logger) error {
	cfg, err := loadDemoConfig(nd.config)
	if err != nil {
		return err
	}
	n, err := node.New(node.Options{Config: cfg, Logger: logger, Version: version, ConfigFile: nd.config})
	if err != nil {
		return fmt.Errorf("node %s: %w", nd.spec.name, err)
	}
	if err := n.Start(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("node %s: %w", nd.spec.name, err), n.Shutdown(sctx))
	}
	nd.n = n
	ca, err := os.ReadFile(filepath.Join(nd.dir, caFile))
	if err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(nd.dir, adminTokenFile))
	if err != nil {
		return err
	}
	nd.admin, err = client.New(nd.apiURL(), strings.TrimSpace(string(tok)), ca)
	return err
}

// stopDemoNode shuts a started node down.
func stopDemoNode(nd *demoNode) error {
	if nd.n == nil {
		return nil
	}
	if nd.admin != nil {
		nd.admin.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	start := time.Now()
	err := nd.n.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("stop %s (after %v): %w", nd.spec.name, time.Since(start).Round(time.Millisecond), err)
	}
	return err
}
