package download

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/probes/download/downloadtest"
)

// newArtifactServer serves size random bytes over TLS (downloadtest).
func newArtifactServer(t *testing.T, size int) (*downloadtest.Server, *httptest.Server) {
	t.Helper()
	a := downloadtest.New(size)
	return a, downloadtest.Start(t, a)
}

var devCreds = Basic{User: "d-1", Secret: "s3cret"}

func TestDownloadResumesAfterCut(t *testing.T) {
	a, srv := newArtifactServer(t, 1<<20)
	a.Cut = 300_000
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond}
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.SHA256, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a.Data) || res.Size != int64(len(a.Data)) || res.Received != res.Size ||
		res.Requests != 2 || res.Resumes != 1 {
		t.Fatalf("result %+v, %d bytes", res, out.Len())
	}
	if a.Ranges()[0] != "" || a.Ranges()[1] != "bytes="+strconv.Itoa(a.Cut)+"-" {
		t.Fatalf("ranges asked %q", a.Ranges())
	}
}

func TestDownloadInterruptAt(t *testing.T) {
	a, srv := newArtifactServer(t, 100_000)
	a.Fail = 1 // a 503 first: tried again
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond, InterruptAt: 40_000}
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.SHA256, &out)
	if err != nil {
		t.Fatal(err)
	}
	// The 503, the answer cut at 40,000, the rest.
	if !bytes.Equal(out.Bytes(), a.Data) || res.Requests != 3 || res.Resumes != 1 || a.Ranges()[2] != "bytes=40000-" {
		t.Fatalf("after a 503: %+v, ranges %q", res, a.Ranges())
	}

	a2, srv2 := newArtifactServer(t, 100_000)
	d = Downloader{API: srv2.URL, Client: srv2.Client(), Backoff: time.Millisecond, InterruptAt: 40_000}
	out.Reset()
	if res, err = d.Download(context.Background(), devCreds, a2.SHA256, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a2.Data) || res.Requests != 2 || res.Resumes != 1 || a2.Ranges()[1] != "bytes=40000-" {
		t.Fatalf("interrupted: %+v, ranges %q", res, a2.Ranges())
	}
}

func TestDownloadRefusals(t *testing.T) {
	a, srv := newArtifactServer(t, 10_000)
	d := Downloader{API: srv.URL, Client: srv.Client(), Backoff: time.Millisecond}
	bad := devCreds
	bad.Secret = "wrong"
	res, err := d.Download(context.Background(), bad, a.SHA256, new(bytes.Buffer))
	var de *Error
	if !errors.As(err, &de) || de.Status != http.StatusUnauthorized || de.Code != "unauthorized" || res.Requests != 1 {
		t.Fatalf("wrong secret: %v, %+v", err, res)
	}
	if _, err := d.Download(context.Background(), devCreds, "NOTASUM", new(bytes.Buffer)); err == nil {
		t.Fatal("a malformed sha256 was asked for")
	}

	// A copy whose bytes are not the artifact's is refused.
	tampered := bytes.Clone(a.Data)
	tampered[5000] ^= 1
	a.SetServed(tampered)
	_, err = d.Download(context.Background(), devCreds, a.SHA256, new(bytes.Buffer))
	var dge *DigestError
	if !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &dge) || dge.Want != a.SHA256 || dge.Got == a.SHA256 {
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
	if err := os.WriteFile(path, a.Data[:123_456], 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := d.ToFile(context.Background(), devCreds, a.SHA256, int64(len(a.Data)), path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, a.Data) || res.Offset != 123_456 || res.Received != int64(len(a.Data))-123_456 || a.Ranges()[0] != "bytes=123456-" {
		t.Fatalf("resumed file: %+v, ranges %q", res, a.Ranges())
	}
	// Complete already: nothing asked of the node.
	if res, err = d.ToFile(context.Background(), devCreds, a.SHA256, int64(len(a.Data)), path); err != nil || res.Requests != 0 {
		t.Fatalf("complete file: %+v %v", res, err)
	}

	bad := bytes.Clone(a.Data[:1000])
	bad[10] ^= 0xff
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.ToFile(context.Background(), devCreds, a.SHA256, int64(len(a.Data)), path)
	var de *DigestError
	if !errors.As(err, &de) || de.Want != a.SHA256 || !strings.Contains(err.Error(), a.SHA256) {
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
	a.NotReady = 2
	d := Downloader{API: srv.URL, Client: srv.Client(), Attempts: 1}
	start := time.Now()
	var out bytes.Buffer
	res, err := d.Download(context.Background(), devCreds, a.SHA256, &out)
	if err != nil || !bytes.Equal(out.Bytes(), a.Data) || res.Requests != 3 || time.Since(start) < 2*time.Second {
		t.Fatalf("not ready twice: %+v %v after %v", res, err, time.Since(start))
	}

	a2, srv2 := newArtifactServer(t, 10_000)
	a2.NotReady = 5
	d = Downloader{API: srv2.URL, Client: srv2.Client(), Attempts: 1, NotReadyWait: time.Second}
	_, err = d.Download(context.Background(), devCreds, a2.SHA256, new(bytes.Buffer))
	var de *Error
	if !errors.As(err, &de) || de.Status != http.StatusServiceUnavailable || de.RetryAfter != time.Second || len(a2.Ranges()) != 2 {
		t.Fatalf("not ready past the wait: %v, %d requests", err, len(a2.Ranges()))
	}
}
