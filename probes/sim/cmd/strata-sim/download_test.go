package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/probes/sim"
)

// TestCommandLineDownload: --download has every device fetch the artifact
// with its credentials, resuming after the cut --download-interrupt-at
// makes, then the fleet stops (with --duration 0).
func TestCommandLineDownload(t *testing.T) {
	data := make([]byte, 50_000)
	rand.Read(data)
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	creds := []sim.Credentials{
		{Enrollment: apitypes.Enrollment{DeviceID: "d-a", MQTTUsername: "d-a", MQTTPassword: "sa"}},
		{Enrollment: apitypes.Enrollment{DeviceID: "d-b", MQTTUsername: "d-b", MQTTPassword: "sb"}},
	}
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || !(id == "d-a" && secret == "sa" || id == "d-b" && secret == "sb") ||
			r.URL.Path != "/api/v1/device/artifacts/"+sum {
			http.Error(w, `{"error":"no","code":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("ETag", `"`+sum+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer api.Close()
	dir := t.TempDir()
	caFile, credFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "creds.jsonl")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sim.SaveCredentialsFile(credFile, creds); err != nil {
		t.Fatal(err)
	}

	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(allowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	code, out, errs := run(t, "--credentials", credFile, "--mqtt", l.Address(), "--plain", "--devices", "2",
		"--api", api.URL, "--ca", caFile, "--download", sum, "--download-interrupt-at", "20000",
		"--duration", "0", "--report-interval", "0", "--no-raise-nofile")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	if !strings.Contains(out, "download: 2 ok, 0 failed") || !strings.Contains(out, "100000 bytes, 4 requests, 2 resumes") {
		t.Fatalf("output %s", out)
	}

	if code, _, errs := run(t, "--anonymous", "--mqtt", "h:1", "--download", sum); code == 0 || !strings.Contains(errs, "--download") {
		t.Fatalf("--download without credentials: exit %d, %q", code, errs)
	}
}
