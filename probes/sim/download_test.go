package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// cutWriter aborts the answer after cut bytes, once they are flushed: a
// connection lost in the middle of a download.
type cutWriter struct {
	http.ResponseWriter
	cut, n int
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if w.n+len(p) <= w.cut {
		w.n += len(p)
		return w.ResponseWriter.Write(p)
	}
	w.ResponseWriter.Write(p[:w.cut-w.n])
	http.NewResponseController(w.ResponseWriter).Flush()
	panic(http.ErrAbortHandler)
}

// artifactServer serves data as the node's device route does, to device
// "d-1" with secret "s3cret". cut > 0 cuts the first answer after cut
// bytes; fail answers the first requests 503. ranges records the Range
// header of each request.
type artifactServer struct {
	data, served []byte // served differs from data for a tampered copy
	sum          string
	cut, fail    int

	mu      sync.Mutex
	ranges  []string
	secrets map[string]string // when set, the devices let in instead of d-1
}

func (a *artifactServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.ranges = append(a.ranges, r.Header.Get("Range"))
	n := len(a.ranges)
	secrets := a.secrets
	a.mu.Unlock()
	if secrets == nil {
		secrets = map[string]string{"d-1": "s3cret"}
	}
	if id, secret, ok := r.BasicAuth(); !ok || secrets[id] == "" || secret != secrets[id] {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"unauthorized: bad device credentials","code":"unauthorized"}`))
		return
	}
	if r.URL.Path != "/api/v1/device/artifacts/"+a.sum {
		http.NotFound(w, r)
		return
	}
	if n <= a.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if n == 1 && a.cut > 0 {
		w = &cutWriter{ResponseWriter: w, cut: a.cut}
	}
	w.Header().Set("ETag", `"`+a.sum+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.served))
}

func newArtifactServer(t *testing.T, size int) (*artifactServer, *httptest.Server) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	a := &artifactServer{data: data, served: data, sum: hex.EncodeToString(sum[:])}
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	return a, srv
}

// TestFleetDownload: a fleet's device downloads with its own credentials
// over the fleet's network (Config.API, Config.CAPEM), resuming after a
// cut; another device's credentials are refused.
func TestFleetDownload(t *testing.T) {
	ca := newCA(t)
	a, _ := newArtifactServer(t, 200_000)
	srv := httptest.NewUnstartedServer(a)
	srv.TLS = ca.serverTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	const n = 3
	creds := make([]Credentials, n)
	secrets := map[string]string{}
	for i := range creds {
		id := "d-" + strconv.Itoa(i)
		creds[i] = Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "sd_" + id}}
		if id == "d-1" {
			creds[i].MQTTPassword = "s3cret"
		}
		secrets[id] = creds[i].MQTTPassword
	}
	b := startBroker(t, brokerOpts{creds: secrets})
	cfg := DefaultConfig()
	cfg.Devices, cfg.Credentials = n, creds
	cfg.MQTTAddr, cfg.Plain, cfg.Idle = b.addr, true, true
	cfg.API, cfg.CAPEM = srv.URL, ca.pem
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	select {
	case <-f.Ready():
	case <-ctx.Done():
		t.Fatal("fleet not ready")
	}

	var out bytes.Buffer
	res, err := f.Download(ctx, 1, a.sum, &out, Downloader{InterruptAt: 70_000, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a.data) || res.Resumes != 1 || res.Received != int64(len(a.data)) {
		t.Fatalf("fleet download: %+v", res)
	}
	var de *DownloadError
	if _, err := f.Download(ctx, 2, a.sum, new(bytes.Buffer), Downloader{}); !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
		t.Fatalf("device 2: %v", err)
	}
	if _, err := f.Download(ctx, n, a.sum, new(bytes.Buffer), Downloader{}); err == nil {
		t.Fatal("a device out of range downloaded")
	}

	// The whole fleet, each device cut once: one device refused.
	rep := f.DownloadAll(ctx, a.sum, 2, Downloader{InterruptAt: 50_000, Backoff: time.Millisecond})
	if rep.Devices != n || rep.OK != 1 || rep.Failed != 2 || rep.Errors["http_401"] != 2 || rep.Resumes != 1 ||
		rep.Bytes != int64(len(a.data)) || rep.Throughput <= 0 {
		t.Fatalf("all, one device let in: %+v", rep)
	}
	a.mu.Lock()
	a.secrets = secrets
	a.mu.Unlock()
	rep = f.DownloadAll(ctx, a.sum, 2, Downloader{InterruptAt: 50_000, Backoff: time.Millisecond})
	if rep.OK != n || rep.Failed != 0 || rep.Resumes != n || rep.Bytes != int64(n*len(a.data)) || rep.Requests != 2*n {
		t.Fatalf("all: %+v", rep)
	}
}
