package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// killReplica stops a replica of a cluster without handing leadership
// over: Raft stops first (the others elect a leader after the election
// timeout), then the rest of the node. A later Shutdown does nothing.
func killReplica(t *testing.T, n *Node) {
	t.Helper()
	n.shutdownOnce.Do(func() {
		n.cluster.Close()
		close(n.stop)
		if n.http != nil {
			n.api.Shutdown()
			n.http.Close()
		}
		n.wg.Wait()
		if n.broker != nil {
			n.broker.Shutdown(context.Background())
		}
		n.close()
	})
}

// clusterLeader waits for one of nodes to lead (after its barrier) and
// returns it.
func clusterLeader(t *testing.T, nodes ...*Node) *Node {
	t.Helper()
	var leader *Node
	tstest.WaitFor(t, harnessWait, "a leader", func() bool {
		for _, n := range nodes {
			if n.Cluster().IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// putFolders writes folders /sites/<prefix>-<i> through the cluster's
// leader, retrying while leadership moves; it returns the last one.
func putFolders(t *testing.T, prefix string, k int, nodes ...*Node) model.Path {
	t.Helper()
	var p model.Path
	for i := range k {
		p = model.Path(fmt.Sprintf("/sites/%s-%d", prefix, i))
		tstest.WaitForErr(t, harnessWait, "write "+string(p), func() (bool, error) {
			_, err := clusterLeader(t, nodes...).Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "folder"})
			return err == nil, err
		})
	}
	return p
}

// A three-replica probe cluster publishes to a single-node HQ: only the
// leader runs the upstream link; once the leader is killed, the new one
// resumes the link with the replicated credentials and cursor, and HQ's
// mirror holds every write, before and after, and verifies equal to the
// cluster's tree with no gap.
func TestClusterFederationFailover(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	tok, err := hq.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "plant7", Grant: "read"})
	if err != nil {
		t.Fatal(err)
	}
	idDir := t.TempDir()
	if _, err := WriteIdentity(idDir, "plant7", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	withUpstream := func(cfg config.Config) config.Config {
		cfg.Federation.Upstreams = []config.Upstream{{Address: hq.n.FederationAddr(), Token: tok.Token}}
		return cfg
	}
	n1 := startNode(t, withUpstream(replicaConfig(t, idDir, "r1")))
	n2 := startNode(t, withUpstream(replicaConfig(t, idDir, "r2", n1.Cluster().Address())))
	n3 := startNode(t, withUpstream(replicaConfig(t, idDir, "r3", n1.Cluster().Address())))
	nodes := []*Node{n1, n2, n3}
	for _, n := range nodes[1:] {
		tstest.WaitFor(t, harnessWait, n.cfg.Cluster.ID+" applies the log", func() bool {
			return n.Model().LastSeq() >= n1.Model().LastSeq()
		})
	}

	before := putFolders(t, "before", 20, nodes...)
	tstest.WaitForErr(t, harnessWait, "the cluster's writes at hq", func() (bool, error) {
		_, err := hq.n.Model().Get("/peers/plant7" + before)
		return err == nil, err
	})
	leader := clusterLeader(t, nodes...)
	// Only the leader publishes.
	for _, n := range nodes {
		ups := consumerLinks(n)
		if n == leader && len(ups) != 1 || n != leader && len(ups) != 0 {
			t.Fatalf("%s (leader %v) runs links %+v", n.cfg.Cluster.ID, n == leader, ups)
		}
	}
	leaderCert := credFile(t, leader, hq.n.FederationAddr(), "node.crt")

	killReplica(t, leader)
	var rest []*Node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	after := putFolders(t, "after", 20, rest...)
	next := clusterLeader(t, rest...)
	tstest.WaitForErr(t, harnessWait, "writes after the failover at hq", func() (bool, error) {
		_, err := hq.n.Model().Get("/peers/plant7" + after)
		return err == nil, err
	})
	// The new leader connected as the same provider: with the
	// credentials the first one obtained, restored from the model.
	if got := credFile(t, next, hq.n.FederationAddr(), "node.crt"); !bytes.Equal(got, leaderCert) {
		t.Fatal("the new leader dials hq with other credentials than the ones replicated")
	}
	var res []federation.VerifyResult
	tstest.WaitForErr(t, harnessWait, "hq's mirror verifies equal to the cluster's tree", func() (bool, error) {
		res, err = hq.n.Federation().Verify(ctx)
		if err != nil {
			return false, err
		}
		return len(res) == 1 && res[0].Match && res[0].Error == "", fmt.Errorf("verify: %+v", res)
	})
	for _, i := range []int{0, 19} {
		for _, prefix := range []string{"before", "after"} {
			if _, err := hq.n.Model().Get(model.Path(fmt.Sprintf("/peers/plant7/sites/%s-%d", prefix, i))); err != nil {
				t.Fatalf("%s-%d at hq: %v", prefix, i, err)
			}
		}
	}
	for _, p := range hq.n.Federation().Peers() {
		if p.Name == "plant7" && p.Gaps != 0 {
			t.Fatalf("hq resynchronised the cluster with a gap: %+v", p)
		}
	}
	for _, n := range rest {
		if n != next && len(consumerLinks(n)) != 0 {
			t.Fatalf("the follower %s runs a link", n.cfg.Cluster.ID)
		}
	}
}

// consumerLinks are the links n runs to consumers.
func consumerLinks(n *Node) []federation.PeerStatus {
	var out []federation.PeerStatus
	for _, p := range n.Federation().Peers() {
		if p.Direction == "consumer" {
			out = append(out, p)
		}
	}
	return out
}

// credFile reads a file of n's credentials for the consumer at addr.
func credFile(t *testing.T, n *Node, addr, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.cfg.Dir, FederationStateDir, federation.StateDirName(addr), name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
