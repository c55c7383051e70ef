package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
)

// newOfflineAgent returns an agent that is never started: tests drive its
// command path directly and read answers from its queue.
func newOfflineAgent(t *testing.T, mutate func(*Config)) *Agent {
	t.Helper()
	cfg := Config{StateDir: newStateDir(t, "127.0.0.1:1", nil), Logger: tstest.Logger(t),
		Reboot: func(context.Context) error { t.Error("real reboot requested"); return nil }}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	return a
}

// wireResult is a result as the node decodes it.
type wireResult = apitypes.CommandResult

// runJob delivers a command to a as the MQTT handler would, processes it
// and returns the result it queued.
func runJob(t *testing.T, a *Agent, job, function, args string, deadline time.Time) wireResult {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"job": job, "function": function,
		"args": json.RawMessage(args), "deadline": deadline.Format(time.RFC3339Nano)})
	cmd, err := DecodeCommand(payload)
	if v := a.jobs.reserve(job); v == jobDuplicate {
		t.Fatalf("job %s is a duplicate", job)
	}
	a.process(context.Background(), delivery{job: job, cmd: cmd, err: err})
	return queuedResult(t, a, job)
}

// queuedResult finds job's result in a's queue.
func queuedResult(t *testing.T, a *Agent, job string) wireResult {
	t.Helper()
	es, err := a.queue.peek(1<<20, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.topic == "cmd/"+job+"/result" {
			var r wireResult
			if err := strictUnmarshal(e.payload, &r); err != nil {
				t.Fatalf("result %s: %v", e.payload, err)
			}
			return r
		}
	}
	t.Fatalf("no result queued for job %s", job)
	return wireResult{}
}

func soon() time.Time { return time.Now().Add(time.Minute) }

func TestPing(t *testing.T) {
	a := newOfflineAgent(t, nil)
	r := runJob(t, a, "j1", "ping", `{}`, soon())
	var out struct {
		Pong bool   `json:"pong"`
		Time string `json:"time"`
	}
	json.Unmarshal(r.Result, &out)
	if r.Status != StatusSucceeded || !out.Pong || r.Error != "" {
		t.Fatalf("ping = %+v", r)
	}
	if _, err := time.Parse(time.RFC3339, out.Time); err != nil {
		t.Fatalf("ping time %q: %v", out.Time, err)
	}
}

func TestUnknownFunctionAndBadArgs(t *testing.T) {
	a := newOfflineAgent(t, nil)
	if r := runJob(t, a, "j1", "wipe", `{}`, soon()); r.Status != StatusFailed || !strings.HasPrefix(r.Error, "unknown function") || r.Result != nil {
		t.Fatalf("unknown function: %+v", r)
	}
	if r := runJob(t, a, "j2", "ping", `{"typo":1}`, soon()); r.Status != StatusFailed || !strings.Contains(r.Error, "invalid args") {
		t.Fatalf("unknown arg accepted: %+v", r)
	}
}

func TestDeadlinePassedDoesNotRun(t *testing.T) {
	var reboots atomic.Int32
	a := newOfflineAgent(t, func(c *Config) {
		c.AllowReboot = true
		c.Reboot = func(context.Context) error { reboots.Add(1); return nil }
	})
	r := runJob(t, a, "j1", "reboot", `{}`, time.Now().Add(-time.Second))
	if r.Status != StatusFailed || r.Error != "deadline passed" {
		t.Fatalf("past deadline: %+v", r)
	}
	if reboots.Load() != 0 {
		t.Fatal("a command past its deadline ran")
	}
	if v := a.jobs.reserve("j1"); v != jobDuplicate {
		t.Fatalf("answered job not remembered: %v", v)
	}
}

func TestRebootRefusedByDefault(t *testing.T) {
	a := newOfflineAgent(t, nil) // its Reboot fails the test if called
	r := runJob(t, a, "j1", "reboot", `{}`, soon())
	if r.Status != StatusFailed || r.Error != ErrRebootNotAllowed.Error() {
		t.Fatalf("reboot without --allow-reboot: %+v", r)
	}
}

// TestRebootAnswersFirst: the result is queued and acknowledged before the
// (fake) reboot runs.
func TestRebootAnswersFirst(t *testing.T) {
	var rebooted atomic.Bool
	var a *Agent
	a = newOfflineAgent(t, func(c *Config) {
		c.AllowReboot = true
		c.Reboot = func(context.Context) error {
			if a.queue.len() != 0 {
				t.Error("reboot ran before its result was acknowledged")
			}
			rebooted.Store(true)
			return nil
		}
	})
	a.jobs.reserve("j1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.process(context.Background(), delivery{job: "j1", cmd: Command{Job: "j1", Function: "reboot", Deadline: soon()}})
	}()
	var seq uint64
	tstest.WaitFor(t, 5*time.Second, "the reboot result", func() bool {
		es, _ := a.queue.peek(100, 1<<20)
		for _, e := range es {
			if e.topic == "cmd/j1/result" {
				seq = e.seq
				return strings.Contains(string(e.payload), `"succeeded"`)
			}
		}
		return false
	})
	if rebooted.Load() {
		t.Fatal("rebooted before the result was acknowledged")
	}
	a.queue.ack(seq) // the broker's PUBACK
	<-done
	if !rebooted.Load() {
		t.Fatal("reboot did not run after acknowledgement")
	}
}

func TestSetConfig(t *testing.T) {
	a := newOfflineAgent(t, nil)
	changed := a.settings.changed()
	r := runJob(t, a, "j1", "set-config", `{"key":"telemetry_interval","value":"45s"}`, soon())
	if r.Status != StatusSucceeded || string(r.Result) != `{"telemetry_interval":"45s"}` {
		t.Fatalf("set-config: %+v (%s)", r, r.Result)
	}
	select {
	case <-changed:
	default:
		t.Fatal("settings change not signalled")
	}
	if got := a.settings.get().TelemetryInterval; got != 45*time.Second {
		t.Fatalf("live telemetry interval %v", got)
	}
	r = runJob(t, a, "j2", "set-config", `{"key":"inventory_interval","value":7200}`, soon())
	if r.Status != StatusSucceeded || string(r.Result) != `{"telemetry_interval":"45s","inventory_interval":"2h0m0s"}` {
		t.Fatalf("set-config seconds: %+v (%s)", r, r.Result)
	}
	for i, args := range []string{
		`{"key":"mqtt_password","value":"x"}`,
		`{"key":"telemetry_interval","value":"1ms"}`,
		`{"key":"telemetry_interval","value":"soon"}`,
		`{"key":"telemetry_interval","value":true}`,
		`{"key":"telemetry_interval"}`,
	} {
		if r := runJob(t, a, fmt.Sprintf("bad%d", i), "set-config", args, soon()); r.Status != StatusFailed {
			t.Errorf("set-config %s accepted: %+v", args, r)
		}
	}
	// Persisted, and it overrides the defaults at the next start.
	s, err := openSettings(a.cfg.StateDir, Settings{TelemetryInterval: time.Second, InventoryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.get(); got.TelemetryInterval != 45*time.Second || got.InventoryInterval != 2*time.Hour {
		t.Fatalf("reloaded settings %+v", got)
	}
}

func TestCollectLogs(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "syslog")
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	os.WriteFile(log, []byte(b.String()), 0o600)
	a := newOfflineAgent(t, func(c *Config) { c.LogPaths = []string{log, filepath.Join(dir, "missing")} })
	r := runJob(t, a, "j1", "collect-logs", `{"lines":3}`, soon())
	var out struct {
		Sources []logSource `json:"sources"`
	}
	json.Unmarshal(r.Result, &out)
	if r.Status != StatusSucceeded || len(out.Sources) != 1 || out.Sources[0].Source != log ||
		strings.Join(out.Sources[0].Lines, "|") != "line 7|line 8|line 9" {
		t.Fatalf("collect-logs: %+v %s", r, r.Result)
	}
	for i, args := range []string{`{"lines":0}`, `{"lines":5001}`, `{"lines":"10"}`} {
		if r := runJob(t, a, fmt.Sprintf("bad%d", i), "collect-logs", args, soon()); r.Status != StatusFailed {
			t.Errorf("collect-logs %s accepted", args)
		}
	}
}

func TestLastLinesBounded(t *testing.T) {
	lines, truncated := lastLines([]byte("partial\nb\nc\n"), 5, true)
	if strings.Join(lines, "|") != "b|c" || !truncated {
		t.Fatalf("lastLines = %q, %v", lines, truncated)
	}
	lines, truncated = lastLines([]byte("a\nb\nc"), 2, false)
	if strings.Join(lines, "|") != "b|c" || truncated {
		t.Fatalf("lastLines = %q, %v", lines, truncated)
	}
}

func TestOversizedResultBecomesFailure(t *testing.T) {
	a := newOfflineAgent(t, nil)
	seq, err := a.answer("j1", Result{Status: StatusSucceeded, Result: json.RawMessage(`"` + strings.Repeat("x", maxResultBytes) + `"`)})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := a.queue.peek(100, 1<<30)
	if es[len(es)-1].seq != seq || !strings.Contains(string(es[len(es)-1].payload), "result too large") {
		t.Fatalf("oversized result queued as %.100s", es[len(es)-1].payload)
	}
}

func TestResultShape(t *testing.T) {
	ok, _ := json.Marshal(Result{Status: StatusSucceeded, Result: json.RawMessage(`{"pong":true}`)})
	failed, _ := json.Marshal(failure(errors.New("script not allowed")))
	if string(ok) != `{"status":"succeeded","result":{"pong":true}}` ||
		string(failed) != `{"status":"failed","error":"script not allowed"}` {
		t.Fatalf("results encode as %s and %s", ok, failed)
	}
}
