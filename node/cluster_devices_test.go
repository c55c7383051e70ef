package node

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
)

// A device connected to one follower of a cluster is enrolled through
// another follower, gets the command of a job created on the leader at
// once (its replica follows the job records it applies), and its result
// finishes the job for the operator on the leader; revoking it through the
// leader closes its session on its replica.
func TestNodeClusterDevices(t *testing.T) { testNodeClusterDevices(t, nil) }

// The same in PostgreSQL mode: the replicas share one database.
func TestNodeClusterDevicesPostgres(t *testing.T) { testNodeClusterDevices(t, postgresReplicas(t)) }

func testNodeClusterDevices(t *testing.T, edit func(*config.Config)) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string, join ...string) *Node {
		cfg := replicaConfig(t, idDir, id, join...)
		cfg.MQTT.TCPAddr = "127.0.0.1:0"
		if edit != nil {
			edit(&cfg)
		}
		return startNode(t, cfg)
	}
	n1 := start("r1")
	n2 := start("r2", n1.Cluster().Address())
	n3 := start("r3", n1.Cluster().Address())
	ctx := context.Background()
	admin, err := client.New("https://"+n1.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, time.Minute, "three voters", func() (bool, error) {
		st, err := admin.Cluster(ctx)
		if err != nil {
			return false, err
		}
		n := 0
		for _, m := range st.Members {
			if m.Role == "voter" && m.State != "unreachable" {
				n++
			}
		}
		return n == 3, nil
	})

	// Enrolled through r2 (its writes go to the leader).
	sys := &auth.Principal{User: "admin", System: true}
	tok := retryLeaderless(t, "create an enrollment token", func() (string, error) {
		tok, _, err := n2.devices.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: "acme"})
		return tok, err
	})
	e := retryLeaderless(t, "enroll", func() (devices.Enrollment, error) {
		return n2.devices.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: "hw-1"}, "127.0.0.1:1")
	})
	retryLeaderless(t, "offer a function", func() ([]model.Entry, error) {
		return n2.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path,
			Functions: []model.Function{{Name: "ping"}}, SetFunctions: true})
	})
	tstest.WaitForErr(t, harnessWait, "the device on r3", func() (bool, error) {
		_, err := n3.model.Get(e.Path)
		return err == nil, err
	})

	// Connected to r3, with Eclipse Paho.
	type cmd struct {
		Job string `json:"job"`
	}
	var mu sync.Mutex
	var got []string
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
	if tk := dev.Subscribe(e.TopicPrefix+"cmd/+", 1, func(_ paho.Client, m paho.Message) {
		var c cmd
		json.Unmarshal(m.Payload(), &c)
		mu.Lock()
		got = append(got, c.Job)
		mu.Unlock()
	}); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("subscribe: %v", tk.Error())
	}

	// A call on the leader: r3 delivers the command.
	var status int
	j := retryLeaderless(t, "call", func() (client.Job, error) {
		var (
			j   client.Job
			err error
		)
		j, status, err = admin.Call(ctx, string(e.Path), "ping", client.Call{})
		return j, err
	})
	if status != http.StatusAccepted {
		t.Fatalf("call: %d", status)
	}
	tstest.WaitFor(t, harnessWait, "the command on the device connected to r3", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1 && got[0] == j.ID
	})
	if tk := dev.Publish(e.TopicPrefix+"cmd/"+j.ID+"/result", 1, false, `{"status":"succeeded","result":{"pong":true}}`); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("result: %v", tk.Error())
	}
	tstest.WaitForErr(t, harnessWait, "the job succeeded, seen on the leader", func() (bool, error) {
		pj, err := admin.GetJob(ctx, j.ID)
		return err == nil && pj.State == client.JobSucceeded, err
	})

	// Revoked through the leader: its session on r3 closes.
	if _, err := admin.RevokeDevice(ctx, e.DeviceID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(harnessWait):
		t.Fatal("the revoked device's session on r3 is still open")
	}
}
