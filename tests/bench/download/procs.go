package main

// The child processes of the bench: the node (-role node) and the
// baseline's file server (-role fileserver), each announcing its address
// on standard output and then answering the bench's commands
// (tests/bench/benchproc) until its input ends.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
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

// Where the bench and its children keep their files, in the run's folder.
const (
	nodeDir   = "node"            // the node's data_dir, TLS files and admin token
	filesDir  = "files"           // the artifact, named by its SHA-256 (the file server's root)
	pubKey    = "release.key.pub" // the release signing key's public half (software.trusted_keys)
	artifacts = "/api/v1/device/artifacts/"
)

// childInfo is what a child announces once it serves.
type childInfo struct {
	API        string `json:"api"` // HOST:PORT of its HTTPS listener
	PID        int    `json:"pid"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

// runNode is the node process: node.New on its own Badger store and fs
// object store in dir/node, as strata serve builds it, its API (and MQTT)
// on loopback, trusting the bench's release key.
func runNode(dir string) error {
	cfg, err := nodeConfig(dir)
	if err != nil {
		return err
	}
	n, err := benchproc.StartNode(cfg)
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	if err := benchproc.Announce(childInfo{API: n.APIAddr(), PID: os.Getpid(), GOMAXPROCS: runtime.GOMAXPROCS(0)}); err != nil {
		return err
	}
	return serveMeter()
}

// nodeConfig writes what strata init would (CA, API certificate, admin
// token) into dir/node and returns the node's configuration.
func nodeConfig(dir string) (config.Config, error) {
	nd := filepath.Join(dir, nodeDir)
	ca, err := certs.NewCA("dlbench CA")
	if err != nil {
		return config.Config{}, err
	}
	srv, err := ca.IssueServer("dlbench", certs.ServerHosts())
	if err != nil {
		return config.Config{}, err
	}
	if err := ca.WriteFiles(filepath.Join(nd, "tls/ca.crt"), filepath.Join(nd, "tls/ca.key")); err != nil {
		return config.Config{}, err
	}
	if err := srv.WriteFiles(filepath.Join(nd, "tls/api.crt"), filepath.Join(nd, "tls/api.key")); err != nil {
		return config.Config{}, err
	}
	t, err := auth.NewTokenSecret()
	if err != nil {
		return config.Config{}, err
	}
	if err := os.WriteFile(filepath.Join(nd, node.AdminTokenFile), []byte(t), 0o600); err != nil {
		return config.Config{}, err
	}
	cfg := config.Default()
	cfg.Name = "dlbench"
	cfg.Role = config.RoleProbe
	cfg.Dir = nd
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Software.TrustedKeys = []string{filepath.Join(dir, pubKey)}
	return cfg, nil
}

// runFileServer is the baseline: Go's http.FileServer serving dir/files
// under the device download path, over TLS with the node's own
// certificate, TLS settings (certs.ServerConfig) and http.Server settings
// (api.Server.HTTPServer: header and idle timeouts, header size; HTTP/2
// offered as the node's ServeTLS offers it, HTTP/1.1 taken by clients
// that do not ask for it). It ignores the Authorization header. The bench
// starts it with the node's GOMAXPROCS (strata serve's: the cores and the
// device ingest slots), so that neither server gets a larger share of
// the cores from the kernel than the other.
func runFileServer(dir string) error {
	nd := filepath.Join(dir, nodeDir)
	tlsConf, err := certs.ServerConfig(filepath.Join(nd, "tls/api.crt"), filepath.Join(nd, "tls/api.key"))
	if err != nil {
		return err
	}
	def := config.Default().API
	srv := &http.Server{
		Handler:           http.StripPrefix(artifacts, http.FileServer(http.Dir(filepath.Join(dir, filesDir)))),
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: def.ReadHeaderTimeout.D(),
		IdleTimeout:       def.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(os.Stderr, "fileserver: ", 0),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "fileserver:", err)
		}
	}()
	if err := benchproc.Announce(childInfo{API: ln.Addr().String(), PID: os.Getpid(), GOMAXPROCS: runtime.GOMAXPROCS(0)}); err != nil {
		return err
	}
	return serveMeter()
}

// serveMeter answers begin, end, profile-start and profile-stop until
// the bench closes the child's input.
func serveMeter() error {
	var m benchproc.PhaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.Handle(cmd, args); ok {
			return v, err
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	return nil
}
