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

var devCreds = Credentials{Enrollment: apitypes.Enrollment{DeviceID: "d-1", MQTTUsername: "d-1", MQTTPassword: "s3cret"}}

func TestDownloadResumesAfterCut(t *testing.T) {
	a, srv := newArtifactServer(t, 1<<20)
	a.cut = 300_000
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond}
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.sum, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a.data) || res.Size != int64(len(a.data)) || res.Received != res.Size ||
		res.Requests != 2 || res.Resumes != 1 {
		t.Fatalf("result %+v, %d bytes", res, out.Len())
	}
	if a.ranges[0] != "" || a.ranges[1] != "bytes="+strconv.Itoa(a.cut)+"-" {
		t.Fatalf("ranges asked %q", a.ranges)
	}
}

func TestDownloadInterruptAt(t *testing.T) {
	a, srv := newArtifactServer(t, 100_000)
	a.fail = 1 // a 503 first: tried again
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond, InterruptAt: 40_000}
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.sum, &out)
	if err != nil {
		t.Fatal(err)
	}
	// The 503, the answer cut at 40,000, the rest.
	if !bytes.Equal(out.Bytes(), a.data) || res.Requests != 3 || res.Resumes != 1 || a.ranges[2] != "bytes=40000-" {
		t.Fatalf("after a 503: %+v, ranges %q", res, a.ranges)
	}

	a2, srv2 := newArtifactServer(t, 100_000)
	d = Downloader{API: srv2.URL, Client: srv2.Client(), Backoff: time.Millisecond, InterruptAt: 40_000}
	out.Reset()
	if res, err = d.Download(context.Background(), devCreds, a2.sum, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a2.data) || res.Requests != 2 || res.Resumes != 1 || a2.ranges[1] != "bytes=40000-" {
		t.Fatalf("interrupted: %+v, ranges %q", res, a2.ranges)
	}
}

func TestDownloadRefusals(t *testing.T) {
	a, srv := newArtifactServer(t, 10_000)
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond}
	bad := devCreds
	bad.MQTTPassword = "wrong"
	res, err := d.Download(context.Background(), bad, a.sum, new(bytes.Buffer))
	var de *DownloadError
	if !errors.As(err, &de) || de.Status != http.StatusUnauthorized || de.Code != "unauthorized" || res.Requests != 1 {
		t.Fatalf("wrong secret: %v, %+v", err, res)
	}
	if _, err := d.Download(context.Background(), devCreds, "NOTASUM", new(bytes.Buffer)); err == nil {
		t.Fatal("a malformed sha256 was asked for")
	}

	// A copy whose bytes are not the artifact's is refused.
	tampered := bytes.Clone(a.data)
	tampered[5000] ^= 1
	a.served = tampered
	if _, err := d.Download(context.Background(), devCreds, a.sum, new(bytes.Buffer)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("tampered copy: %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for s, want := range map[string][2]int64{
		"bytes 0-9/10":    {0, 10},
		"bytes 5-9/10":    {5, 10},
		"bytes 5-10/10":   {-1},
		"bytes 9-5/10":    {-1},
		"bytes */10":      {-1},
		"bytes 0-9/*":     {-1},
		"items 0-9/10":    {-1},
		"bytes -1-9/10":   {-1},
		"bytes 0-9/10/11": {-1},
		"":                {-1},
	} {
		start, total, ok := parseContentRange(s)
		if ok != (want[0] >= 0) || ok && (start != want[0] || total != want[1]) {
			t.Errorf("%q: %d %d %v", s, start, total, ok)
		}
	}
}

// FuzzParseContentRange: the parser of the node's Content-Range never
// panics and accepts only ranges inside their total.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/10", "bytes */10", "bytes 1-0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || start >= total) {
			t.Fatalf("%q: start %d total %d", s, start, total)
		}
	})
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
