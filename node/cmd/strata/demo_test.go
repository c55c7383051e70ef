package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/probes/sim"
)

func TestDemoFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--devices", "1"}, "--devices 1: want 2..5000"},
		{[]string{"demo", "--devices", "5001"}, "--devices 5001: want 2..5000"},
		{[]string{"demo", "--rate", "-1"}, "--rate must not be negative"},
		{[]string{"demo", "extra"}, "unknown command"},
	} {
		code, _, stderr := runCmd(t, nil, "", tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "--help") {
			t.Errorf("%v: code %d, stderr %q; want usage error %q", tc.args, code, stderr, tc.want)
		}
	}
}

// The demo writes only into an empty or new folder, or one of an earlier
// demo; a folder holding anything else is refused before anything is
// written in it.
func TestDemoRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, nil, "", "demo", "--dir", dir)
	if code != 1 || !strings.Contains(stderr, "neither empty nor a demo folder") || stdout != "" {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout, stderr)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the folder was written to: %v", entries)
	}

	// Part of a demo (one node's folder) is not a demo either.
	part := t.TempDir()
	if err := initDemoNode(filepath.Join(part, "hq"), demoTopology[0]); err != nil {
		t.Fatal(err)
	}
	if again, err := demoHasNodes(part); err == nil {
		t.Fatalf("a folder with hq only: again %v, no error", again)
	}
	for _, s := range demoTopology[1:] {
		if err := initDemoNode(filepath.Join(part, s.name), s); err != nil {
			t.Fatal(err)
		}
	}
	if again, err := demoHasNodes(part); !again || err != nil {
		t.Fatalf("a whole demo: again %v, %v", again, err)
	}
	if again, err := demoHasNodes(filepath.Join(part, "new")); again || err != nil {
		t.Fatalf("a missing folder: again %v, %v", again, err)
	}
}

// Simulated devices look like equipment: readable hardware ids, labels
// for the device list's filters, telemetry with named variables and an
// inventory declaring functions with argument schemas.
func TestDemoDevices(t *testing.T) {
	d := newDemoDevice("probe-a", 7)
	if got := d.hardwareID(); got != "lyon-valve-007" {
		t.Fatalf("hardware id %q", got)
	}
	if l := d.labels(); l["site"] != "lyon" || l["line"] != "line-2" || l["model"] != "valve-v10" || l["kind"] != "valve" {
		t.Fatalf("labels %v", l)
	}
	var tel map[string]float64
	if err := json.Unmarshal(d.appendTelemetry(nil, 3, time.UnixMilli(1700000000000)), &tel); err != nil {
		t.Fatal(err)
	}
	if tel["ts"] != 1700000000000 || tel["position"] < 10 || tel["position"] > 90 || tel["pressure"] < 2.8 || tel["pressure"] > 3.6 || len(tel) != 3 {
		t.Fatalf("telemetry %v", tel)
	}
	var inv struct {
		Hostname  string
		Functions []struct {
			Name string
			Args json.RawMessage
		}
	}
	if err := json.Unmarshal(d.inventory(), &inv); err != nil {
		t.Fatal(err)
	}
	if inv.Hostname != "lyon-valve-007" || len(inv.Functions) != 3 || inv.Functions[2].Name != "set-setpoint" || len(inv.Functions[2].Args) == 0 {
		t.Fatalf("inventory %+v", inv)
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The demo in process (under the race detector in make test), started
// twice on one folder: the second run keeps the nodes and devices and
// enrolls only the devices added. Ending its context stops it cleanly.
func TestDemoInProcessTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	for run, devices := range []int{4, 6} {
		var out, errOut lockedBuffer
		a := &app{stdout: &out, stderr: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.demo(ctx, demoOptions{dir: dir, devices: devices, rate: 10}) }()
		tstest.WaitForErr(t, 2*time.Minute, "the demo's login", func() (bool, error) {
			select {
			case err := <-done:
				t.Fatalf("run %d: demo ended: %v\n%s", run, err, errOut.String())
			default:
			}
			return strings.Contains(out.String(), "Press Ctrl-C"), nil
		})
		if !strings.Contains(out.String(), "console: https://127.0.0.1:") || !strings.Contains(out.String(), "user: admin\npassword: ") {
			t.Fatalf("run %d printed:\n%s", run, out.String())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d: stop: %v\n%s", run, err, errOut.String())
		}
		for _, p := range []string{"probe-a", "probe-b"} {
			creds, err := sim.LoadCredentialsFile(filepath.Join(dir, p, demoCredentialsFile))
			if err != nil || len(creds) != devices/2 {
				t.Fatalf("run %d: %s credentials: %d, %v", run, p, len(creds), err)
			}
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, demoLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "new=1 kept=2") {
		t.Fatalf("the second run did not keep the first run's devices:\n%s", log)
	}
}
