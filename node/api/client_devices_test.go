package api

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/jobs"
)

// TestClientDevicesAndJobs drives the device, enrollment and job routes
// with node/client, which mirrors their JSON without importing the
// services: every shape must decode as it expects.
func TestClientDevicesAndJobs(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	alice := tlsClient(t, e.api.Handler(), c.alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tok, err := alice.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "pumps", TTL: time.Hour, Uses: 5})
	if err != nil || tok.Tenant != "acme" || tok.Uses != 5 || tok.CreatedBy != "alice" || tok.Expires.Sub(tok.Created) != time.Hour {
		t.Fatalf("token %+v, %v", tok, err)
	}
	if ts, err := alice.ListEnrollTokens(ctx); err != nil || len(ts) != 1 || ts[0].ID != tok.ID {
		t.Fatalf("tokens %+v, %v", ts, err)
	}
	en, err := alice.Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: "hw-1"})
	if err != nil || en.Tenant != "acme" || en.Group != "pumps" || en.MQTTAddress != "127.0.0.1:8883" || en.Path != "/devices/"+en.DeviceID {
		t.Fatalf("enrollment %+v, %v", en, err)
	}
	if _, err := alice.Enroll(ctx, client.EnrollRequest{Token: "se_bad", HardwareID: "hw-1"}); !client.IsCode(err, client.CodeUnauthorized) {
		t.Fatalf("bad enrollment: %v", err)
	}
	ds, err := alice.ListDevices(ctx)
	if err != nil || len(ds) != 1 || ds[0].ID != en.DeviceID || ds[0].EnrollToken != tok.ID || ds[0].HardwareID != "hw-1" {
		t.Fatalf("devices %+v, %v", ds, err)
	}
	if d, err := alice.GetDevice(ctx, en.DeviceID); err != nil || d.Group != "pumps" || d.Enrolled.IsZero() {
		t.Fatalf("device %+v, %v", d, err)
	}

	e.device(c.alice, "hw-1", "ping") // declares ping (and enrolls again)
	answerer(t, e, en.DeviceID, jobs.Succeeded, `{"pong":true}`)
	j, status, err := alice.CallFunction(ctx, en.Path, "ping", json.RawMessage(`{"n":1}`), 10*time.Second)
	if err != nil || status != 200 || j.State != client.JobSucceeded || string(j.Result) != `{"pong":true}` || len(j.History) != 2 {
		t.Fatalf("call: %+v, %d, %v", j, status, err)
	}
	pending, status, err := alice.Call(ctx, en.Path, "ping", client.Call{TTL: time.Hour})
	if err != nil || status != 202 || pending.State != client.JobQueued || pending.Deadline.Sub(pending.Created) > time.Hour {
		t.Fatalf("call: %+v, %d, %v", pending, status, err)
	}
	if got, err := alice.GetJob(ctx, j.ID); err != nil || got.State != client.JobSucceeded || got.Function != "ping" || string(got.Args) != `{"n":1}` {
		t.Fatalf("job %+v, %v", got, err)
	}
	page, err := alice.ListJobs(ctx, client.JobQuery{Device: en.DeviceID, Limit: 1})
	if err != nil || len(page.Jobs) != 1 || page.Jobs[0].ID != pending.ID || page.Next != pending.ID {
		t.Fatalf("jobs %+v, %v", page, err)
	}
	if page, err = alice.ListJobs(ctx, client.JobQuery{Before: page.Next, State: client.JobSucceeded}); err != nil || len(page.Jobs) != 1 || page.Jobs[0].ID != j.ID {
		t.Fatalf("jobs %+v, %v", page, err)
	}
	if got, err := alice.CancelJob(ctx, pending.ID); err != nil || got.State != client.JobCancelled {
		t.Fatalf("cancel %+v, %v", got, err)
	}
	if _, err := alice.CancelJob(ctx, pending.ID); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("cancel again: %v", err)
	}
	if d, err := alice.RevokeDevice(ctx, en.DeviceID); err != nil || !d.Revoked {
		t.Fatalf("revoke %+v, %v", d, err)
	}
	if _, status, err := alice.CallFunction(ctx, en.Path, "ping", nil, 0); !client.IsCode(err, client.CodeConflict) || status != 409 {
		t.Fatalf("call on a revoked device: %d, %v", status, err)
	}
	if err := alice.RevokeEnrollToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WithToken(c.bob).GetDevice(ctx, en.DeviceID); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("bob gets acme's device: %v", err)
	}
}
