package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// postgresReplicas makes replicas store in one new database of the
// test's PostgreSQL server (made now, so dropped after the replicas
// stop): the cluster's PostgreSQL mode.
func postgresReplicas(t *testing.T) func(*config.Config) {
	t.Helper()
	dsn := pgtest.Shared(t).NewDatabase(t)
	return func(c *config.Config) { c.Store.Kind, c.Store.DSN = config.StorePostgres, dsn }
}

// Three strata nodes as replicas of one in PostgreSQL mode: a write
// through a follower's API is committed by the leader to the shared
// database and shows on every replica, in the change stream of another
// follower too; the leader killed, another claims the database with its
// term and writes, and the stream goes on; /metrics counts the claim.
func TestNodeClusterPostgres(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pg := postgresReplicas(t)
	start := func(id string, join ...string) *Node {
		cfg := replicaConfig(t, idDir, id, join...)
		pg(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return startNode(t, cfg)
	}
	n1 := start("r1")
	n2 := start("r2", n1.Cluster().Address())
	n3 := start("r3", n1.Cluster().Address())
	nodes := []*Node{n1, n2, n3}
	cl := func(n *Node) *client.Client {
		c, err := client.New("https://"+n.APIAddr(), ident.AdminToken, ident.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	tstest.WaitForErr(t, time.Minute, "three voters seen from r3", func() (bool, error) {
		st, err := cl(n3).Cluster(ctx)
		if err != nil {
			return false, err
		}
		voters := 0
		for _, m := range st.Members {
			if m.Role == "voter" && m.State != "unreachable" {
				voters++
			}
		}
		return voters == 3 && st.Leader != "", fmt.Errorf("status %+v", st)
	})
	leader := clusterLeader(t, nodes...)
	var fol []*Node
	for _, n := range nodes {
		if n != leader {
			fol = append(fol, n)
		}
	}
	// The change stream of one follower; writes through the other.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl(fol[1]).Changes(sctx, "/sites", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	seen := make(chan string, 64)
	go func() {
		defer close(seen)
		for {
			c, err := stream.Next()
			if err != nil {
				return
			}
			seen <- c.Path
		}
	}()
	want := func(path string) {
		t.Helper()
		timeout := time.After(harnessWait)
		for {
			select {
			case p, ok := <-seen:
				if !ok {
					t.Fatalf("the change stream ended before %s", path)
				}
				if p == path {
					return
				}
			case <-timeout:
				t.Fatalf("the change stream of a follower never showed %s", path)
			}
		}
	}
	retryLeaderless(t, "put through a follower", func() (*client.Context, error) {
		c, _, err := cl(fol[0]).PutContext(ctx, "/sites/line-1", client.ContextUpdate{Type: "folder"})
		return c, err
	})
	if _, err := cl(fol[0]).GetContext(ctx, "/sites/line-1"); err != nil {
		t.Fatalf("the follower does not show its own write: %v", err)
	}
	want("/sites/line-1")
	for _, n := range nodes {
		tstest.WaitForErr(t, harnessWait, "line-1 on "+n.cfg.Cluster.ID, func() (bool, error) {
			_, err := n.Model().Get("/sites/line-1")
			return err == nil, err
		})
	}
	// The leader killed: a survivor claims the database with its term.
	killReplica(t, leader)
	var survivor *Node
	tstest.WaitForErr(t, harnessWait, "a write after the leader was killed", func() (bool, error) {
		for _, n := range fol {
			if _, _, err := cl(n).PutContext(ctx, "/sites/line-2", client.ContextUpdate{Type: "folder"}); err != nil {
				return false, err
			}
			survivor = n
			return true, nil
		}
		return false, nil
	})
	want("/sites/line-2")
	newLeader := clusterLeader(t, fol...)
	fs := newLeader.Cluster().PostgresStore().FenceStatus()
	st, err := cl(survivor).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Replica != newLeader.cfg.Cluster.ID || fs.Term != st.Term {
		t.Fatalf("the new leader %s writes as term %d of %q; the cluster is at term %d", newLeader.cfg.Cluster.ID, fs.Term, fs.Replica, st.Term)
	}
	res, err := httpsClient(t, ident.CAPEM).Get("https://" + newLeader.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", res.StatusCode)
	}
	for _, m := range []string{`strata_cluster_fence_claims_total{outcome="claimed"} 1`, "strata_cluster_fenced_commits_total 0",
		fmt.Sprintf("strata_store_writer_term %d", fs.Term)} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics of the new leader lacks %q", m)
		}
	}
}
