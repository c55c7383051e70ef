package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// A cluster of real strata processes (docs/cluster.md, "Running a
// three-replica tier"): one node "plant7" as three replicas on loopback.
// Each replica's channel is reached through a tcpproxy (its advertised
// address), so that the connections into a replica can be held like a
// network partition holds them.
//
// Hook for federation on a cluster: a single-node HQ (initNode with
// --federation-addr) would be started beside the cluster and given every
// replica's address as its downstream's; the configuration refuses
// federation with a cluster until that is built (docs/cluster.md, "Not
// built yet").

// replicaProc is one replica: a node directory of its own, sharing the
// node's identity (CA, CA key, API certificate, admin token) with the
// others.
type replicaProc struct {
	*nodeDir
	id    string
	mqtt  string          // MQTT listener
	proxy *tcpproxy.Proxy // in front of the replica's channel; its advertised address
}

type clusterProcs struct {
	t    *testing.T
	reps []*replicaProc
}

// clusterTimeouts are the Raft timeouts of the replicas' configuration:
// "tuned" (fast failover) unless STRATA_E2E_CLUSTER_TIMEOUTS=defaults
// asks for the library's defaults.
func clusterTimeouts() string {
	if os.Getenv("STRATA_E2E_CLUSTER_TIMEOUTS") == "defaults" {
		return ""
	}
	return "  heartbeat_timeout: 300ms\n  election_timeout: 300ms\n  leader_lease_timeout: 150ms\n"
}

// newClusterProcs initialises and starts three replicas: r1 bootstraps,
// r2 and r3 join through r1's channel; it returns once every replica is
// a voter and one leads.
func newClusterProcs(t *testing.T) *clusterProcs {
	t.Helper()
	first := initNode(t, "plant7", "--mqtt-addr", freeAddr(t))
	cp := &clusterProcs{t: t}
	for i := range 3 {
		id := fmt.Sprintf("r%d", i+1)
		n := first
		if i > 0 {
			n = &nodeDir{t: t, dir: t.TempDir(), addr: freeAddr(t)}
			for _, f := range []string{"tls/ca.crt", "tls/ca.key", "tls/api.crt", "tls/api.key", "admin.token"} {
				b, err := os.ReadFile(filepath.Join(first.dir, f))
				if err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Join(n.dir, "tls"), 0o700)
				if err := os.WriteFile(filepath.Join(n.dir, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		listen := freeAddr(t)
		px, err := tcpproxy.New("127.0.0.1:0", listen)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		r := &replicaProc{nodeDir: n, id: id, mqtt: freeAddr(t), proxy: px}
		join := "  bootstrap: true\n"
		if i > 0 {
			join = fmt.Sprintf("  join: [%s]\n", cp.reps[0].proxy.Addr())
		}
		cfg := fmt.Sprintf("name: plant7\nrole: probe\napi:\n  addr: %s\nmqtt:\n  addr: %s\ncluster:\n  id: %s\n  addr: %s\n  advertise: %s\n%s%s",
			n.addr, r.mqtt, id, listen, px.Addr(), join, clusterTimeouts())
		if err := os.WriteFile(n.config(), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cp.reps = append(cp.reps, r)
		r.start()
	}
	cp.waitWhole(60 * time.Second)
	return cp
}

// byID is the replica named id.
func (cp *clusterProcs) byID(id string) *replicaProc {
	for _, r := range cp.reps {
		if r.id == id {
			return r
		}
	}
	return nil
}

// status asks replica r for the cluster's state, within a second.
func (r *replicaProc) status() (*client.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return r.admin().Cluster(ctx)
}

// leader is the replica every running replica names as leader, or nil
// while they do not agree (an election, a partition).
func (cp *clusterProcs) leader() *replicaProc {
	name := ""
	for _, r := range cp.reps {
		if r.p == nil {
			continue
		}
		st, err := r.status()
		if err != nil || st.Leader == "" || (name != "" && st.Leader != name) {
			return nil
		}
		name = st.Leader
	}
	return cp.byID(name)
}

// waitLeader polls until the running replicas agree on a leader.
func (cp *clusterProcs) waitLeader(timeout time.Duration) *replicaProc {
	cp.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := cp.leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			cp.t.Fatalf("the replicas agree on no leader after %v:\n%s", timeout, cp.describe())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// whole reports whether every replica runs, they agree on a leader, and
// each sees three voters, none unreachable, with the same applied index
// seen from the leader.
func (cp *clusterProcs) whole() bool {
	l := cp.leader()
	if l == nil {
		return false
	}
	for _, r := range cp.reps {
		if r.p == nil {
			return false
		}
	}
	st, err := l.status()
	if err != nil || len(st.Members) != len(cp.reps) {
		return false
	}
	for _, m := range st.Members {
		if m.Role != "voter" || (m.State != "leader" && m.State != "follower") {
			return false
		}
	}
	return true
}

// waitWhole polls until the cluster is whole again.
func (cp *clusterProcs) waitWhole(timeout time.Duration) {
	cp.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cp.whole() {
		if time.Now().After(deadline) {
			cp.t.Fatalf("the cluster is not whole after %v:\n%s", timeout, cp.describe())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// describe is each running replica's view, for failure messages.
func (cp *clusterProcs) describe() string {
	var b strings.Builder
	for _, r := range cp.reps {
		if r.p == nil {
			fmt.Fprintf(&b, "%s: down\n", r.id)
			continue
		}
		st, err := r.status()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", r.id, err)
			continue
		}
		fmt.Fprintf(&b, "%s: leader %q term %d:", r.id, st.Leader, st.Term)
		for _, m := range st.Members {
			fmt.Fprintf(&b, " %s/%s/%s/%d", m.ID, m.Role, m.State, m.AppliedIndex)
		}
		b.WriteString("\n")
	}
	return b.String()
}
