package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/config"
)

// chartReplicas holds each replica's strata.yaml as the Helm chart
// renders it (deploy/helm/strata with values-hq.yaml); the chart's test
// keeps these files equal to its rendering.
const chartReplicas = "../../deploy/helm/testdata/replicas"

// podUser is the user of the strata image, and the pods' fsGroup.
const podUser = 65532

// chartReplica is one replica run on a folder laid out as the chart lays
// out its pod's volume.
type chartReplica struct {
	*nodeDir
	i    int
	cfg  config.Config // rewritten to this machine's addresses
	chAt string        // the replica's channel address here
}

// TestChartReplicas runs the files the Helm chart gives its three pods on
// folders laid out as the pods' volumes are — strata.yaml, admin.token
// and tls/ read-only, the node writing data/, replica.crt and federation/
// beside them — as the image's user when the test runs as root. Only the
// addresses are mapped onto this machine: each pod's stable name to its
// replica's channel address. As a StatefulSet with parallel pod
// management may start them: replicas 1 and 2 first, then replica 0 once
// both have failed to reach it; all three are ready and voters. Then all
// three restart at once (a restart of the whole tier). Then replica 0
// loses its volume: it is removed from the cluster and started on an
// empty folder with the files the chart renders once the cluster exists
// (cluster.bootstrap false), and joins again.
func TestChartReplicas(t *testing.T) {
	if os.Geteuid() == 0 {
		// The binaries' folder is private to root; the image's user runs
		// strata from it.
		if err := os.Chmod(filepath.Dir(strataBin), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ident := initNode(t, "hq", "--role", "hq")
	rs := make([]*chartReplica, 3)
	byName := map[string]string{} // pod's stable channel address -> here
	for i := range rs {
		rs[i] = &chartReplica{i: i, chAt: freeAddr(t)}
	}
	for i, r := range rs {
		cfg := chartConfig(t, "bootstrap", i)
		byName[cfg.Cluster.Advertise] = r.chAt
	}
	for i, r := range rs {
		r.cfg = chartConfig(t, "bootstrap", i)
		r.mapAddrs(t, byName)
		r.nodeDir = &nodeDir{t: t, dir: t.TempDir(), addr: r.cfg.API.Addr}
		r.layOut(t, ident)
	}
	if !rs[0].cfg.Cluster.Bootstrap || rs[1].cfg.Cluster.Bootstrap || rs[2].cfg.Cluster.Bootstrap {
		t.Fatal("replica 0 alone should bootstrap")
	}

	joinFailed := []*watch{rs[1].watch(`"msg":"cluster: join"`), rs[2].watch(`"msg":"cluster: join"`)}
	rs[1].launch(t)
	rs[2].launch(t)
	for i, w := range joinFailed {
		select {
		case <-w.seen:
		case <-time.After(30 * time.Second):
			t.Fatalf("replica %d did not try to join\n%s", i+1, rs[i+1].lastOut.String())
		}
	}
	rs[0].launch(t)
	waitChartCluster(t, rs)
	for _, r := range rs {
		r.checkFolder(t)
	}

	// The whole tier restarts at once.
	for _, r := range rs {
		r.stop()
	}
	for _, r := range rs {
		r.launch(t)
	}
	waitChartCluster(t, rs)

	// Replica 0's volume is lost: out of the cluster, a new empty folder,
	// the file of a cluster that exists.
	rs[0].stop()
	if err := rs[1].admin().RemoveClusterMember(context.Background(), rs[0].cfg.Cluster.ID); err != nil {
		t.Fatal(err)
	}
	r0 := rs[0]
	r0.cfg = chartConfig(t, "joined", 0)
	if r0.cfg.Cluster.Bootstrap || len(r0.cfg.Cluster.Join) != 2 {
		t.Fatalf("once the cluster exists replica 0 should join the others: %+v", r0.cfg.Cluster)
	}
	r0.mapAddrs(t, byName)
	r0.nodeDir = &nodeDir{t: t, dir: t.TempDir(), addr: r0.cfg.API.Addr}
	r0.layOut(t, ident)
	r0.launch(t)
	waitChartCluster(t, rs)
	r0.checkFolder(t)
}

// chartConfig reads replica i's strata.yaml of a variant of the chart's
// rendering, strictly, as strata serve does.
func chartConfig(t *testing.T, variant string, i int) config.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartReplicas, variant, fmt.Sprintf("strata-hq-%d.yaml", i)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.ID != fmt.Sprintf("strata-hq-%d", i) || cfg.DataDir != "data" {
		t.Fatalf("replica %d: cluster id %q, data_dir %q", i, cfg.Cluster.ID, cfg.DataDir)
	}
	return cfg
}

// mapAddrs gives the replica's listeners free loopback ports and maps
// the other replicas' stable names (its join list) to their addresses
// here.
func (r *chartReplica) mapAddrs(t *testing.T, byName map[string]string) {
	t.Helper()
	c := &r.cfg
	if r.chAt != byName[c.Cluster.Advertise] {
		t.Fatalf("replica %d advertises %s", r.i, c.Cluster.Advertise)
	}
	c.API.Addr = freeAddr(t)
	c.Cluster.Addr, c.Cluster.Advertise = r.chAt, r.chAt
	if c.Federation.Addr != "" {
		c.Federation.Addr = freeUDP(t)
	}
	if c.MQTT.Addr != "" {
		c.MQTT.Addr = freeAddr(t)
	}
	for k, a := range c.Cluster.Join {
		here, ok := byName[a]
		if !ok {
			t.Fatalf("replica %d joins through %s, not a replica's stable name", r.i, a)
		}
		c.Cluster.Join[k] = here
	}
}

// layOut makes the replica's folder as the pod sees its volume: the
// config, the admin token and the identity's TLS files read-only (root's,
// group podUser, as the kubelet mounts them with the pods' fsGroup) in a
// folder the group may write.
func (r *chartReplica) layOut(t *testing.T, ident *nodeDir) {
	t.Helper()
	body, err := config.Marshal(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"strata.yaml": body}
	for _, f := range []string{"admin.token", "tls/ca.crt", "tls/ca.key", "tls/api.crt", "tls/api.key"} {
		b, err := os.ReadFile(filepath.Join(ident.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	if err := os.Mkdir(filepath.Join(r.dir, "tls"), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(r.dir, f), b, 0o440); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(r.dir, "tls"), 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return // run as this user: the layout is the same, without owners
	}
	for _, p := range []string{"", "tls", "strata.yaml", "admin.token", "tls/ca.crt", "tls/ca.key", "tls/api.crt", "tls/api.key"} {
		if err := os.Chown(filepath.Join(r.dir, p), 0, podUser); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(r.dir, 0o2775); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to root.
	if err := os.Chmod(filepath.Dir(r.dir), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(r.dir, "tls"), 0o755) })
}

// launch starts strata serve on the folder, as the image's command does
// (as its user when root), without waiting.
func (r *chartReplica) launch(t *testing.T) {
	t.Helper()
	cmd := exec.Command(strataBin, "serve", "--config", r.config())
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: podUser, Gid: podUser, Groups: []uint32{podUser}}}
	}
	out := &logBuf{ws: &r.watches}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	r.p, r.lastOut = p, out
	t.Cleanup(r.kill)
}

// checkFolder checks what the node wrote: its store and its certificate
// on the channel beside the read-only files, as the image's user.
func (r *chartReplica) checkFolder(t *testing.T) {
	t.Helper()
	for _, f := range []string{"data", "replica.crt", "replica.key"} {
		st, err := os.Stat(filepath.Join(r.dir, f))
		if err != nil {
			t.Errorf("replica %d: %v", r.i, err)
			continue
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; os.Geteuid() == 0 && uid != podUser {
			t.Errorf("replica %d: %s belongs to %d", r.i, f, uid)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(r.dir, "tls")); err != nil || len(ents) != 4 {
		t.Errorf("replica %d: tls/ holds %d files: %v", r.i, len(ents), err)
	}
}

// waitChartCluster waits until every replica is ready (it knows a
// leader) and the cluster has its three voters.
func waitChartCluster(t *testing.T, rs []*chartReplica) {
	t.Helper()
	ctx := context.Background()
	for _, r := range rs {
		tstest.WaitForErr(t, time.Minute, fmt.Sprintf("replica %d ready", r.i), func() (bool, error) {
			if gone, err := r.p.gone(); gone {
				t.Fatalf("replica %d exited: %v\n%s", r.i, err, r.lastOut.String())
			}
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			err := r.admin().Ready(c)
			return err == nil, err
		})
	}
	tstest.WaitForErr(t, time.Minute, "three voters", func() (bool, error) {
		st, err := rs[0].admin().Cluster(ctx)
		if err != nil {
			return false, err
		}
		voters := 0
		for _, m := range st.Members {
			if m.Role == "voter" && m.State != "unreachable" {
				voters++
			}
		}
		return voters == 3 && len(st.Members) == 3, fmt.Errorf("members %+v", st.Members)
	})
}
