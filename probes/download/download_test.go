package download

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
	notReady     int // the first requests answer 503 with Retry-After: 1

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
	if n <= a.notReady {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"not fetched yet","code":"unavailable"}`))
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

var devCreds = Basic{User: "d-1", Secret: "s3cret"}

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
	bad.Secret = "wrong"
	res, err := d.Download(context.Background(), bad, a.sum, new(bytes.Buffer))
	var de *Error
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
	_, err = d.Download(context.Background(), devCreds, a.sum, new(bytes.Buffer))
	var dge *DigestError
	if !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &dge) || dge.Want != a.sum || dge.Got == a.sum {
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
		start, total, ok := ParseContentRange(s)
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
		start, total, ok := ParseContentRange(s)
		if ok && (start < 0 || start >= total) {
			t.Fatalf("%q: start %d total %d", s, start, total)
		}
	})
}

// TestToFile: a download into a file continues the partial file an
// earlier attempt left, and a partial file whose bytes are not the
// artifact's is refused with the digests named, and removed.
func TestToFile(t *testing.T) {
	a, srv := newArtifactServer(t, 200_000)
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond}
	path := filepath.Join(t.TempDir(), "a.part")
	if err := os.WriteFile(path, a.data[:123_456], 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := d.ToFile(context.Background(), devCreds, a.sum, int64(len(a.data)), path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, a.data) || res.Offset != 123_456 || res.Received != int64(len(a.data))-123_456 || a.ranges[0] != "bytes=123456-" {
		t.Fatalf("resumed file: %+v, ranges %q", res, a.ranges)
	}
	// Complete already: nothing asked of the node.
	if res, err = d.ToFile(context.Background(), devCreds, a.sum, int64(len(a.data)), path); err != nil || res.Requests != 0 {
		t.Fatalf("complete file: %+v %v", res, err)
	}

	bad := bytes.Clone(a.data[:1000])
	bad[10] ^= 0xff
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.ToFile(context.Background(), devCreds, a.sum, int64(len(a.data)), path)
	var de *DigestError
	if !errors.As(err, &de) || de.Want != a.sum || !strings.Contains(err.Error(), a.sum) {
		t.Fatalf("tampered partial file: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the tampered file was kept: %v", err)
	}
}

// TestDownloadWaitsWhenNotReady: 503 answers with Retry-After (a tier
// still fetching the artifact) are waited out without costing attempts,
// up to NotReadyWait.
func TestDownloadWaitsWhenNotReady(t *testing.T) {
	a, srv := newArtifactServer(t, 10_000)
	a.notReady = 2
	d := Downloader{API: srv.URL, Client: srv.Client(), Attempts: 1}
	start := time.Now()
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.sum, &out)
	if err != nil || !bytes.Equal(out.Bytes(), a.data) || res.Requests != 3 || time.Since(start) < 2*time.Second {
		t.Fatalf("not ready twice: %+v %v after %v", res, err, time.Since(start))
	}

	a2, srv2 := newArtifactServer(t, 10_000)
	a2.notReady = 5
	d = Downloader{API: srv2.URL, Client: srv2.Client(), Attempts: 1, NotReadyWait: time.Second}
	_, err = d.Download(context.Background(), devCreds, a2.sum, new(bytes.Buffer))
	var de *Error
	if !errors.As(err, &de) || de.Status != http.StatusServiceUnavailable || de.RetryAfter != time.Second || len(a2.ranges) != 2 {
		t.Fatalf("not ready past the wait: %v, %d requests", err, len(a2.ranges))
	}
}
