package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// replicaConfig is the configuration of replica id of one node, sharing
// the identity (CA, API certificate) written in identityDir.
func replicaConfig(t *testing.T, identityDir, id string, join ...string) config.Config {
	t.Helper()
	dir := identityDir
	if id != "r1" {
		dir = t.TempDir()
		for _, f := range []string{CACertFile, CAKeyFile, APICertFile, APIKeyFile} {
			data, err := os.ReadFile(filepath.Join(identityDir, f))
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Join(dir, "tls"), 0o700)
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := config.Default()
	cfg.Name = "plant7"
	cfg.Role = config.RoleProbe
	cfg.Dir = dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.Cluster = config.Cluster{ID: id, Addr: "127.0.0.1:0", Bootstrap: id == "r1", Join: join,
		TLSCert: "tls/replica.crt", TLSKey: "tls/replica.key",
		HeartbeatTimeout: config.Duration(500 * time.Millisecond), ElectionTimeout: config.Duration(500 * time.Millisecond),
		LeaderLeaseTimeout: config.Duration(250 * time.Millisecond)}
	return cfg
}

func startNode(t *testing.T, cfg config.Config) *Node {
	t.Helper()
	n, err := New(Options{Config: cfg, Logger: tstest.Logger(t).With("replica", cfg.Cluster.ID)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// Three strata nodes as replicas of one: the first bootstraps (and makes
// the first admin), the others join; the API of every replica shows the
// cluster, a write through a follower's API lands on all, /readyz names
// each one's role, and a graceful stop of the leader hands leadership
// over.
func TestNodeCluster(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	n1 := startNode(t, replicaConfig(t, idDir, "r1"))
	n2 := startNode(t, replicaConfig(t, idDir, "r2", n1.Cluster().Address()))
	n3 := startNode(t, replicaConfig(t, idDir, "r3", n1.Cluster().Address()))
	nodes := []*Node{n1, n2, n3}
	cl := func(n *Node) *client.Client {
		c, err := client.New("https://"+n.APIAddr(), ident.AdminToken, ident.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	var st *client.ClusterStatus
	tstest.WaitForErr(t, time.Minute, "three voters seen from r3", func() (bool, error) {
		st, err = cl(n3).Cluster(ctx)
		if err != nil {
			return false, err
		}
		voters := 0
		for _, m := range st.Members {
			if m.Role == "voter" && m.State != "unreachable" {
				voters++
			}
		}
		return voters == 3 && st.Leader == "r1", fmt.Errorf("status %+v", st)
	})
	// A write through a follower's API.
	if _, _, err := cl(n2).PutContext(ctx, "/sites/line-1", client.ContextUpdate{Type: "folder"}); err != nil {
		t.Fatalf("put through a follower: %v", err)
	}
	if _, err := cl(n2).GetContext(ctx, "/sites/line-1"); err != nil {
		t.Fatalf("the follower does not show its own write: %v", err)
	}
	for _, n := range nodes {
		tstest.WaitForErr(t, harnessWait, "line-1 on "+n.cfg.Cluster.ID, func() (bool, error) {
			_, err := n.Model().Get("/sites/line-1")
			return err == nil, err
		})
	}
	// A token revoked through one replica is refused by another that
	// had it cached, once it applied the revocation.
	tok := retryLeaderless(t, "create a token", func() (*client.CreatedToken, error) {
		return cl(n1).CreateToken(ctx, client.NewToken{Name: "ops"})
	})
	// Reads are local: r2 knows the token once it applied its creation.
	created := n1.Model().LastSeq()
	tstest.WaitFor(t, harnessWait, "r2 applied the token", func() bool { return n2.Model().LastSeq() >= created })
	if _, err := cl(n2).WithToken(tok.Secret).Whoami(ctx); err != nil {
		t.Fatalf("the new token on a follower: %v", err)
	}
	if err := cl(n3).RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	// Once r2 applied the revocation (well within the auth cache's 10 s),
	// the token is refused there at once.
	head := n3.Model().LastSeq()
	tstest.WaitFor(t, harnessWait, "r2 applied the revocation", func() bool { return n2.Model().LastSeq() >= head })
	if _, err := cl(n2).WithToken(tok.Secret).Whoami(ctx); !client.IsCode(err, "unauthorized") {
		t.Fatalf("the revoked token on a follower that applied the revocation: %v", err)
	}
	// /readyz names the role.
	hc := httpsClient(t, ident.CAPEM)
	for n, want := range map[*Node]string{n1: "leader", n2: "follower", n3: "follower"} {
		res, err := hc.Get("https://" + n.APIAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get(api.ClusterRoleHeader) != want {
			t.Fatalf("%s /readyz: %d %q, want 200 %q", n.cfg.Cluster.ID, res.StatusCode, res.Header.Get(api.ClusterRoleHeader), want)
		}
	}
	// The leader stopped gracefully hands leadership over first: another
	// leads at once, and writes go on through the survivors.
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessWait, "a write after the leader left", func() (bool, error) {
		_, _, err := cl(n3).PutContext(ctx, "/sites/line-2", client.ContextUpdate{Type: "folder"})
		return err == nil, err
	})
	if got := n1.Cluster(); got.IsLeader() {
		t.Fatal("the stopped replica still leads")
	}
}

const harnessWait = 30 * time.Second

// retryLeaderless runs write until it does not fail for want of a leader
// (an election under way: on a loaded machine leadership may move
// between two steps of a test), as a client retries a 503.
func retryLeaderless[T any](t *testing.T, what string, write func() (T, error)) T {
	t.Helper()
	var (
		v   T
		err error
	)
	tstest.WaitForErr(t, harnessWait, what, func() (bool, error) {
		v, err = write()
		if errors.Is(err, model.ErrNotLeader) || client.IsCode(err, client.CodeUnavailable) {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func httpsClient(t *testing.T, caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal(errors.New("no CA"))
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
