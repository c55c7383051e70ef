package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
)

// tlsAPI is the env's API served as the node serves it: HTTPServer on
// LimitListener, over real TLS on 127.0.0.1.
type tlsAPI struct {
	addr   string
	client *tls.Config
}

func (e *env) serveTLS() *tlsAPI {
	e.t.Helper()
	ca, err := certs.NewCA("test API CA")
	if err != nil {
		e.t.Fatal(err)
	}
	pair, err := ca.IssueServer("api", []string{"127.0.0.1"})
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := pair.TLSCertificate()
	if err != nil {
		e.t.Fatal(err)
	}
	client, err := certs.ClientConfig(ca.CertPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	hs := e.api.HTTPServer(certs.ServerConfigFor(cert), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.ServeTLS(e.api.LimitListener(ln), "", "")
	}()
	e.t.Cleanup(func() {
		hs.Close()
		<-done
	})
	return &tlsAPI{addr: ln.Addr().String(), client: client}
}

// dial opens a TLS connection from the loopback address from (127.0.0.x:
// a distinct client address for the per-address limits).
func (a *tlsAPI) dial(t testing.TB, from string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: tstest.DefaultTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	cfg := a.client.Clone()
	cfg.ServerName = "127.0.0.1"
	cfg.NextProtos = []string{"http/1.1"}
	return tls.DialWithDialer(d, "tcp", a.addr, cfg)
}

// httpClient is a client whose connections come from the address from.
func (a *tlsAPI) httpClient(from string) *http.Client {
	d := &net.Dialer{Timeout: tstest.DefaultTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Timeout: tstest.DefaultTimeout, Transport: &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: a.client.Clone(),
	}}
}

// slowBody is a request whose headers went out and whose body trickles:
// one byte every interval until the connection closes.
type slowBody struct {
	conn *tls.Conn
	done chan struct{}
}

func startSlowBody(t testing.TB, a *tlsAPI, from, path string, interval time.Duration) (*slowBody, error) {
	conn, err := a.dial(t, from)
	if err != nil {
		return nil, err
	}
	hdr := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", path)
	if _, err := io.WriteString(conn, hdr); err != nil {
		conn.Close()
		return nil, err
	}
	sb := &slowBody{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(sb.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for range t.C {
			if _, err := io.WriteString(conn, " "); err != nil {
				return
			}
		}
	}()
	t.Cleanup(sb.close)
	return sb, nil
}

// response reads the answer to the slow request, or fails after the
// test's default deadline.
func (sb *slowBody) response() (*http.Response, []byte, error) {
	sb.conn.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
	rd := bufio.NewReader(sb.conn)
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(res.Body)
	return res, body, err
}

func (sb *slowBody) close() {
	sb.conn.Close()
	<-sb.done
}

// A body that trickles in is cut off at the body deadline: 408, and the
// connection is closed, whatever the route.
func TestSlowBodyCutOff(t *testing.T) {
	e := newServicesEnv(t, nil, func(c *Config, _ *auth.Config, _ *model.Config) { c.BodyTimeout = 300 * time.Millisecond })
	a := e.serveTLS()
	for _, path := range []string{"/api/v1/login", "/api/v1/enroll", "/no/such/route"} {
		sb, err := startSlowBody(t, a, "127.0.0.1", path, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		res, body, err := sb.response()
		if err != nil {
			t.Fatalf("%s: no answer to a trickling body: %v", path, err)
		}
		if path == "/no/such/route" {
			// The handler answered without reading; the server must
			// still not wait for the rest of the body.
			if res.StatusCode != http.StatusNotFound {
				t.Fatalf("%s: %d %s", path, res.StatusCode, body)
			}
		} else if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"code":"request_timeout"`) {
			t.Fatalf("%s: %d %s, want 408 request_timeout", path, res.StatusCode, body)
		}
		// The connection is closed, not kept for the rest of the body.
		sb.conn.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
		if _, err := sb.conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: connection still open after the answer: %v", path, err)
		}
		sb.close()
	}
	if n := e.refused(refusedBodyTimeout); n != "2" {
		t.Fatalf("strata_api_refused_total{reason=body_timeout} = %s, want 2", n)
	}
	// Over HTTP/2 the deadline holds for the stream.
	h2 := a.httpClient("127.0.0.1")
	h2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	pr, pw := io.Pipe()
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for range tk.C {
			if _, err := pw.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	res, err := h2.Post("https://127.0.0.1"+a.addr[strings.LastIndex(a.addr, ":"):]+"/api/v1/login", "application/json", pr)
	pw.CloseWithError(errors.New("test done"))
	<-trickled
	if err != nil {
		t.Fatalf("HTTP/2 trickle: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestTimeout || res.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 trickle: %d over %s", res.StatusCode, res.Proto)
	}

	// A body sent at once is unaffected, over HTTP/1.1 and HTTP/2, and
	// the deadline does not outlive it on a kept-alive connection.
	for _, h2 := range []bool{false, true} {
		hc := a.httpClient("127.0.0.1")
		hc.Transport.(*http.Transport).ForceAttemptHTTP2 = h2
		for range 2 {
			res, err := hc.Post("https://127.0.0.1"+a.addr[strings.LastIndex(a.addr, ":"):]+"/api/v1/login",
				"application/json", strings.NewReader(`{"username":"admin","password":"wrong-password"}`))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusUnauthorized || (res.ProtoMajor == 2) != h2 {
				t.Fatalf("login with a prompt body: %d over %s", res.StatusCode, res.Proto)
			}
		}
	}
}

// Slow unauthenticated clients from one address hold at most their share
// of requests and connections; a client from another address is served
// meanwhile.
func TestSlowClientsBounded(t *testing.T) {
	const perAddr, conns = 3, 5
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) {
		c.BodyTimeout = time.Minute // the slow clients stay for the whole test
		c.MaxUnauthenticatedPerAddr = perAddr
		c.MaxUnauthenticated = 100
		c.MaxConnsPerAddr = conns
	})
	a := e.serveTLS()
	url := "https://127.0.0.1" + a.addr[strings.LastIndex(a.addr, ":"):]

	// perAddr slow logins hold their slots...
	for i := range perAddr {
		if _, err := startSlowBody(t, a, "127.0.0.1", "/api/v1/login", 100*time.Millisecond); err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "the slow logins to be in flight", func() bool { return e.api.unauth.held() == perAddr })
	// ...the next ones from the same address are refused at once.
	for i := perAddr; i < conns; i++ {
		sb, err := startSlowBody(t, a, "127.0.0.1", "/api/v1/login", 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		res, body, err := sb.response()
		if err != nil {
			t.Fatalf("slow client %d beyond the limit: no answer: %v", i, err)
		}
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("slow client %d beyond the limit: %d %s", i, res.StatusCode, body)
		}
	}
	// Connections beyond the per-address bound are closed unanswered.
	var open []*tls.Conn
	for range conns {
		c, err := a.dial(t, "127.0.0.1")
		if err != nil {
			break
		}
		open = append(open, c)
		t.Cleanup(func() { c.Close() })
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "the connection bound", func() bool { return e.api.conns.heldBy("127.0.0.1") <= conns })
	if c, err := a.dial(t, "127.0.0.1"); err == nil {
		c.SetReadDeadline(time.Now().Add(tstest.DefaultTimeout))
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a connection beyond %d from one address was served", conns)
		}
		c.Close()
	}
	if got := e.api.conns.heldBy("127.0.0.1"); got > conns {
		t.Fatalf("%d connections held by one address, bound %d", got, conns)
	}

	// A normal client elsewhere logs in and works.
	hc := a.httpClient("127.0.0.2")
	res, err := hc.Post(url+"/api/v1/login", "application/json",
		strings.NewReader(`{"username":"admin","password":"wrong-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login from another address: %d", res.StatusCode)
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("whoami from another address: %d", res.StatusCode)
	}
	for _, reason := range []string{refusedUnauthPerAddr, refusedConnsPerAddr} {
		if n := e.refused(reason); n == "0" {
			t.Fatalf("strata_api_refused_total{reason=%q} = %s", reason, n)
		}
	}
}

// A route that opted in to a minimum rate takes a body longer than the
// deadline as long as it keeps coming; a stalled one is still cut off.
func TestBodyMinRate(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.BodyTimeout = 200 * time.Millisecond })
	mux := http.NewServeMux()
	mux.Handle("POST /upload", streamingBody(64, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			writeError(w, r, err)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})))
	e.api.handler = e.api.middleware(mux)
	a := e.serveTLS()

	send := func(chunks int, stallAfter int) (*http.Response, []byte) {
		conn, err := a.dial(t, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", chunks*16)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			t := time.NewTicker(50 * time.Millisecond) // 16 bytes per 50 ms: 320 B/s, above 64 B/s
			defer t.Stop()
			for i := 0; i < chunks && i < stallAfter; i++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if _, err := conn.Write([]byte("0123456789abcdef")); err != nil {
					return
				}
			}
		}()
		sb := &slowBody{conn: conn}
		res, body, err := sb.response()
		if err != nil {
			t.Fatal(err)
		}
		return res, body
	}
	// 12 chunks take 600 ms, three times the fixed deadline.
	if res, body := send(12, 12); res.StatusCode != 200 || string(body) != "192" {
		t.Fatalf("steady upload: %d %s", res.StatusCode, body)
	}
	if res, body := send(12, 2); res.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled upload: %d %s", res.StatusCode, body)
	}
}

// refused reads strata_api_refused_total{reason} from /metrics.
func (e *env) refused(reason string) string {
	e.t.Helper()
	m := e.do("GET", "/metrics", "", nil)
	prefix := `strata_api_refused_total{reason="` + reason + `"} `
	for _, line := range strings.Split(string(m.body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	e.t.Fatalf("no %s in /metrics", prefix)
	return ""
}
