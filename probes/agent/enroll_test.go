package agent

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeEnrollAPI implements POST /api/v1/enroll as docs/mqtt.md states it,
// accepting the token "se_good".
func fakeEnrollAPI(t *testing.T) (*httptest.Server, []byte) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Token      string `json:"token"`
			HardwareID string `json:"hardware_id"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case dec.Decode(&req) != nil || req.HardwareID == "":
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "missing or bad hardware_id", "code": "invalid"})
		case req.Token != "se_good":
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "unknown, expired, revoked or used-up token", "code": "unauthorized"})
		default:
			id := "d-" + req.HardwareID
			json.NewEncoder(w).Encode(map[string]string{
				"device_id": id, "mqtt_username": id, "mqtt_password": "sd_secret",
				"mqtt_address": "probe1.example:8883", "ca_pem": "",
				"path": "/devices/" + id, "tenant": "acme", "group": "pumps",
				"topic_prefix": "strata/" + id + "/", "cert_pem": "",
			})
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, ca
}

func TestEnrollSavesCredentials(t *testing.T) {
	srv, ca := fakeEnrollAPI(t)
	creds, err := Enroll(context.Background(), EnrollRequest{API: srv.URL + "/", Token: "se_good", HardwareID: "hw1", CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	if creds.DeviceID != "d-hw1" || creds.MQTTPassword != "sd_secret" || creds.Prefix() != "strata/d-hw1/" || creds.Group != "pumps" {
		t.Fatalf("credentials %+v", creds)
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := SaveCredentials(dir, creds); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, credentialsFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v", err, st.Mode())
	}
	back, err := LoadCredentials(dir)
	if err != nil || *back != *creds {
		t.Fatalf("reloaded %+v, %v", back, err)
	}
	if _, err := LoadCredentials(t.TempDir()); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("empty state dir: %v", err)
	}
}

func TestEnrollErrors(t *testing.T) {
	srv, ca := fakeEnrollAPI(t)
	_, err := Enroll(context.Background(), EnrollRequest{API: srv.URL, Token: "se_bad", HardwareID: "hw1", CAPEM: ca})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "unauthorized" {
		t.Fatalf("bad token: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "401") || !strings.Contains(msg, "used-up token") {
		t.Fatalf("error message %q does not say what the node said", msg)
	}
	// The node's certificate is not trusted without --ca.
	if _, err := Enroll(context.Background(), EnrollRequest{API: srv.URL, Token: "se_good", HardwareID: "hw1"}); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted node accepted: %v", err)
	}
	for _, req := range []EnrollRequest{
		{API: strings.Replace(srv.URL, "https", "http", 1), Token: "se_good", HardwareID: "hw1"},
		{API: srv.URL, HardwareID: "hw1", CAPEM: ca},
		{API: srv.URL, Token: "se_good", CAPEM: ca},
		{API: srv.URL, Token: "se_good", HardwareID: "hw1", CAPEM: []byte("not pem")},
	} {
		if _, err := Enroll(context.Background(), req); err == nil {
			t.Errorf("Enroll(%+v) succeeded", req)
		}
	}
}

func TestHardwareIDFallbacks(t *testing.T) {
	dir := t.TempDir()
	mid := filepath.Join(dir, "machine-id")
	os.WriteFile(mid, []byte("abc123\n"), 0o600)
	noIfs := func() ([]net.Interface, error) { return nil, errors.New("none") }
	if id, _ := hardwareID(mid, noIfs); id != "abc123" {
		t.Fatalf("machine-id: %q", id)
	}
	mac, _ := net.ParseMAC("b8:27:eb:12:34:56")
	ifs := func() ([]net.Interface, error) {
		return []net.Interface{
			{Index: 1, Name: "lo", Flags: net.FlagLoopback, HardwareAddr: make(net.HardwareAddr, 6)},
			{Index: 3, Name: "eth1", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}},
			{Index: 2, Name: "eth0", HardwareAddr: mac},
		}, nil
	}
	if id, _ := hardwareID(filepath.Join(dir, "missing"), ifs); id != "b8:27:eb:12:34:56" {
		t.Fatalf("MAC fallback: %q", id)
	}
	host, _ := os.Hostname()
	if id, _ := hardwareID(filepath.Join(dir, "missing"), noIfs); id != host {
		t.Fatalf("hostname fallback: %q, want %q", id, host)
	}
}
