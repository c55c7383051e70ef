package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
)

// Telemetry and events acknowledged at QoS 1 survive kill -9 of the node.
func TestDeviceDataSurvivesKill(t *testing.T) {
	n := initDeviceNode(t, "probe1")
	n.start()
	e := n.enroll("pumps", "hw-durable")
	d := mustConnectDevice(t, e)
	const count = 300
	for i := range count {
		d.mustPublish("telemetry", map[string]any{"seq": i})
		d.mustPublish("events", map[string]any{"name": "tick", "payload": map[string]int{"seq": i}})
	}
	n.kill() // right after the last PUBACK
	n.start()
	admin := n.admin()
	if v, err := variable(admin, e.Path, "seq"); err != nil || v != fmt.Sprint(count-1) {
		t.Fatalf("seq after kill -9 = %s, %v; want %d", v, err, count-1)
	}
	seen := map[int]bool{}
	before := uint64(0)
	for {
		page, err := admin.Events(context.Background(), e.Path, client.EventQuery{Limit: 1000, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			if ev.Name == "tick" {
				var p struct{ Seq int }
				json.Unmarshal(ev.Payload, &p)
				seen[p.Seq] = true
			}
		}
		if page.Next == 0 {
			break
		}
		before = page.Next
	}
	for i := range count {
		if !seen[i] {
			t.Fatalf("acknowledged event %d lost after kill -9 (%d of %d kept)", i, len(seen), count)
		}
	}
}

// A command for an offline device is delivered once when it reconnects,
// even though the node was killed in between, and its result reaches the
// operator.
func TestCommandToOfflineDeviceAcrossKill(t *testing.T) {
	n := initDeviceNode(t, "probe1")
	n.start()
	admin := n.admin()
	e := n.enroll("pumps", "hw-offline")
	d := mustConnectDevice(t, e)
	d.mustPublish("inventory", map[string]any{"hostname": "pump-7", "functions": []map[string]string{{"name": "ping"}}})
	d.c.Disconnect(250)
	tstest.WaitForErr(t, e2eTimeout, "offline", func() (bool, error) {
		v, err := variable(admin, e.Path, "online")
		return v == "false", err
	})
	job, status, err := admin.CallFunction(context.Background(), e.Path, "ping", json.RawMessage(`{"n": 1}`), 0)
	if err != nil || status != http.StatusAccepted || job.State != client.JobState("queued") {
		t.Fatalf("call on an offline device: %d %+v %v", status, job, err)
	}
	n.kill()
	n.start()
	admin = n.admin()
	d = mustConnectDevice(t, e)
	tstest.WaitForErr(t, e2eTimeout, "the queued command", func() (bool, error) { return len(d.commands()) > 0, nil })
	got := d.commands()[0]
	if got.ID != job.ID || got.Function != "ping" || string(got.Args) != `{"n":1}` {
		t.Fatalf("received %+v, want job %s", got, job.ID)
	}
	tstest.WaitForErr(t, e2eTimeout, "delivered", func() (bool, error) {
		j, err := admin.GetJob(context.Background(), job.ID)
		return err == nil && j.State == "delivered", err
	})
	d.mustPublish("cmd/"+job.ID+"/result", map[string]any{"status": "succeeded", "result": map[string]bool{"pong": true}})
	j, err := admin.GetJob(context.Background(), job.ID)
	if err != nil || j.State != "succeeded" || string(j.Result) != `{"pong":true}` {
		t.Fatalf("job after result: %+v %v", j, err)
	}
	var states []string
	for _, h := range j.History {
		states = append(states, string(h.State))
	}
	if !slices.Equal(states, []string{"queued", "delivered", "succeeded"}) {
		t.Fatalf("history %v", states)
	}
	if n := len(d.commands()); n != 1 {
		t.Fatalf("command delivered %d times", n)
	}
	// A live call with wait returns the result in the answer.
	go func() {
		tstest.WaitForErr(t, e2eTimeout, "second command", func() (bool, error) { return len(d.commands()) > 1, nil })
		c := d.commands()[1]
		d.publish("cmd/"+c.ID+"/result", map[string]any{"status": "failed", "error": "no"})
	}()
	j2, status, err := admin.CallFunction(context.Background(), e.Path, "ping", nil, 20*time.Second)
	if err != nil || status != http.StatusOK || j2.State != "failed" || j2.Error != "no" {
		t.Fatalf("live call: %d %+v %v", status, j2, err)
	}
}

// Refusals: a wrong token, a revoked device, another device's topic,
// malformed and oversized payloads; the node keeps serving.
func TestDeviceRefusals(t *testing.T) {
	n := initDeviceNode(t, "probe1")
	n.start()
	admin := n.admin()
	anon := n.client("")
	if _, err := anon.Enroll(context.Background(), client.EnrollRequest{Token: "se_nope", HardwareID: "x"}); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("enroll with a wrong token: %v", err)
	}
	e1 := n.enroll("g", "hw-1")
	e2 := n.enroll("g", "hw-2")
	bad := *e1
	bad.MQTTPassword = e2.MQTTPassword
	if _, err := connectDevice(t, &bad); err == nil {
		t.Fatal("device 1 connected with device 2's secret")
	}
	d1 := mustConnectDevice(t, e1)
	// Malformed and oversized: acknowledged (3.1.1), rejected, recorded.
	for _, p := range [][]byte{[]byte(`{"temp": `), []byte(`[1,2]`), make([]byte, 300<<10)} {
		d1.mustPublish("telemetry", p)
	}
	d1.mustPublish("telemetry", map[string]int{"alive": 1})
	if v, err := variable(admin, e1.Path, "alive"); err != nil || v != "1" {
		t.Fatalf("after bad payloads: %s %v", v, err)
	}
	tstest.WaitForErr(t, e2eTimeout, "a rejected event", func() (bool, error) {
		page, err := admin.Events(context.Background(), e1.Path, client.EventQuery{})
		if err != nil {
			return false, err
		}
		for _, ev := range page.Events {
			if ev.Name == "rejected" {
				return true, nil
			}
		}
		return false, nil
	})
	// Another device's topic: refused, the connection closed (3.1.1).
	d1.c.Publish(e2.TopicPrefix+"telemetry", 1, false, `{"x": 1}`).WaitTimeout(2 * time.Second)
	tstest.WaitForErr(t, e2eTimeout, "disconnect", func() (bool, error) { return !d1.c.IsConnectionOpen(), nil })
	if _, err := variable(admin, e2.Path, "x"); err == nil {
		t.Fatal("device 1 wrote into device 2")
	}
	// Revocation disconnects at once and refuses reconnects.
	d2 := mustConnectDevice(t, e2)
	if _, err := admin.RevokeDevice(context.Background(), e2.DeviceID); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, e2eTimeout, "revoked device disconnected", func() (bool, error) { return !d2.c.IsConnectionOpen(), nil })
	if _, err := connectDevice(t, e2); err == nil {
		t.Fatal("revoked device connected")
	}
	if err := admin.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
}
