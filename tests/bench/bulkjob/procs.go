package main

// The child processes of the bench: nodes (-role node) and device
// simulators (-role sim), each announcing itself on standard output and
// then answering the bench's commands (tests/bench/benchproc).

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// nodeInfo is what a node process announces once it serves.
type nodeInfo struct {
	API  string `json:"api"`
	MQTT string `json:"mqtt"`
	Fed  string `json:"fed"`
}

// nodeArgs configure a node process.
type nodeArgs struct {
	dir, name, upstream, token string
	listen                     bool // a federation listener (the consumer)
}

// runNode is a node process: node.New on its own Badger store in dir, as
// strata serve builds it, the API, MQTT and federation on loopback.
func runNode(a nodeArgs) error {
	cfg, err := nodeConfig(a)
	if err != nil {
		return err
	}
	n, err := benchproc.StartNode(cfg) // as strata serve does
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	if err := benchproc.Announce(nodeInfo{API: n.APIAddr(), MQTT: n.MQTTAddr("tls"), Fed: n.FederationAddr()}); err != nil {
		return err
	}
	var m benchproc.PhaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.Handle(cmd, args); ok {
			return v, err
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
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
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	if a.listen {
		cfg.Role = config.RoleHQ
		cfg.Federation.Addr = "127.0.0.1:0"
	} else {
		cfg.Role = config.RoleProbe
	}
	if a.upstream != "" {
		cfg.Federation.Upstreams = []config.Upstream{{Address: a.upstream, Token: a.token, Publish: []string{"/devices"}}}
	}
	return cfg, nil
}

// simArgs configure a simulator process.
type simArgs struct {
	devices     int
	creds       string // credentials file (empty: anonymous)
	mqtt, ca    string
	prefix      string // anonymous client ids
	connectRate float64
	sources     int
}

// received counts the devices that received a command of one job (by
// the job id's first jobPrefixLen bytes), each once, and when the last
// first receipt was.
type received struct {
	n    atomic.Int64
	last atomic.Int64 // unix ns
}

// jobPrefixLen is the length of a bulk job's id ("b" and 20 characters),
// which begins each of its device jobs' ids.
const jobPrefixLen = 21

// simCount is a simulator's answer to "count PREFIX".
type simCount struct {
	Received  int64 `json:"received"`
	Last      int64 `json:"last"` // unix ns of the last, 0 when none
	Connected int64 `json:"connected"`
	Dropped   int64 `json:"dropped"` // disconnects the simulator did not ask for
	Dups      int64 `json:"dups"`    // commands received twice
}

// runSim is a simulator process: devices that connect at the given rate
// and answer every command, counting what they receive by job.
func runSim(a simArgs) error {
	caPEM, err := os.ReadFile(a.ca)
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		jobs = map[string]*received{}
	)
	of := func(prefix string) *received {
		mu.Lock()
		defer mu.Unlock()
		r := jobs[prefix]
		if r == nil {
			r = new(received)
			jobs[prefix] = r
		}
		return r
	}
	cfg := sim.DefaultConfig()
	cfg.Devices = a.devices
	cfg.MQTTAddr = a.mqtt
	cfg.CAPEM = caPEM
	if a.creds == "" {
		cfg.Anonymous = true
		cfg.IDPrefix = a.prefix
	} else {
		cfg.CredentialsFile = a.creds
	}
	for i := range max(a.sources, 1) {
		cfg.SourceAddrs = append(cfg.SourceAddrs, netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)}))
	}
	cfg.Idle = true
	cfg.Rate = 0
	cfg.ConnectRate = a.connectRate
	cfg.ConnectConcurrency = 256
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var seen sync.Map // device job ids received: a command received again counts once
	cfg.OnCommand = func(c sim.Command) {
		if len(c.Job) < jobPrefixLen {
			return
		}
		if _, again := seen.LoadOrStore(c.Job, struct{}{}); again {
			return
		}
		r := of(c.Job[:jobPrefixLen])
		r.n.Add(1)
		at := c.ReceivedAt.UnixNano()
		for {
			cur := r.last.Load()
			if at <= cur || r.last.CompareAndSwap(cur, at) {
				break
			}
		}
	}
	f, err := sim.NewFleet(cfg)
	if err != nil {
		return err
	}
	if err := f.Start(context.Background()); err != nil {
		return err
	}
	defer func() {
		f.Stop()
		f.Wait()
	}()
	if err := benchproc.Announce(struct{}{}); err != nil {
		return err
	}
	var m benchproc.PhaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.Handle(cmd, args); ok {
			return v, err
		}
		switch cmd {
		case "count":
			st := f.Stats()
			c := simCount{Connected: st.Connected, Dropped: st.Disconnects, Dups: st.CommandsDuplicate}
			if len(args) == 1 {
				r := of(args[0])
				c.Received, c.Last = r.n.Load(), r.last.Load()
			}
			return c, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	return nil
}
