// Package downloadtest serves artifacts as a node's device route does,
// with the faults download tests need: a cut in the middle, 503s, a
// tampered copy, answers before the artifact is fetched.
package downloadtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Server serves Served (Data, unless tampered with) as artifact SHA256
// at /api/v1/device/artifacts/<sha256>, to device "d-1" with secret
// "s3cret" (or the devices SetSecrets names). Set its fields before the
// first request.
type Server struct {
	Data, Served []byte
	SHA256       string
	// Cut > 0 cuts the first answer after Cut bytes; the first Fail
	// requests are answered 503; the first NotReady ones 503 with
	// Retry-After: 1 (an artifact the node is still fetching).
	Cut, Fail, NotReady int

	mu      sync.Mutex
	ranges  []string
	secrets map[string]string
}

// New returns a server of size random bytes.
func New(size int) *Server {
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	return &Server{Data: data, Served: data, SHA256: hex.EncodeToString(sum[:])}
}

// Start serves a over TLS (httptest's certificate) until the test ends.
func Start(t testing.TB, a *Server) *httptest.Server {
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	return srv
}

// SetSecrets lets these devices in (id → secret) instead of d-1.
func (a *Server) SetSecrets(secrets map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.secrets = secrets
}

// SetServed serves b from now on (a tampered copy, say).
func (a *Server) SetServed(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Served = b
}

// Ranges are the Range headers of the requests so far, in order.
func (a *Server) Ranges() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ranges...)
}

func (a *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.ranges = append(a.ranges, r.Header.Get("Range"))
	n := len(a.ranges)
	secrets, served := a.secrets, a.Served
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
	if r.URL.Path != "/api/v1/device/artifacts/"+a.SHA256 {
		http.NotFound(w, r)
		return
	}
	if n <= a.Fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if n <= a.NotReady {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"not fetched yet","code":"unavailable"}`))
		return
	}
	if n == 1 && a.Cut > 0 {
		w = &cutWriter{ResponseWriter: w, cut: a.Cut}
	}
	w.Header().Set("ETag", `"`+a.SHA256+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(served))
}

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
