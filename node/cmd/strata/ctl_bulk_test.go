package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/strata-dm/strata/node/client"
)

const bulkID = "bd3o1k2ke6ss7vla0fnl0"

// fakeBulkAPI serves one bulk job that is running on the first read and
// done, with one failure, on the next ones.
func fakeBulkAPI() http.HandlerFunc {
	var reads atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		job := func(state string, ok, failed int) string {
			return `{"id":"` + bulkID + `","bulk":true,"function":"reboot","target":{"labels":{"site":"p7"}},"tenant":"","created_by":"admin",` +
				`"created":"2026-01-01T00:00:00Z","deadline":"2026-01-01T01:00:00Z","state":"` + state + `",` +
				`"counters":{"total":3,"queued":` + bitoa(3-ok-failed) + `,"delivered":0,"running":0,"succeeded":` + bitoa(ok) + `,"failed":` + bitoa(failed) + `,"expired":0,"cancelled":0},` +
				`"local":{"total":0,"queued":0,"delivered":0,"running":0,"succeeded":0,"failed":0,"expired":0,"cancelled":0,"state":"` + state + `"},` +
				`"peers":{"/peers/p7":{"total":3,"queued":0,"delivered":0,"running":0,"succeeded":` + bitoa(ok) + `,"failed":` + bitoa(failed) + `,"expired":0,"cancelled":0,"state":"` + state + `"}},"waves":[]}`
		}
		switch r.Method + " " + r.URL.Path {
		case "POST /api/v1/jobs":
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, job("running", 0, 0))
		case "GET /api/v1/jobs/" + bulkID:
			if reads.Add(1) == 1 {
				io.WriteString(w, job("running", 1, 0))
			} else {
				io.WriteString(w, job("done", 2, 1))
			}
		case "POST /api/v1/jobs/" + bulkID + "/cancel":
			io.WriteString(w, job("cancelled", 0, 0))
		case "POST /api/v1/jobs/" + bulkID + "/pause":
			io.WriteString(w, strings.Replace(job("paused", 1, 0), `"state":"paused",`, `"state":"paused","reason":"paused by admin",`, 1))
		case "POST /api/v1/jobs/" + bulkID + "/resume", "POST /api/v1/jobs/" + bulkID + "/retry":
			io.WriteString(w, job("running", 1, 0))
		case "GET /api/v1/jobs":
			if r.URL.Query().Get("bulk") != "true" {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":"want bulk=true","code":"invalid"}`)
				return
			}
			io.WriteString(w, `{"jobs":[{"id":"`+bulkID+`","bulk":true,"function":"reboot","tenant":"","state":"paused","reason":"max_failures",`+
				`"counters":{"total":3,"queued":1,"delivered":0,"running":0,"succeeded":1,"failed":1,"expired":0,"cancelled":0},`+
				`"created":"2026-01-01T00:00:00Z","created_by":"admin"}],"next":"`+bulkID+`"}`)
		case "GET /api/v1/jobs/" + bulkID + "/failures":
			io.WriteString(w, `{"failures":[{"node":"/peers/p7","path":"/peers/p7/devices/d-1","job":"`+bulkID+`-d-1","state":"failed","error":"disk full","time":"2026-01-01T00:00:05Z"}],"next":"/peers/p7@12"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"no such thing","code":"not_found"}`)
		}
	}
}

func bitoa(n int) string { return strconv.Itoa(n) }

func TestCtlBulkJobs(t *testing.T) {
	n := newFakeNode(t, fakeBulkAPI())
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("jobs", "run", "reboot", "--filter", "path=/peers/eu", "--filter", "var.os=android",
		"--label", "site=p7", "--subtree", "/peers", "--paths", "/a,/b", "--arg", "force=true", "--ttl", "2h")
	if code != 0 || !strings.Contains(out, "bulk job:  "+bulkID) || !strings.Contains(out, "/peers/p7") {
		t.Fatalf("run: exit %d\n%s%s", code, out, errOut)
	}
	var body client.NewBulkJob
	if err := json.Unmarshal([]byte(n.last(t).body), &body); err != nil {
		t.Fatal(err)
	}
	if body.Function != "reboot" || body.Target.Filter["var.os"] != "android" || body.Target.Filter["path"] != "/peers/eu" ||
		body.Target.Labels["site"] != "p7" || body.Target.Subtree != "/peers" || len(body.Target.Paths) != 2 ||
		string(body.Args) != `{"force":true}` || body.TTL != "2h0m0s" {
		t.Fatalf("request body %+v", body)
	}
	if code, _, errOut := ctl("jobs", "run", "reboot"); code != 1 || !strings.Contains(errOut, "give a target") {
		t.Fatalf("run without a target: exit %d %q", code, errOut)
	}
	// Watch (not a terminal: a line per change) ends with the job, and
	// its exit status tells that a device failed.
	code, out, errOut = ctl("jobs", "watch", bulkID, "--every", "100ms")
	if code != exitJobFailed || !strings.Contains(out, "running: 1/3 finished") || !strings.Contains(out, "done: 3/3 finished (succeeded 2, failed 1") ||
		!strings.Contains(errOut, "2 of 3 succeeded, 1 failed") {
		t.Fatalf("watch: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = ctl("jobs", "get", bulkID)
	if code != 0 || !strings.Contains(out, "state:     done") {
		t.Fatalf("get: exit %d\n%s", code, out)
	}
	code, out, errOut = ctl("jobs", "failures", bulkID)
	if code != 0 || !strings.Contains(out, "disk full") || !strings.Contains(errOut, "more: --after /peers/p7@12") {
		t.Fatalf("failures: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("jobs", "list", "--bulk", "--limit", "1")
	if code != 0 || !strings.Contains(out, "paused") || !strings.Contains(out, "2/3") || !strings.Contains(out, "max_failures") ||
		!strings.Contains(errOut, "more: --bulk --before "+bulkID) || n.last(t).query != "bulk=true&limit=1" {
		t.Fatalf("list --bulk: exit %d\n%s%s (query %q)", code, out, errOut, n.last(t).query)
	}
	if code, _, errOut := ctl("jobs", "list", "--bulk", "--state", "failed"); code != 1 || !strings.Contains(errOut, "--bulk takes only") {
		t.Fatalf("list --bulk --state: exit %d %q", code, errOut)
	}
	code, out, _ = ctl("jobs", "cancel", bulkID)
	if code != 0 || !strings.Contains(out, "cancelled") || n.last(t).path != "/api/v1/jobs/"+bulkID+"/cancel" {
		t.Fatalf("cancel: exit %d\n%s", code, out)
	}
}

// The terminal view draws a bar for the job and one per node, and stops
// with the job.
func TestBulkBarView(t *testing.T) {
	var buf bytes.Buffer
	v := newBarView(context.Background(), &buf)
	b := &client.BulkJob{ID: bulkID, State: client.BulkRunning, Counters: client.BulkCounters{Total: 4, Succeeded: 1, Queued: 3},
		Peers: map[string]client.BulkPeer{"/peers/p7": {BulkCounters: client.BulkCounters{Total: 4, Succeeded: 1, Queued: 3}}}}
	v.update(b)
	b.Counters = client.BulkCounters{Total: 4, Succeeded: 3, Failed: 1}
	b.Peers["/peers/p7"] = client.BulkPeer{BulkCounters: b.Counters}
	v.update(b)
	v.stop()
	if out := buf.String(); !strings.Contains(out, "/peers/p7") || !strings.Contains(out, "4/4") || !strings.Contains(out, "failed 1") {
		t.Fatalf("bars:\n%s", out)
	}
}

// The rollout flags make the rollout object; pause, resume and retry
// post to their paths.
func TestCtlBulkRollout(t *testing.T) {
	n := newFakeNode(t, fakeBulkAPI())
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("jobs", "run", "reboot", "--subtree", "/", "--waves", "5,25%,70", "--max-failures", "2%",
		"--min-finished", "10", "--rate", "5", "--rate-factor", "2", "--rate-every", "100", "--max-concurrency", "50",
		"--success-threshold", "90%", "--approval")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, errOut)
	}
	var body struct {
		Rollout map[string]any `json:"rollout"`
	}
	if err := json.Unmarshal([]byte(n.last(t).body), &body); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(body.Rollout)
	want := `{"approval":true,"max_concurrency":50,"max_failures":"2%","min_finished":10,"rate":{"every":100,"factor":2,"per_second":5},"success_threshold":"90%","waves":["5%","25%","70%"]}`
	if string(got) != want {
		t.Fatalf("rollout sent:\n%s\nwant\n%s", got, want)
	}
	code, _, _ = ctl("jobs", "run", "reboot", "--subtree", "/", "--rollout", `{"waves":[1]}`, "--max-failures", "3")
	body.Rollout = nil
	if err := json.Unmarshal([]byte(n.last(t).body), &body); code != 0 || err != nil {
		t.Fatal(code, err)
	}
	if got, _ := json.Marshal(body.Rollout); string(got) != `{"max_failures":3,"waves":[1]}` {
		t.Fatalf("--rollout with a flag: %s", got)
	}
	code, _, _ = ctl("jobs", "run", "reboot", "--subtree", "/", "--rollout", `{"health":{"vars":{"model":"rk3"}}}`,
		"--health-online", "--health-var", "fw=2.1.0", "--health-var", "cpus=4", "--health-within", "10m")
	body.Rollout = nil
	if err := json.Unmarshal([]byte(n.last(t).body), &body); code != 0 || err != nil {
		t.Fatal(code, err)
	}
	if got, _ := json.Marshal(body.Rollout); string(got) != `{"health":{"online":true,"vars":{"cpus":"4","fw":"2.1.0","model":"rk3"},"within":"10m"}}` {
		t.Fatalf("health gate flags: %s", got)
	}
	if code, _, errOut := ctl("jobs", "run", "reboot", "--subtree", "/", "--health-var", "fw"); code != 1 || !strings.Contains(errOut, "--health-var") {
		t.Fatalf("a bad --health-var: exit %d %q", code, errOut)
	}
	if code, _, errOut := ctl("jobs", "run", "reboot", "--subtree", "/", "--max-failures", "two"); code != 1 || !strings.Contains(errOut, "--max-failures") {
		t.Fatalf("a bad --max-failures: exit %d %q", code, errOut)
	}
	code, out, _ = ctl("jobs", "pause", bulkID)
	if code != 0 || !strings.Contains(out, "paused by admin") || n.last(t).path != "/api/v1/jobs/"+bulkID+"/pause" {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	for _, verb := range []string{"resume", "retry"} {
		code, out, _ = ctl("jobs", verb, bulkID)
		if code != 0 || !strings.Contains(out, "running") || n.last(t).path != "/api/v1/jobs/"+bulkID+"/"+verb {
			t.Fatalf("%s: exit %d\n%s", verb, code, out)
		}
	}
}

// Watching a rollout shows each wave's progress.
func TestBulkWaveLines(t *testing.T) {
	var buf bytes.Buffer
	v := &lineView{w: &buf}
	v.update(&client.BulkJob{ID: bulkID, State: client.BulkPaused, Reason: "/peers/p7: 2 devices failed",
		Counters: client.BulkCounters{Total: 10, Succeeded: 3, Failed: 2, Pending: 5},
		Waves: []client.BulkWave{{Size: 2, State: client.BulkDone, Counters: client.BulkCounters{Total: 2, Succeeded: 2}},
			{Size: 3, State: client.BulkPaused, Counters: client.BulkCounters{Total: 3, Succeeded: 1, Failed: 2}},
			{Size: 5, State: client.BulkPending, Counters: client.BulkCounters{Total: 5, Pending: 5}}}})
	if out := buf.String(); !strings.Contains(out, "waves: 1 done 2/2 2 paused 3/3 3 pending 0/5") || !strings.Contains(out, "(/peers/p7: 2 devices failed)") {
		t.Fatalf("line:\n%s", out)
	}
}

// The terminal view draws a bar per wave, kept across changes of its
// state.
func TestBulkBarViewWaves(t *testing.T) {
	var buf bytes.Buffer
	v := newBarView(context.Background(), &buf)
	b := &client.BulkJob{ID: bulkID, State: client.BulkPaused, Counters: client.BulkCounters{Total: 4, Succeeded: 1, Failed: 1, Pending: 2},
		Waves: []client.BulkWave{{Size: 2, State: client.BulkPaused, Counters: client.BulkCounters{Total: 2, Succeeded: 1, Failed: 1}},
			{Size: 2, State: client.BulkPending, Counters: client.BulkCounters{Total: 2, Pending: 2}}}}
	v.update(b)
	b.State, b.Counters = client.BulkDone, client.BulkCounters{Total: 4, Succeeded: 3, Failed: 1}
	b.Waves[0].State = client.BulkDone
	b.Waves[1] = client.BulkWave{Size: 2, State: client.BulkDone, Counters: client.BulkCounters{Total: 2, Succeeded: 2}}
	v.update(b)
	if len(v.bars) != 4 {
		t.Fatalf("%d bars, want the job's, two waves' and this node's", len(v.bars))
	}
	v.stop()
	if out := buf.String(); !strings.Contains(out, "wave 2") || !strings.Contains(out, "2/2") {
		t.Fatalf("bars:\n%s", out)
	}
}
