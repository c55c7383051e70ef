package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/probes/agent"
)

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, "version")
	goos, goarch := agent.Platform()
	if err != nil || !strings.HasPrefix(out, "strata-agent ") || !strings.Contains(out, goos+"/"+goarch) {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestEnrollCommand(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Token, HardwareID string }
		json.NewDecoder(r.Body).Decode(&req)
		if r.URL.Path != "/api/v1/enroll" || req.Token != "se_good" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"token expired","code":"unauthorized"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"device_id": "d-1", "mqtt_username": "d-1",
			"mqtt_password": "sd_x", "mqtt_address": "probe1.example:8883", "tenant": "acme", "group": "pumps"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	state := filepath.Join(dir, "state")

	_, _, err := runCLI(t, "enroll", "--state", state, "--api", srv.URL, "--token", "se_bad", "--ca", ca, "--hardware-id", "hw")
	if err == nil || !strings.Contains(err.Error(), "token expired") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("refused enrollment: %v", err)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("se_good\n"), 0o600)
	out, _, err := runCLI(t, "enroll", "--state", state, "--api", srv.URL, "--token-file", tokenFile, "--ca", ca, "--hardware-id", "hw")
	if err != nil || !strings.Contains(out, "enrolled as device d-1") {
		t.Fatalf("enroll: %q, %v", out, err)
	}
	if c, err := agent.LoadCredentials(state); err != nil || c.MQTTPassword != "sd_x" || c.API != srv.URL {
		t.Fatalf("saved credentials: %+v, %v", c, err)
	}
	// A trusted key that is neither base64 nor a file stops run before it
	// starts.
	if _, _, err := runCLI(t, "run", "--state", state, "--trusted-key", "not-a-key"); err == nil || !strings.Contains(err.Error(), "--trusted-key") {
		t.Fatalf("run with a bad --trusted-key: %v", err)
	}
}

func TestRunRequiresEnrollment(t *testing.T) {
	_, _, err := runCLI(t, "run", "--state", t.TempDir())
	if !errors.Is(err, agent.ErrNotEnrolled) || !strings.Contains(err.Error(), "strata-agent enroll") {
		t.Fatalf("run without credentials: %v", err)
	}
	_, _, err = runCLI(t, "run", "--state", t.TempDir(), "--telemetry-interval", "1ms")
	if err == nil {
		t.Fatal("a 1ms telemetry interval was accepted")
	}
}
