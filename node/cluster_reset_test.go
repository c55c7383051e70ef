package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
)

// A follower that falls so far behind that it installs the leader's
// snapshot while it runs sees none of the snapshot's entries through the
// commit hooks: what its services derived from the log is rebuilt from
// the installed store. Here a device connected to it is revoked while it
// is cut off; once it has installed the snapshot it closes the device's
// session, as it does for a revocation it applies from the log.
func TestNodeClusterSnapshotInstallRefollows(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	small := func(id string, join ...string) config.Config {
		cfg := replicaConfig(t, idDir, id, join...)
		cfg.MQTT.TCPAddr = "127.0.0.1:0"
		// Snapshots and compaction after a few entries, so that the cut
		// off follower can only catch up from a snapshot.
		cfg.Cluster.SnapshotThreshold, cfg.Cluster.TrailingLogs = 8, 4
		cfg.Cluster.SnapshotInterval = config.Duration(50 * time.Millisecond)
		return cfg
	}
	n1 := startNode(t, small("r1"))
	n2 := startNode(t, small("r2", n1.Cluster().Address()))
	n3, px := startBehindProxy(t, small("r3", n1.Cluster().Address()))
	threeVoters(t, n1, n2, n3)

	ctx := context.Background()
	var leader *Node
	tstest.WaitFor(t, harnessWait, "r1 or r2 leads", func() bool {
		leader = nil
		for _, n := range []*Node{n1, n2} {
			if n.Cluster().IsLeader() {
				leader = n
			}
		}
		return leader != nil
	})
	admin, err := client.New("https://"+leader.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	sys := &auth.Principal{User: "admin", System: true}
	tok := retryLeaderless(t, "create an enrollment token", func() (string, error) {
		tok, _, err := leader.devices.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: "acme"})
		return tok, err
	})
	e := retryLeaderless(t, "enroll", func() (devices.Enrollment, error) {
		return leader.devices.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: "hw-1"}, "127.0.0.1:1")
	})
	tstest.WaitForErr(t, harnessWait, "the device on r3", func() (bool, error) {
		_, err := n3.model.Get(e.Path)
		return err == nil, err
	})
	lost := make(chan error, 1)
	o := paho.NewClientOptions().AddBroker("tcp://" + n3.MQTTAddr("tcp")).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	dev := paho.NewClient(o)
	if tk := dev.Connect(); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("connect to r3: %v", tk.Error())
	}
	defer dev.Disconnect(0)

	px.Partition(true)
	retryLeaderless(t, "revoke the device", func() (*client.Device, error) {
		return admin.RevokeDevice(ctx, e.DeviceID)
	})
	installs := func(n *Node) float64 {
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "strata_cluster_snapshot_installs_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	before := installs(n3)
	for i := range 64 {
		p := fmt.Sprintf("/filler-%d", i)
		retryLeaderless(t, "write "+p, func() (*client.Context, error) {
			c, _, err := admin.PutContext(ctx, p, client.ContextUpdate{Type: "folder"})
			return c, err
		})
	}
	select {
	case err := <-lost:
		t.Fatalf("the device's session on the cut off r3 closed before it learnt of the revocation: %v", err)
	default:
	}
	px.Partition(false)
	tstest.WaitFor(t, harnessWait, "r3 installs the leader's snapshot", func() bool { return installs(n3) > before })
	select {
	case <-lost:
	case <-time.After(harnessWait):
		t.Fatal("the device revoked while r3 was cut off still has its session on r3 after r3 installed the snapshot")
	}
}
