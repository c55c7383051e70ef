package node

import (
	"context"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
)

// A bulk job issued through a follower of a cluster is worked on by the
// leader, and one cancelled through a follower is cancelled: the part's
// record is the truth, whichever replica changes it.
func TestNodeClusterBulkJob(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	n1 := startNode(t, replicaConfig(t, idDir, "r1"))
	n2 := startNode(t, replicaConfig(t, idDir, "r2", n1.Cluster().Address()))
	n3 := startNode(t, replicaConfig(t, idDir, "r3", n1.Cluster().Address()))
	nodes := []*Node{n1, n2, n3}
	ctx := context.Background()
	admin, err := client.New("https://"+n1.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.CloseIdleConnections)
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
	var leader, follower *Node
	tstest.WaitFor(t, time.Minute, "a leader", func() bool {
		leader, follower = nil, nil
		for _, n := range nodes {
			if n.cluster.IsLeader() {
				leader = n
			} else {
				follower = n
			}
		}
		return leader != nil && follower != nil
	})
	sys := &auth.Principal{User: "admin", System: true}
	tok := retryLeaderless(t, "an enrollment token", func() (string, error) {
		tok, _, err := leader.devices.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: "acme"})
		return tok, err
	})
	var devs []devices.Enrollment
	for _, hw := range []string{"hw-1", "hw-2"} {
		e := retryLeaderless(t, "enroll", func() (devices.Enrollment, error) {
			return leader.devices.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: hw}, "127.0.0.1:1")
		})
		retryLeaderless(t, "declare reboot", func() ([]model.Entry, error) {
			return leader.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path, Functions: []model.Function{{Name: "reboot"}}, SetFunctions: true})
		})
		devs = append(devs, e)
	}
	fc, err := client.New("https://"+follower.APIAddr(), ident.AdminToken, ident.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.CloseIdleConnections)
	tstest.WaitForErr(t, harnessWait, "the devices on the follower", func() (bool, error) {
		_, err := follower.model.Get(devs[1].Path)
		return err == nil, err
	})

	b := retryLeaderless(t, "a bulk job through the follower", func() (*client.BulkJob, error) {
		return fc.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/devices"}})
	})
	for _, d := range devs {
		id := jobs.BulkJobID(b.ID, d.DeviceID)
		tstest.WaitForErr(t, harnessWait, "the leader made "+id, func() (bool, error) {
			_, err := leader.jobs.Get(id)
			return err == nil, err
		})
		if err := leader.jobs.Report(ctx, d.DeviceID, id, jobs.Succeeded, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	tstest.WaitForErr(t, harnessWait, "done, read on the follower", func() (bool, error) {
		v, err := fc.GetBulkJob(ctx, b.ID)
		return err == nil && v.State == client.BulkDone && v.Counters == client.BulkCounters{Total: 2, Succeeded: 2}, err
	})

	c := retryLeaderless(t, "a second bulk job", func() (*client.BulkJob, error) {
		return fc.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/devices"}})
	})
	tstest.WaitForErr(t, harnessWait, "the leader made its jobs", func() (bool, error) {
		v, err := fc.GetBulkJob(ctx, c.ID)
		return err == nil && v.Counters.Queued == 2, err
	})
	if _, err := fc.CancelBulkJob(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessWait, "cancelled by the leader", func() (bool, error) {
		v, err := fc.GetBulkJob(ctx, c.ID)
		return err == nil && v.State == client.BulkCancelled && v.Counters == client.BulkCounters{Total: 2, Cancelled: 2}, err
	})
}
