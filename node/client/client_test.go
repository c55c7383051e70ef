package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a minimal stand-in for the node's API.
type fake struct {
	t   *testing.T
	srv *httptest.Server
	ca  []byte

	mu       sync.Mutex
	requests []string // "METHOD escaped-path?query"
	bodies   []string
}

func newFake(t *testing.T, h http.HandlerFunc) *fake {
	f := &fake{t: t}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		line := r.Method + " " + r.URL.EscapedPath()
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		f.requests = append(f.requests, line)
		f.bodies = append(f.bodies, string(body))
		f.mu.Unlock()
		h(w, r)
	}))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	t.Cleanup(f.srv.Close)
	f.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	return f
}

func (f *fake) client(token string) *Client {
	c, err := New(f.srv.URL, token, f.ca)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.CloseIdleConnections)
	return c
}

func (f *fake) last() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return "", ""
	}
	return f.requests[len(f.requests)-1], f.bodies[len(f.bodies)-1]
}

func writeJSON(w http.ResponseWriter, status int, v string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, v)
}

func TestNew(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8443", "127.0.0.1:8443", "https://", "https://h/x?y=1", "::"} {
		if _, err := New(u, "", nil); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
	if _, err := New("https://127.0.0.1:1", "", []byte("junk")); err == nil {
		t.Error("New accepted a CA PEM without certificates")
	}
	c, err := New("https://127.0.0.1:8443/prefix/", "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.url("/api/v1/contexts/a b/ü", nil); got != "https://127.0.0.1:8443/prefix/api/v1/contexts/a%20b/%C3%BC" {
		t.Errorf("url = %s", got)
	}
	if c.WithToken("x").Token() != "x" || c.Token() != "tok" {
		t.Error("WithToken changed the original")
	}
}

func TestRequests(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		switch {
		case r.URL.Path == "/api/v1/login":
			if auth != "" {
				writeJSON(w, 400, `{"error":"login sent a token","code":"invalid"}`)
				return
			}
			writeJSON(w, 200, `{"token":"s3cret","id":"t1","expires":"2030-01-01T00:00:00Z","user":{"name":"root","system":true,"grants":[{"role":"admin","subtree":"/"}]}}`)
		case auth != "Bearer tok":
			writeJSON(w, 401, `{"error":"missing token","code":"unauthorized"}`)
		case r.URL.Path == "/api/v1/whoami":
			writeJSON(w, 200, `{"name":"root","tenant":"","system":true,"token_id":"t1","created":"2026-01-01T00:00:00Z"}`)
		case r.URL.Path == "/api/v1/tree":
			writeJSON(w, 200, `{"path":"/devices","type":"folder","children":[{"name":"p1","path":"/devices/p1","type":"device","tenant":"acme"}],"next":"p1"}`)
		case r.Method == "PUT":
			writeJSON(w, 201, `{"path":"/devices/p1","type":"device","tenant":"acme","labels":{"site":"n"},"variables":{"temp":{"value":21.5,"type":"number","time":"2026-01-01T00:00:00Z"}},"version":7}`)
		case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/api/v1/contexts/"):
			writeJSON(w, 200, `{"path":"/devices/p1","type":"device","version":7}`)
		case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/api/v1/contexts/"):
			writeJSON(w, 409, `{"error":"has children","code":"conflict"}`)
		case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/api/v1/events/"):
			writeJSON(w, 200, `{"events":[{"seq":9,"path":"/devices/p1","level":"alert","payload":{"x":1},"time":"2026-01-01T00:00:00Z"}],"next":9}`)
		case r.Method == "POST" && r.URL.Path == "/api/v1/tokens":
			writeJSON(w, 201, `{"token":"new-secret","id":"t2","user":"root","name":"ci","revoked":false}`)
		case r.Method == "PATCH":
			writeJSON(w, 200, `{"name":"bob","disabled":true}`)
		case r.Method == "DELETE":
			w.WriteHeader(204)
		case r.URL.Path == "/readyz":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(503)
			io.WriteString(w, "not ready\n")
		case r.URL.Path == "/healthz":
			io.WriteString(w, "ok\n")
		default:
			writeJSON(w, 404, `{"error":"no such thing","code":"not_found"}`)
		}
	})
	ctx := context.Background()
	c := f.client("tok")

	s, err := c.Login(ctx, "root", "pw", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if s.Token != "s3cret" || !s.User.System || s.User.Grants[0].Role != "admin" {
		t.Errorf("session = %+v", s)
	}
	if _, body := f.last(); body != `{"username":"root","password":"pw","ttl":"2h0m0s"}` {
		t.Errorf("login body = %s", body)
	}

	u, err := c.Whoami(ctx)
	if err != nil || u.TokenID != "t1" {
		t.Fatalf("whoami = %+v, %v", u, err)
	}
	_, err = c.WithToken("bad").Whoami(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != CodeUnauthorized || ae.Message != "missing token" {
		t.Errorf("bad token: %#v", err)
	}
	if err.Error() != "missing token (unauthorized)" {
		t.Errorf("Error() = %q", err.Error())
	}

	tree, err := c.Tree(ctx, "devices", TreeOptions{Depth: 2, Limit: 10, After: "a"})
	if err != nil || tree.Next != "p1" || tree.Children[0].Tenant != "acme" {
		t.Fatalf("tree = %+v, %v", tree, err)
	}
	if req, _ := f.last(); req != "GET /api/v1/tree?after=a&depth=2&limit=10&path=%2Fdevices" {
		t.Errorf("tree request = %s", req)
	}

	x, created, err := c.PutContext(ctx, "/devices/p1", ContextUpdate{
		Type: "device", Labels: map[string]string{"site": "n", "old": ""},
		Variables: map[string]json.RawMessage{"temp": json.RawMessage(`21.5`)},
	})
	if err != nil || !created || x.Version != 7 || string(x.Variables["temp"].Value) != "21.5" {
		t.Fatalf("put = %+v, %v, %v", x, created, err)
	}
	if _, body := f.last(); body != `{"type":"device","labels":{"old":"","site":"n"},"variables":{"temp":21.5}}` {
		t.Errorf("put body = %s", body)
	}

	// Paths reach the server as written, each segment escaped.
	if _, err := c.GetContext(ctx, "/devices/pump 12/../x"); err != nil {
		t.Fatal(err)
	}
	if req, _ := f.last(); req != "GET /api/v1/contexts/devices/pump%2012/../x" {
		t.Errorf("get request = %s", req)
	}

	if err := c.DeleteContext(ctx, "/devices"); !IsCode(err, CodeConflict) {
		t.Errorf("delete = %v, want conflict", err)
	}

	page, err := c.Events(ctx, "/devices/p1", EventQuery{Limit: 5, Before: 10, Level: "alert", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil || page.Next != 9 || string(page.Events[0].Payload) != `{"x":1}` {
		t.Fatalf("events = %+v, %v", page, err)
	}
	if req, _ := f.last(); req != "GET /api/v1/events/devices/p1?before=10&level=alert&limit=5&since=2026-01-01T00%3A00%3A00Z" {
		t.Errorf("events request = %s", req)
	}

	tok, err := c.CreateToken(ctx, NewToken{Name: "ci", TTL: 720 * time.Hour})
	if err != nil || tok.Secret != "new-secret" || tok.ID != "t2" || tok.Name != "ci" {
		t.Fatalf("token = %+v, %v", tok, err)
	}
	if _, body := f.last(); body != `{"name":"ci","ttl":"720h0m0s"}` {
		t.Errorf("token body = %s", body)
	}

	yes := true
	if _, err := c.UpdateUser(ctx, "bob", UserUpdate{Disabled: &yes, Grants: []Grant{}}); err != nil {
		t.Fatal(err)
	}
	if req, body := f.last(); req != "PATCH /api/v1/users/bob" || body != `{"grants":[],"disabled":true}` {
		t.Errorf("patch = %s %s", req, body)
	}
	if err := c.RevokeToken(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetUser(ctx, "nobody"); !IsCode(err, CodeNotFound) {
		t.Errorf("get user = %v", err)
	}

	if err := c.Health(ctx); err != nil {
		t.Error(err)
	}
	err = c.Ready(ctx)
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != "" || ae.RetryAfter != 3*time.Second || ae.Message != "503 Service Unavailable: not ready" {
		t.Errorf("ready = %#v", err)
	}
}

func TestUntrustedServer(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	c, err := New(f.srv.URL, "", nil) // system roots do not hold the test CA
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err == nil {
		t.Error("trusted a server signed by an unknown CA")
	}
}

// sseServer serves the change stream from a fixed log, at most perConn
// events per connection, recording each connection's cursor.
type sseServer struct {
	mu      sync.Mutex
	log     []string // data of change i+1
	perConn int
	cursors []string // "Last-Event-ID|after" per connection
	resetAt uint64   // cursors below this get a reset to head
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/changes" || r.Header.Get("Accept") != "text/event-stream" {
		writeJSON(w, 400, `{"error":"bad request","code":"invalid"}`)
		return
	}
	s.mu.Lock()
	s.cursors = append(s.cursors, r.Header.Get("Last-Event-ID")+"|"+r.URL.Query().Get("after"))
	s.mu.Unlock()
	var after uint64
	fmt.Sscan(r.Header.Get("Last-Event-ID"), &after)
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	io.WriteString(w, "retry: 1\n: hello\n\n")
	if after > 0 && after < s.resetAt {
		fmt.Fprintf(w, "id: %d\nevent: reset\ndata: {}\n\n", s.resetAt)
		after = s.resetAt
	}
	sent := 0
	for i := after; i < uint64(len(s.log)) && sent < s.perConn; i++ {
		// Mix line endings and split data over lines, as a server may.
		fmt.Fprintf(w, "event: ping\r\ndata: x\r\n\r\nid: %d\revent: change\rdata: %s\r\r", i+1, s.log[i])
		sent++
	}
	w.(http.Flusher).Flush()
}

func TestWatchResumes(t *testing.T) {
	s := &sseServer{perConn: 2}
	for i := 1; i <= 5; i++ {
		s.log = append(s.log, fmt.Sprintf(`{"seq":%d,"op":"put","path":"/d/%d","variables":{"v":{"value":%d,"type":"number"}}}`, i, i, i))
	}
	f := newFake(t, s.ServeHTTP)
	c := f.client("tok")
	var got []Change
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := errors.New("done")
	err := c.Watch(ctx, "/d", 0, func(ch Change) error {
		got = append(got, ch)
		if len(got) == 5 {
			return done
		}
		return nil
	})
	if err != done {
		t.Fatalf("Watch = %v", err)
	}
	for i, ch := range got {
		if ch.Seq != uint64(i+1) || ch.Op != OpPut || ch.Path != fmt.Sprintf("/d/%d", i+1) {
			t.Errorf("change %d = %+v", i, ch)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	want := []string{"|", "2|2", "4|4"}
	if strings.Join(s.cursors, " ") != strings.Join(want, " ") {
		t.Errorf("cursors = %q, want %q", s.cursors, want)
	}
	if req, _ := f.last(); req != "GET /api/v1/changes?after=4&path=%2Fd" {
		t.Errorf("request = %s", req)
	}
}

func TestChangesReset(t *testing.T) {
	s := &sseServer{perConn: 10, resetAt: 3}
	for i := 1; i <= 4; i++ {
		s.log = append(s.log, fmt.Sprintf(`{"seq":%d,"op":3,"path":"/d","event":{"seq":%d,"path":"/d","level":"info","time":"2026-01-01T00:00:00Z"}}`, i, i))
	}
	f := newFake(t, s.ServeHTTP)
	st, err := f.client("tok").Changes(context.Background(), "", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ch, err := st.Next()
	if err != nil || !ch.Reset || ch.Op != OpReset || ch.Seq != 3 || st.LastSeq() != 3 {
		t.Fatalf("first = %+v, %v (last %d)", ch, err, st.LastSeq())
	}
	ch, err = st.Next()
	if err != nil || ch.Seq != 4 || ch.Op != OpEvent || ch.Event == nil || ch.Event.Level != "info" {
		t.Fatalf("second = %+v, %v", ch, err)
	}
	if st.Retry() != time.Millisecond {
		t.Errorf("retry = %v", st.Retry())
	}
	if _, err := st.Next(); err != io.EOF {
		t.Errorf("end = %v, want EOF", err)
	}
}

func TestWatchStopsOnClientError(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 403, `{"error":"not yours","code":"forbidden"}`)
	})
	err := f.client("tok").Watch(context.Background(), "/", 0, func(Change) error { return nil })
	if !IsCode(err, CodeForbidden) {
		t.Errorf("Watch = %v, want forbidden", err)
	}
}

func TestWatchCancel(t *testing.T) {
	block := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: 1\nevent: change\ndata: {\"seq\":1,\"op\":\"put\",\"path\":\"/a\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-block:
		}
	})
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	err := f.client("tok").Watch(ctx, "/", 0, func(Change) error {
		cancel() // ends the stream blocked in the next read
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch = %v, want canceled", err)
	}
}

func TestChangesWrongContentType(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{}`) })
	if _, err := f.client("tok").Changes(context.Background(), "/", 0); err == nil {
		t.Error("accepted a JSON answer as an event stream")
	}
}
