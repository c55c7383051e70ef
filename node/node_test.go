package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store/pgtest"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer("test", certs.ServerHosts())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(filepath.Join(dir, "tls/api.crt"), filepath.Join(dir, "tls/api.key")); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name = "t"
	cfg.Dir = dir
	cfg.API.Addr = "127.0.0.1:0"
	return cfg
}

func TestLifecycle(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.readyErr(); err == nil {
		t.Fatal("ready before Start")
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.APIAddr() == "" || n.readyErr() != nil {
		t.Fatalf("addr %q ready %v", n.APIAddr(), n.readyErr())
	}
	if _, err := n.Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	// The data directory is released: a new node opens it and finds the write.
	n2, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown(context.Background())
	if _, err := n2.Model().Get("/devices/a"); err != nil {
		t.Fatal(err)
	}
}

func TestNewReleasesOnFailure(t *testing.T) {
	cfg := testConfig(t)
	cfg.API.TLSCert = "missing.crt" // fails after the store is open
	if _, err := New(Options{Config: cfg}); err == nil {
		t.Fatal("New succeeded without a certificate")
	}
	cfg = testConfig2(cfg)
	n, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatalf("store still locked after a failed New: %v", err)
	}
	n.Shutdown(context.Background())
}

func testConfig2(cfg config.Config) config.Config {
	cfg.API.TLSCert = "tls/api.crt"
	return cfg
}

func TestEncryptionKey(t *testing.T) {
	cfg := testConfig(t)
	cfg.Store.EncryptionKey = hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	n, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/secret", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	n.Shutdown(context.Background())

	plain := cfg
	plain.Store.EncryptionKey = ""
	if n, err := New(Options{Config: plain}); err == nil {
		n.Shutdown(context.Background())
		t.Fatal("opened an encrypted store without its key")
	}
	bad := cfg
	bad.Store.EncryptionKey = "zz"
	if _, err := New(Options{Config: bad}); err == nil {
		t.Fatal("accepted a non-hex key")
	}
	n, err = New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if _, err := n.Model().Get("/secret"); errors.Is(err, model.ErrNotFound) || err != nil {
		t.Fatalf("reopened encrypted store: %v", err)
	}
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestLifecyclePostgres(t *testing.T) {
	cfg := testConfig(t)
	cfg.Store.Kind = config.StorePostgres
	cfg.Store.DSN = pgtest.Shared(t).NewDatabase(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	n, err := New(Options{Config: cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.Path(cfg.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a postgres node made its data dir: %v", err)
	}
	if !strings.Contains(logs.String(), "opened postgres store") {
		t.Errorf("no store log line:\n%s", logs.String())
	}

	// A second node (a restart, or a replica of the tier) finds the write.
	n2, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown(context.Background())
	if _, err := n2.Model().Get("/devices/a"); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	cfg := testConfig(t)
	cfg.Store.Kind = config.StorePostgres
	cfg.Store.DSN = fmt.Sprintf("postgres://strata:s3cret-pw@127.0.0.1:%d/strata?sslmode=disable&connect_timeout=5", port)
	var logs bytes.Buffer
	n, err := New(Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil {
		n.Shutdown(context.Background())
		t.Fatal("New succeeded without a database")
	}
	if strings.Contains(err.Error(), "s3cret-pw") || strings.Contains(logs.String(), "s3cret-pw") {
		t.Fatalf("the password leaked: %v\n%s", err, logs.String())
	}
	t.Logf("error: %v", err)

	cfg.Store.DSN = "postgres://strata:s3cret-pw@127.0.0.1:notaport/strata"
	if _, err := New(Options{Config: cfg}); err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("malformed dsn: %v", err)
	}
}

// TestPostgresReplicaDown: a read replica that is down neither stops the
// start nor fails reads (they fall back to the primary); the replica shows
// in the metrics by host:port, never with its password.
func TestPostgresReplicaDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	cfg := testConfig(t)
	cfg.Store.Kind = config.StorePostgres
	cfg.Store.DSN = pgtest.Shared(t).NewDatabase(t)
	cfg.Store.ReadDSNs = []string{fmt.Sprintf("postgres://strata:s3cret-pw@127.0.0.1:%d/strata?sslmode=disable", port)}
	var logs bytes.Buffer
	n, err := New(Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if _, err := n.Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	cs, err := n.Model().Children("/devices", "", 0)
	if err != nil || len(cs) != 1 {
		t.Fatalf("children = %v, %v", cs, err)
	}
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "strata_store_replica_healthy" {
			continue
		}
		for _, m := range mf.GetMetric() {
			found = true
			if got := m.GetLabel()[0].GetValue(); got != fmt.Sprintf("127.0.0.1:%d", port) {
				t.Errorf("replica label %q", got)
			}
			if m.GetGauge().GetValue() != 0 {
				t.Error("a replica that is down counts as healthy")
			}
		}
	}
	if !found {
		t.Error("no strata_store_replica_healthy metric")
	}
	if strings.Contains(logs.String(), "s3cret-pw") {
		t.Fatalf("the password leaked:\n%s", logs.String())
	}
}
