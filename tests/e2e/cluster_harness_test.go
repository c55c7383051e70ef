package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// A cluster of real strata processes (docs/cluster.md, "Running a
// three-replica tier"): one node "plant7" as three replicas on loopback,
// publishing its whole tree to a single-node HQ. Each replica's channel
// is reached through a tcpproxy (its advertised address) that terminates
// the channel's mutual TLS with a replica certificate of the node's CA
// and names each link by the replica that dialled it (the certificate's
// common name), so that the test can hold every connection into a
// replica, or only those between two replicas, both ways: one proxy per
// pair of replicas in effect.

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
	t     *testing.T
	reps  []*replicaProc
	hq    *nodeDir // the consumer the cluster publishes to
	tuned bool     // Raft timeouts tuned for fast failover, or the library's
}

// Raft timeouts of the replicas: tuned for fast failover, or (empty) the
// library's defaults.
const tunedTimeouts = "  heartbeat_timeout: 300ms\n  election_timeout: 300ms\n  leader_lease_timeout: 150ms\n"

// Snapshots every few hundred entries, with a short log behind them, so
// that snapshots are taken and sent to restarted replicas during the
// rounds, and a round can aim a kill at one.
// STRATA_E2E_CLUSTER_SNAPSHOTS=library leaves the library's settings
// (snapshots rare, none sent to a restarted replica), and the rounds
// aimed at snapshots out.
const snapshotSettings = "  snapshot_interval: 250ms\n  snapshot_threshold: 64\n  trailing_logs: 32\n"

// frequentSnapshots reports whether the replicas run with snapshotSettings.
func frequentSnapshots() bool { return os.Getenv("STRATA_E2E_CLUSTER_SNAPSHOTS") != "library" }

// replicaTLS makes the proxies' TLS: the certificate of a replica named
// "proxy", issued by the node's CA in dir, presented to both sides.
func replicaTLS(t *testing.T, dir string) (accept func(net.Conn) (net.Conn, string, error), dial func(string) (net.Conn, error)) {
	t.Helper()
	ca, err := certs.LoadPair(filepath.Join(dir, "tls", "ca.crt"), filepath.Join(dir, "tls", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.IssueReplica("proxy", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := p.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert}
	client := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true} // a test's own hop: the replica behind checks the chain
	accept = func(c net.Conn) (net.Conn, string, error) {
		tc := tls.Server(c, server)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return nil, "", err
		}
		c.SetDeadline(time.Time{})
		return tc, tc.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	dial = func(target string) (net.Conn, error) {
		d := &net.Dialer{Timeout: 10 * time.Second}
		return tls.DialWithDialer(d, "tcp", target, client)
	}
	return accept, dial
}

// newClusterProcs starts a single-node HQ, then initialises and starts
// three replicas publishing to it: r1 bootstraps, r2 and r3 join through
// r1's channel; it returns once every replica is a voter, one leads, and
// HQ's link with the cluster is up. tuned selects the Raft timeouts.
func newClusterProcs(t *testing.T, tuned bool) *clusterProcs {
	t.Helper()
	hq := initNode(t, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	fastLinks(t, hq)
	hq.start()
	upstream := fmt.Sprintf("federation:\n  keepalive: 300ms\n  idle_timeout: 3s\n  upstreams:\n    - address: %s\n      token: %s\n",
		fedAddr(t, hq), hq.peerToken("plant7", "operate"))
	timeouts, snapshots := "", ""
	if tuned {
		timeouts = tunedTimeouts
	}
	if frequentSnapshots() {
		snapshots = snapshotSettings
	}

	first := initNode(t, "plant7", "--role", "probe", "--mqtt-addr", freeAddr(t))
	accept, dial := replicaTLS(t, first.dir)
	cp := &clusterProcs{t: t, hq: hq, tuned: tuned}
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
		px, err := tcpproxy.NewWith("127.0.0.1:0", listen, tcpproxy.Options{Accept: accept, Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		r := &replicaProc{nodeDir: n, id: id, mqtt: freeAddr(t), proxy: px}
		join := "  bootstrap: true\n"
		if i > 0 {
			join = fmt.Sprintf("  join: [%s]\n", cp.reps[0].proxy.Addr())
		}
		cfg := fmt.Sprintf("name: plant7\nrole: probe\napi:\n  addr: %s\nmqtt:\n  addr: %s\ncluster:\n  id: %s\n  addr: %s\n  advertise: %s\n%s%s%s%s",
			n.addr, r.mqtt, id, listen, px.Addr(), join, timeouts, snapshots, upstream)
		if err := os.WriteFile(n.config(), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cp.reps = append(cp.reps, r)
		r.start()
	}
	t.Cleanup(cp.keepOutput)
	cp.waitWhole(60 * time.Second)
	waitConnected(t, hq.admin(), "plant7", "provider")
	return cp
}

// keepOutput writes every process's last output into a directory that
// outlives the test, when the test failed.
func (cp *clusterProcs) keepOutput() {
	if !cp.t.Failed() {
		return
	}
	dir, err := os.MkdirTemp("", "strata-cluster-faults-")
	if err != nil {
		cp.t.Log(err)
		return
	}
	nodes := map[string]*nodeDir{"hq": cp.hq}
	for _, r := range cp.reps {
		nodes[r.id] = r.nodeDir
	}
	for name, n := range nodes {
		state := "killed by the test, or not started"
		if n.crashed != nil {
			state = n.crashed.Error()
		}
		if n.p != nil {
			state = "running"
			if gone, err := n.p.gone(); gone {
				state = fmt.Sprintf("exited by itself: %v", err)
			}
		}
		if n.lastOut != nil {
			os.WriteFile(filepath.Join(dir, name+".log"), []byte(n.lastOut.String()), 0o600)
		}
		cp.t.Logf("%s: %s", name, state)
	}
	cp.t.Logf("the processes' last output: %s", dir)
}

// dumpStacks makes every running replica print its goroutines and exit
// (SIGQUIT), so that the output keepOutput saves shows where a stuck
// replica waits; for failures where the cluster stopped making progress.
func (cp *clusterProcs) dumpStacks() {
	for _, r := range cp.reps {
		if r.p == nil {
			continue
		}
		r.p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-r.p.exited:
		case <-time.After(10 * time.Second):
		}
	}
}

// checkAlive fails the test when a process the test did not kill has
// ended.
func (cp *clusterProcs) checkAlive() {
	cp.t.Helper()
	nodes := []*nodeDir{cp.hq}
	for _, r := range cp.reps {
		nodes = append(nodes, r.nodeDir)
	}
	for _, n := range nodes {
		if n.p == nil {
			continue
		}
		if gone, err := n.p.gone(); gone {
			out := n.p.out.String()
			cp.t.Fatalf("%s exited by itself (%v); its output ends:\n%s", n.dir, err, out[max(0, len(out)-20000):])
		}
	}
}

// cut holds (on) or lets through (off) every connection between
// replicas a and b, both ways.
func (cp *clusterProcs) cut(a, b *replicaProc, on bool) {
	a.proxy.PartitionFrom(b.id, on)
	b.proxy.PartitionFrom(a.id, on)
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
		cp.checkAlive()
		if l := cp.leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			d := cp.describe()
			cp.dumpStacks()
			cp.t.Fatalf("the replicas agree on no leader after %v:\n%s", timeout, d)
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
		cp.checkAlive()
		if time.Now().After(deadline) {
			d := cp.describe()
			cp.dumpStacks()
			cp.t.Fatalf("the cluster is not whole after %v:\n%s", timeout, d)
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
