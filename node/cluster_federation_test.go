package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
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

// threeVoters waits until the leader counts three voters: a replica
// joins as a non-voter and is promoted once caught up, and a leader kill
// before that would leave no quorum.
func threeVoters(t *testing.T, nodes ...*Node) {
	t.Helper()
	tstest.WaitForErr(t, harnessWait, "three voters", func() (bool, error) {
		st, err := clusterLeader(t, nodes...).Cluster().Status(context.Background())
		if err != nil {
			return false, err
		}
		voters := 0
		for _, m := range st.Members {
			if m.Role == "voter" {
				voters++
			}
		}
		return voters == 3, fmt.Errorf("status %+v", st)
	})
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
	threeVoters(t, nodes...)

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

	killed := time.Now()
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
	// A figure, not an assertion: from the kill to hq holding the last of
	// the writes made after it.
	t.Logf("leader killed -> hq has the 20 writes made after the failover: %v", time.Since(killed).Round(time.Millisecond))
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

// A provider given the three replicas' addresses of a consumer that is a
// cluster joins and publishes through whichever replica leads (the
// others refuse with not_leader), and keeps its link to the leader
// across a failover: the new leader's mirror, replicated to every
// replica, holds every write and verifies equal to the provider's tree.
func TestClusterFederationConsumer(t *testing.T) {
	ctx := context.Background()
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "eu", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	withListener := func(cfg config.Config) config.Config {
		cfg.Name, cfg.Role = "eu", config.RoleRegional
		cfg.Federation.Addr = "127.0.0.1:0"
		return cfg
	}
	n1 := startNode(t, withListener(replicaConfig(t, idDir, "r1")))
	n2 := startNode(t, withListener(replicaConfig(t, idDir, "r2", n1.Cluster().Address())))
	n3 := startNode(t, withListener(replicaConfig(t, idDir, "r3", n1.Cluster().Address())))
	nodes := []*Node{n1, n2, n3}
	threeVoters(t, nodes...)
	leader := clusterLeader(t, nodes...)
	admin, err := client.New("https://"+leader.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.CloseIdleConnections()
	tok, err := admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "plant9", Grant: "read"})
	if err != nil {
		t.Fatal(err)
	}
	// The provider lists a follower first: it is refused, and moves on.
	var first *Node
	var others []string
	for _, n := range nodes {
		if n != leader && first == nil {
			first = n
			continue
		}
		others = append(others, n.FederationAddr())
	}
	p := startFedNode(t, "plant9", "", config.Upstream{Address: first.FederationAddr(), Replicas: others, Token: tok.Token})
	write := func(prefix string, k int) model.Path {
		var last model.Path
		for i := range k {
			last = model.Path(fmt.Sprintf("/sites/%s-%d", prefix, i))
			if _, err := p.n.Model().Apply(ctx, model.Mutation{Op: model.OpPut, Path: last, Type: "folder"}); err != nil {
				t.Fatal(err)
			}
		}
		return last
	}
	before := write("before", 20)
	for _, n := range nodes {
		tstest.WaitForErr(t, harnessWait, "the provider's writes on "+n.cfg.Cluster.ID, func() (bool, error) {
			_, err := n.Model().Get("/peers/plant9" + before)
			return err == nil, err
		})
	}

	killReplica(t, leader)
	var rest []*Node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	after := write("after", 20)
	next := clusterLeader(t, rest...)
	for _, n := range rest {
		tstest.WaitForErr(t, harnessWait, "writes after the failover on "+n.cfg.Cluster.ID, func() (bool, error) {
			_, err := n.Model().Get("/peers/plant9" + after)
			return err == nil, err
		})
	}
	tstest.WaitForErr(t, harnessWait, "the new leader's mirror verifies equal to the provider's tree", func() (bool, error) {
		res, err := next.Federation().Verify(ctx)
		if err != nil {
			return false, err
		}
		for _, r := range res {
			if r.Peer == "plant9" {
				return r.Match && r.Error == "", fmt.Errorf("verify: %+v", r)
			}
		}
		return false, fmt.Errorf("no mount of plant9: %+v", res)
	})
	for _, st := range next.Federation().Peers() {
		if st.Name == "plant9" && st.Gaps != 0 {
			t.Fatalf("the new leader resynchronised plant9 with a gap: %+v", st)
		}
	}
	// The provider's only link is to the cluster, through the leader.
	ups := consumerLinks(p.n)
	if len(ups) != 1 || ups[0].Name != "eu" || ups[0].State != "connected" {
		t.Fatalf("the provider's links: %+v", ups)
	}
	// Revoked through a follower's API, the provider's link to the
	// leader is cut at once, and every replica refuses it.
	var follower *Node
	for _, n := range rest {
		if n != next {
			follower = n
		}
	}
	fc, err := client.New("https://"+follower.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.CloseIdleConnections()
	if err := fc.RevokePeer(ctx, "plant9"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessWait, "the provider's link revoked", func() (bool, error) {
		ups := consumerLinks(p.n)
		return len(ups) == 1 && ups[0].State == "revoked", fmt.Errorf("links %+v", ups)
	})
}

// The retention of records (here the audit trail) and of events runs on
// the leader only, and its deletions reach every replica through the
// log; a follower's pass leaves them.
func TestClusterRetentionOnLeader(t *testing.T) {
	idDir := t.TempDir()
	if _, err := WriteIdentity(idDir, "plant7", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	n1 := startNode(t, replicaConfig(t, idDir, "r1"))
	n2 := startNode(t, replicaConfig(t, idDir, "r2", n1.Cluster().Address()))
	n3 := startNode(t, replicaConfig(t, idDir, "r3", n1.Cluster().Address()))
	nodes := []*Node{n1, n2, n3}
	leader := clusterLeader(t, nodes...)
	leader.audit.Write(audit.Record{Op: "test", Outcome: audit.OK})
	if _, err := leader.Model().Apply(context.Background(),
		model.Mutation{Op: model.OpPut, Path: "/retained", Type: "folder"},
		model.Mutation{Op: model.OpEvent, Path: "/retained", Event: &model.Event{Name: "boot", Level: model.LevelInfo}}); err != nil {
		t.Fatal(err)
	}
	count := func(n *Node) int {
		k := 0
		n.Model().Records(audit.Kind, func(string, []byte) error { k++; return nil })
		evs, err := n.store.Events("/retained", model.EventQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return k + len(evs)
	}
	for _, n := range nodes {
		tstest.WaitFor(t, harnessWait, "the audit record and the event on "+n.cfg.Cluster.ID, func() bool { return count(n) == 2 })
	}
	later := time.Now().Add(100 * 365 * 24 * time.Hour)
	for _, n := range nodes {
		if n == leader {
			continue
		}
		n.retain(later)
		for _, m := range nodes {
			if k := count(m); k != 2 {
				t.Fatalf("the follower %s pruned the audit trail or events of %s", n.cfg.Cluster.ID, m.cfg.Cluster.ID)
			}
		}
	}
	leader.retain(later)
	for _, n := range nodes {
		tstest.WaitFor(t, harnessWait, "the audit trail and events pruned on "+n.cfg.Cluster.ID, func() bool { return count(n) == 0 })
	}
}
