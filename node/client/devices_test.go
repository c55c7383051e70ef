package client

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDeviceAndJobRequests(t *testing.T) {
	const job = `{"id":"j1","path":"/devices/d-1","device":"d-1","tenant":"acme","function":"ping","args":{"n":1},` +
		`"created_by":"alice","state":"%s","result":{"pong":true},"history":[{"state":"queued","time":"2026-01-01T00:00:00Z"}]}`
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		p := r.Method + " " + r.URL.Path
		switch {
		case p == "POST /api/v1/enroll":
			if auth != "" {
				writeJSON(w, 400, `{"error":"enroll sent a bearer token","code":"invalid"}`)
				return
			}
			writeJSON(w, 200, `{"device_id":"d-1","mqtt_username":"d-1","mqtt_password":"sd_x","mqtt_address":"h:8883","ca_pem":"CA","path":"/devices/d-1","tenant":"acme","group":"g","topic_prefix":"strata/d-1/"}`)
		case auth != "Bearer tok":
			writeJSON(w, 401, `{"error":"missing token","code":"unauthorized"}`)
		case p == "POST /api/v1/enrollment-tokens":
			writeJSON(w, 201, `{"token":"se_secret","id":"e1","group":"g","tenant":"acme","uses":2,"used":0,"revoked":false}`)
		case p == "GET /api/v1/enrollment-tokens":
			writeJSON(w, 200, `{"tokens":[{"id":"e1","group":"g","tenant":"acme","uses":2,"used":1,"revoked":true}]}`)
		case p == "DELETE /api/v1/enrollment-tokens/e1":
			w.WriteHeader(204)
		case p == "GET /api/v1/devices":
			writeJSON(w, 200, `{"devices":[{"id":"d-1","path":"/devices/d-1","tenant":"acme","group":"g","hardware_id":"hw","enroll_token":"e1","revoked":false}]}`)
		case p == "GET /api/v1/devices/d-1":
			writeJSON(w, 200, `{"id":"d-1","hardware_id":"hw"}`)
		case p == "POST /api/v1/devices/d-1/revoke":
			writeJSON(w, 200, `{"id":"d-1","revoked":true,"revoked_at":"2026-01-01T00:00:00Z"}`)
		case p == "POST /api/v1/contexts/devices/d-1/functions/ping":
			writeJSON(w, 202, strings.Replace(job, "%s", "queued", 1))
		case p == "POST /api/v1/contexts/devices/d-2/functions/ping":
			writeJSON(w, 200, strings.Replace(job, "%s", "succeeded", 1))
		case p == "GET /api/v1/jobs/j1":
			writeJSON(w, 200, strings.Replace(job, "%s", "running", 1))
		case p == "GET /api/v1/jobs":
			writeJSON(w, 200, `{"jobs":[`+strings.Replace(job, "%s", "queued", 1)+`],"next":"j1"}`)
		case p == "POST /api/v1/jobs/j1/cancel":
			writeJSON(w, 409, `{"error":"job j1 is already succeeded","code":"conflict"}`)
		default:
			writeJSON(w, 404, `{"error":"no such thing","code":"not_found"}`)
		}
	})
	ctx := context.Background()
	c := f.client("tok")
	check := func(what, wantReq, wantBody string) {
		t.Helper()
		req, body := f.last()
		if req != wantReq || body != wantBody {
			t.Errorf("%s: %s %s, want %s %s", what, req, body, wantReq, wantBody)
		}
	}

	ct, err := c.CreateEnrollToken(ctx, NewEnrollToken{Group: "g", Tenant: "acme", TTL: 72 * time.Hour, Uses: 2})
	if err != nil || ct.Secret != "se_secret" || ct.ID != "e1" || ct.Uses != 2 {
		t.Fatalf("create = %+v, %v", ct, err)
	}
	check("create", "POST /api/v1/enrollment-tokens", `{"group":"g","tenant":"acme","uses":2,"ttl":"72h0m0s"}`)
	if _, err := c.CreateEnrollToken(ctx, NewEnrollToken{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	check("create with defaults", "POST /api/v1/enrollment-tokens", `{"group":"g"}`)
	ts, err := c.ListEnrollTokens(ctx)
	if err != nil || len(ts) != 1 || !ts[0].Revoked || ts[0].Used != 1 {
		t.Fatalf("list = %+v, %v", ts, err)
	}
	if err := c.RevokeEnrollToken(ctx, "e1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeEnrollToken(ctx, "e2"); !IsCode(err, CodeNotFound) {
		t.Errorf("revoke e2 = %v", err)
	}

	en, err := c.Enroll(ctx, EnrollRequest{Token: "se_secret", HardwareID: "hw"})
	if err != nil || en.DeviceID != "d-1" || en.MQTTPassword != "sd_x" || en.MQTTAddress != "h:8883" || en.TopicPrefix != "strata/d-1/" {
		t.Fatalf("enroll = %+v, %v", en, err)
	}
	check("enroll", "POST /api/v1/enroll", `{"token":"se_secret","hardware_id":"hw"}`)

	ds, err := c.ListDevices(ctx)
	if err != nil || len(ds) != 1 || ds[0].EnrollToken != "e1" || ds[0].HardwareID != "hw" {
		t.Fatalf("devices = %+v, %v", ds, err)
	}
	if d, err := c.GetDevice(ctx, "d-1"); err != nil || d.HardwareID != "hw" {
		t.Fatalf("device = %+v, %v", d, err)
	}
	if d, err := c.RevokeDevice(ctx, "d-1"); err != nil || !d.Revoked || d.RevokedAt.IsZero() {
		t.Fatalf("revoke = %+v, %v", d, err)
	}
	// An id is one segment, escaped once; one with a slash is refused.
	if _, err := c.GetDevice(ctx, "a b%"); !IsCode(err, CodeNotFound) {
		t.Errorf("get 'a b%%' = %v", err)
	}
	check("escaped id", "GET /api/v1/devices/a%20b%25", "")
	for _, id := range []string{"", "a/b", "x/revoke"} {
		if _, err := c.GetDevice(ctx, id); err == nil || !strings.Contains(err.Error(), "path segment") {
			t.Errorf("get %q = %v", id, err)
		}
		if _, err := c.CancelJob(ctx, id); err == nil {
			t.Errorf("cancel %q succeeded", id)
		}
	}

	j, status, err := c.CallFunction(ctx, "devices/d-1", "ping", json.RawMessage(`{"n":1}`), 10*time.Second)
	if err != nil || status != 202 || j.ID != "j1" || j.State != JobQueued || j.State.Final() || string(j.Args) != `{"n":1}` {
		t.Fatalf("call = %+v, %d, %v", j, status, err)
	}
	check("call", "POST /api/v1/contexts/devices/d-1/functions/ping", `{"args":{"n":1},"wait":"10s"}`)
	deadline := time.Date(2026, 1, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	j, status, err = c.Call(ctx, "/devices/d-2", "ping", Call{Deadline: deadline})
	if err != nil || status != 200 || !j.State.Final() || string(j.Result) != `{"pong":true}` {
		t.Fatalf("call = %+v, %d, %v", j, status, err)
	}
	check("call with deadline", "POST /api/v1/contexts/devices/d-2/functions/ping", `{"deadline":"2026-01-01T11:00:00Z"}`)
	if _, _, err := c.Call(ctx, "/devices/d-1", "ping", Call{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check("call with ttl", "POST /api/v1/contexts/devices/d-1/functions/ping", `{"ttl":"1h0m0s"}`)
	if _, status, err := c.CallFunction(ctx, "/devices/d-3", "ping", nil, 0); !IsCode(err, CodeNotFound) || status != 404 {
		t.Errorf("call d-3 = %d, %v", status, err)
	}

	if j, err := c.GetJob(ctx, "j1"); err != nil || j.State != JobRunning || len(j.History) != 1 || j.History[0].State != JobQueued {
		t.Fatalf("job = %+v, %v", j, err)
	}
	page, err := c.ListJobs(ctx, JobQuery{Path: "devices", Device: "d-1", State: JobQueued, Limit: 5, Before: "j9"})
	if err != nil || len(page.Jobs) != 1 || page.Next != "j1" {
		t.Fatalf("jobs = %+v, %v", page, err)
	}
	check("list jobs", "GET /api/v1/jobs?before=j9&device=d-1&limit=5&path=%2Fdevices&state=queued", "")
	if _, err := c.ListJobs(ctx, JobQuery{}); err != nil {
		t.Fatal(err)
	}
	check("list all jobs", "GET /api/v1/jobs", "")
	if _, err := c.CancelJob(ctx, "j1"); !IsCode(err, CodeConflict) {
		t.Errorf("cancel = %v", err)
	}
}
