package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/strata-dm/strata/node/client"
)

// mosquittoArgs are the connection flags of mosquitto_pub/_sub for an
// enrolled device.
func mosquittoArgs(t *testing.T, e *client.Enrollment) []string {
	t.Helper()
	host, port, err := net.SplitHostPort(e.MQTTAddress)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(e.CAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-h", host, "-p", port, "--cafile", ca, "-i", e.DeviceID, "-u", e.MQTTUsername, "-P", e.MQTTPassword, "-q", "1"}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; scripts/install-test-deps.sh installs it", name)
		}
		t.Skipf("%s is missing; run scripts/install-test-deps.sh (make test-deps) to enable this test", name)
	}
	return p
}

// mosquitto_pub and mosquitto_sub, devices nobody here wrote: telemetry,
// inventory and a command round trip over TLS.
func TestMosquittoClientsAsDevice(t *testing.T) {
	pub := requireTool(t, "mosquitto_pub")
	sub := requireTool(t, "mosquitto_sub")
	n := initDeviceNode(t, "probe1")
	n.start()
	admin := n.admin()
	e := n.enroll("lab", "mosquitto-1")
	args := mosquittoArgs(t, e)
	run := func(extra ...string) {
		t.Helper()
		out, err := exec.Command(pub, append(append([]string{}, args...), extra...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %v: %v\n%s", extra, err, out)
		}
	}
	run("-t", e.TopicPrefix+"inventory", "-m", `{"hostname": "mosq", "functions": [{"name": "ping"}]}`)
	run("-t", e.TopicPrefix+"telemetry", "-m", `{"x": 42}`)
	if v, err := variable(admin, e.Path, "x"); err != nil || v != "42" {
		t.Fatalf("x = %s, %v", v, err)
	}

	var out bytes.Buffer
	s := exec.Command(sub, append(append([]string{}, args...), "-c", "-t", e.TopicPrefix+"cmd/+", "-C", "1", "-W", "30")...)
	s.Stdout, s.Stderr = &out, &out
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	job, status, err := admin.CallFunction(context.Background(), e.Path, "ping", json.RawMessage(`{"count": 3}`), 0)
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("call: %d %v", status, err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
	}
	var cmd command
	if err := json.Unmarshal(out.Bytes(), &cmd); err != nil || cmd.Job != job.ID || cmd.Function != "ping" || string(cmd.Args) != `{"count":3}` {
		t.Fatalf("mosquitto_sub got %q (%v), want job %s", out.String(), err, job.ID)
	}
	run("-t", e.TopicPrefix+"cmd/"+job.ID+"/result", "-m", `{"status": "succeeded", "result": {"pong": true}}`)
	j, err := admin.GetJob(context.Background(), job.ID)
	if err != nil || j.State != "succeeded" || string(j.Result) != `{"pong":true}` {
		t.Fatalf("job %+v, %v", j, err)
	}
}
