package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
)

// The real strata-agent: enrolled by a token from `strata token create`,
// its inventory and telemetry visible over the API, a command round trip,
// and telemetry produced while the node is down delivered after it is back.
func TestAgentEndToEnd(t *testing.T) {
	n := initDeviceNode(t, "probe1")
	n.start()
	admin := n.admin()
	state := t.TempDir()
	startAgent(t, n, state, "--log-level", "debug")
	var path string
	tstest.WaitForErr(t, e2eTimeout, "the agent enrolled", func() (bool, error) {
		ds, err := admin.ListDevices(context.Background())
		if err != nil || len(ds) != 1 {
			return false, err
		}
		path = ds[0].Path
		return true, nil
	})
	tstest.WaitForErr(t, e2eTimeout, "inventory and telemetry", func() (bool, error) {
		c, err := admin.GetContext(context.Background(), path)
		if err != nil {
			return false, err
		}
		_, host := c.Variables["hostname"]
		_, load := c.Variables["load1"]
		return host && load && len(c.Functions) >= 5, nil
	})
	job, status, err := admin.CallFunction(context.Background(), path, "ping", nil, 20*time.Second)
	if err != nil || status != http.StatusOK || job.State != "succeeded" {
		t.Fatalf("ping: %d %+v %v", status, job, err)
	}
	var pong struct{ Pong bool }
	if json.Unmarshal(job.Result, &pong); !pong.Pong {
		t.Fatalf("ping result %s", job.Result)
	}
	job, status, err = admin.CallFunction(context.Background(), path, "reboot", nil, 20*time.Second)
	if err != nil || status != http.StatusOK || job.State != "failed" {
		t.Fatalf("reboot without --allow-reboot: %d %+v %v", status, job, err)
	}

	// The node goes away; the agent keeps producing telemetry into its
	// queue (each point appended and fsynced).
	n.kill()
	down := time.Now().UTC()
	queue := filepath.Join(state, "queue.log")
	changes, last := 0, int64(-1)
	tstest.WaitForErr(t, e2eTimeout, "three points queued while the node is down", func() (bool, error) {
		fi, err := os.Stat(queue)
		if err != nil {
			return false, nil
		}
		// Only growth is a new point: the queue also shrinks when an
		// acknowledgement sent just before the kill arrives late.
		if last >= 0 && fi.Size() > last {
			changes++
		}
		last = fi.Size()
		return changes >= 3, nil
	})
	up := time.Now().UTC()
	n.start()
	admin = n.admin()
	// Every point produced while the node was down arrives: count the
	// telemetry changes of the device stamped within the outage.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := admin.Changes(ctx, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	offline := 0
	for offline < 3 {
		c, err := s.Next()
		if err != nil {
			t.Fatalf("change stream: %v (saw %d points from the outage)", err, offline)
		}
		if v, ok := c.Variables["uptime_s"]; ok && v.Time.After(down) && v.Time.Before(up) {
			offline++
		}
	}
}

// startAgent runs a real strata-agent enrolled on n with a fresh token,
// keeping its state in state; it is stopped (SIGTERM) at the end of the
// test, and its output shown if the test failed.
func startAgent(t *testing.T, n *nodeDir, state string, extra ...string) {
	t.Helper()
	startAgentWith(t, n, state, agentRun{}, extra...)
}

// agentRun is how startAgentWith runs an agent.
type agentRun struct {
	api   string   // the URL it enrolls and downloads through (default n's API)
	group string   // its enrollment token's group (default "lab")
	env   []string // its whole environment (nil: the test's)
}

// startAgentWith is startAgent run as o says.
func startAgentWith(t *testing.T, n *nodeDir, state string, o agentRun, extra ...string) {
	t.Helper()
	if o.api == "" {
		o.api = "https://" + n.addr
	}
	if o.group == "" {
		o.group = "lab"
	}
	tok := n.enrollToken(o.group)
	// Several agents on one machine (and node) each enroll as a device
	// of their own.
	hw := "agent-" + o.group + "-" + filepath.Base(filepath.Dir(state)) + "-" + filepath.Base(state)
	args := append([]string{"run", "--state", state, "--api", o.api, "--token", tok, "--hardware-id", hw,
		"--ca", filepath.Join(n.dir, "tls", "ca.crt"), "--telemetry-interval", "1s"}, extra...)
	cmd := exec.Command(agentBin, args...)
	cmd.Env = o.env
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent on %s output:\n%s", n.dir, out.String())
		}
	})
}

// startSims runs strata-sim with count devices enrolled on n (group
// "sims", hardware ids sim-<prefix>-N) that answer commands, until the
// end of the test; extra are more flags.
func startSims(t *testing.T, n *nodeDir, count int, prefix string, extra ...string) {
	t.Helper()
	args := append([]string{"--api", "https://" + n.addr, "--enroll-token", n.enrollToken("sims"), "--devices", strconv.Itoa(count),
		"--ca", filepath.Join(n.dir, "tls", "ca.crt"), "--answer-commands", "--duration", "0", "--id-prefix", prefix}, extra...)
	sims := exec.Command(simBin, args...)
	var out syncBuffer
	sims.Stdout, sims.Stderr = &out, &out
	if err := sims.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sims.Process.Signal(syscall.SIGTERM)
		sims.Wait()
		if t.Failed() {
			t.Logf("strata-sim on %s:\n%s", n.dir, out.String())
		}
	})
}
