package sim

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// enrollServer is a node's enrollment endpoint: it refuses each hardware
// id twice (429 with Retry-After, then 503) before issuing credentials
// for the broker, which then accepts them.
type enrollServer struct {
	srv      *httptest.Server
	caPEM    []byte // the API certificate, for Config.CAPEM
	requests atomic.Int64

	mu    sync.Mutex
	tries map[string]int
}

func newEnrollServer(t *testing.T, b *broker, brokerCA []byte) *enrollServer {
	e := &enrollServer{tries: map[string]int{}}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		fail := func(status int, code, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
		}
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/enroll" {
			fail(404, "not_found", "no such route")
			return
		}
		var req struct {
			Token      string `json:"token"`
			HardwareID string `json:"hardware_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.HardwareID == "" {
			fail(400, "invalid", "bad request")
			return
		}
		if req.Token != "se_good" {
			fail(401, "unauthorized", "unknown enrollment token")
			return
		}
		e.mu.Lock()
		e.tries[req.HardwareID]++
		n := e.tries[req.HardwareID]
		e.mu.Unlock()
		switch n {
		case 1:
			w.Header().Set("Retry-After", "0")
			fail(429, "rate_limited", "slow down")
			return
		case 2:
			fail(503, "unavailable", "not the leader")
			return
		}
		id := "d-" + req.HardwareID
		secret := "sd_secret_" + req.HardwareID
		b.hook.setCred(id, secret)
		json.NewEncoder(w).Encode(map[string]any{
			"device_id": id, "mqtt_username": id, "mqtt_password": secret,
			"mqtt_address": b.addr, "ca_pem": string(brokerCA), "path": "/devices/" + id,
			"tenant": "acme", "group": "pumps", "topic_prefix": "strata/" + id + "/",
			"some_future_field": true,
		})
	}))
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // expected TLS handshake failures
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	e.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw})
	return e
}

func TestEnrollThenReuseCredentials(t *testing.T) {
	ca := newCA(t)
	b := startBroker(t, brokerOpts{tls: ca.serverTLS(t), creds: map[string]string{}})
	e := newEnrollServer(t, b, ca.pem)
	const n = 50
	saved := filepath.Join(t.TempDir(), "creds.jsonl")
	cfg := DefaultConfig()
	cfg.Devices, cfg.API, cfg.EnrollToken, cfg.IDPrefix = n, e.srv.URL, "se_good", "e"
	cfg.CAPEM = e.caPEM // the API's; MQTT trusts each device's ca_pem
	cfg.SaveCredentials = saved
	cfg.Rate, cfg.Duration = 200, 300*time.Millisecond
	r := runFleet(t, cfg)
	if r.Enrolled != n || r.EnrollRetries != 2*n || len(r.EnrollFailures) != 0 {
		t.Fatalf("enrolled %d retries %d failures %v", r.Enrolled, r.EnrollRetries, r.EnrollFailures)
	}
	checkTelemetry(t, b, r, n)

	creds, err := LoadCredentialsFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != n || creds[7].HardwareID != "sim-e-7" || creds[7].DeviceID != "d-sim-e-7" ||
		creds[7].CAPEM != string(ca.pem) || creds[7].CAPEM != creds[8].CAPEM {
		t.Fatalf("saved credentials: %d, %+v", len(creds), creds[7])
	}

	// A second run reuses them: no enrollment request.
	before := e.requests.Load()
	cfg2 := DefaultConfig()
	cfg2.Devices, cfg2.CredentialsFile, cfg2.Duration = n, saved, 100*time.Millisecond
	r2 := runFleet(t, cfg2)
	if r2.Connected != n || r2.Enrolled != 0 || e.requests.Load() != before {
		t.Fatalf("reuse: connected %d enrolled %d requests %d→%d", r2.Connected, r2.Enrolled, before, e.requests.Load())
	}
}

func TestEnrollBadToken(t *testing.T) {
	b := startBroker(t, brokerOpts{creds: map[string]string{}})
	e := newEnrollServer(t, b, nil)
	cfg := DefaultConfig()
	cfg.Devices, cfg.API, cfg.EnrollToken, cfg.CAPEM = 1000, e.srv.URL, "se_bad", e.caPEM
	cfg.EnrollConcurrency = 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if !errors.Is(err, ErrNoDevices) {
		t.Fatalf("err = %v, want ErrNoDevices", err)
	}
	if r.EnrollFailures["401 unauthorized"] == 0 || r.Enrolled != 0 {
		t.Fatalf("report %+v", r)
	}
	// The first 401 stops the phase: a few requests, not 1000.
	if got := e.requests.Load(); got > 20 {
		t.Fatalf("%d enrollment requests after a 401", got)
	}
}

func TestEnrollUntrustedAPI(t *testing.T) {
	b := startBroker(t, brokerOpts{creds: map[string]string{}})
	e := newEnrollServer(t, b, nil)
	cfg := DefaultConfig()
	cfg.Devices, cfg.API, cfg.EnrollToken = 3, e.srv.URL, "se_good"
	cfg.CAPEM = newCA(t).pem // not the API's
	r, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrNoDevices) {
		t.Fatalf("err = %v", err)
	}
	// A certificate problem is not retried.
	if r.EnrollRetries != 0 || r.EnrollFailures["unknown certificate authority"] != 3 {
		t.Fatalf("retries %d failures %v", r.EnrollRetries, r.EnrollFailures)
	}
}
