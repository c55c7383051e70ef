package api

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// How the API bounds what slow or numerous clients can hold (docs/operations.md,
// "Slow and numerous clients"):
//
//   - Connections: at most MaxConns open overall and MaxConnsPerAddr per
//     client IP address; LimitListener closes a connection beyond either at
//     once, before its TLS handshake.
//   - Time: the TLS handshake and the request headers must arrive within
//     ReadHeaderTimeout, a request body within BodyTimeout of its headers
//     (408 beyond, and the connection is closed), and a keep-alive
//     connection may stay idle IdleTimeout.
//   - Unauthenticated work: routes taking a bearer token authenticate it
//     from the headers before reading a byte of the body, so only the
//     public routes (login, enrollment) read a body from an unknown
//     client. At most MaxUnauthenticated of their requests are in flight
//     overall (503 beyond) and MaxUnauthenticatedPerAddr per client
//     address (429 beyond).
//
// Every refusal counts in strata_api_refused_total{reason}.

// Reasons of strata_api_refused_total.
const (
	refusedConns          = "connections"
	refusedConnsPerAddr   = "connections_per_address"
	refusedUnauth         = "unauthenticated"
	refusedUnauthPerAddr  = "unauthenticated_per_address"
	refusedBodyTimeout    = "body_timeout"
	refusedStreams        = "streams"
	refusedStreamsPerUser = "streams_per_user"
)

// slots counts holders of a bounded resource overall and per key (a client
// address, a user). It is safe for concurrent use.
type slots struct {
	max, maxPer int

	mu    sync.Mutex
	total int
	per   map[string]int
}

func newSlots(max, maxPer int) *slots {
	return &slots{max: max, maxPer: maxPer, per: make(map[string]int)}
}

// acquire takes a slot for key. It fails with perKey true when key holds
// maxPer slots already, false when all max are taken.
func (s *slots) acquire(key string) (ok, perKey bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.per[key] >= s.maxPer {
		return false, true
	}
	if s.total >= s.max {
		return false, false
	}
	s.total++
	s.per[key]++
	return true, false
}

// release gives back a slot acquire gave key.
func (s *slots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.per[key]--; s.per[key] <= 0 {
		delete(s.per, key)
	}
}

func (s *slots) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *slots) heldBy(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.per[key]
}

// clientAddr is the IP address of a remote address ("host:port"), the key
// of the per-address limits.
func clientAddr(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// HTTPServer returns the http.Server to run the API with: its handler,
// tlsConf, and the header and idle timeouts of the Config. errorLog (may
// be nil) receives net/http's own errors. Serve it on LimitListener's
// listener.
func (s *Server) HTTPServer(tlsConf *tls.Config, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errorLog,
	}
}

// LimitListener wraps ln so that at most MaxConns connections are open at
// once, and at most MaxConnsPerAddr from one IP address; a connection
// beyond either is closed as soon as it is accepted (and counted).
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, s: s}
}

type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := clientAddr(c.RemoteAddr().String())
		if ok, perAddr := l.s.conns.acquire(addr); !ok {
			c.Close()
			reason := refusedConns
			if perAddr {
				reason = refusedConnsPerAddr
			}
			l.s.metrics.refuse(reason)
			l.s.log.Debug("connection refused", "remote", c.RemoteAddr().String(), "reason", reason)
			continue
		}
		return &limitConn{Conn: c, s: l.s.conns, addr: addr}, nil
	}
}

// limitConn gives its slot back on its first Close.
type limitConn struct {
	net.Conn
	s    *slots
	addr string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.s.release(c.addr) })
	return err
}

// unauthenticated bounds the requests of a public route in flight (see
// the package's limits above) and runs h when a slot is free.
func (s *Server) unauthenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r.RemoteAddr)
		ok, perAddr := s.unauth.acquire(addr)
		if !ok {
			// The body is not read: end the connection after the answer
			// rather than wait for the rest of it.
			http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1") // such requests last milliseconds
			if perAddr {
				s.metrics.refuse(refusedUnauthPerAddr)
				writeError(w, r, apiError(http.StatusTooManyRequests, codeRateLimited,
					"too many unauthenticated requests in flight from %s (limit %d)", addr, s.cfg.MaxUnauthenticatedPerAddr))
				return
			}
			s.metrics.refuse(refusedUnauth)
			writeError(w, r, apiError(http.StatusServiceUnavailable, codeUnavailable,
				"too many unauthenticated requests in flight (limit %d)", s.cfg.MaxUnauthenticated))
			return
		}
		defer s.unauth.release(addr)
		h.ServeHTTP(w, r)
	})
}

// errBodyTimeout is what reading a request body returns once its deadline
// passed; errorStatus answers it 408.
var errBodyTimeout = errors.New("request body not received in time")

// bodyReader is a request body under a read deadline: the whole body by
// BodyTimeout after the headers, or, for a route that opted in with
// minRate, BodyTimeout plus the time minRate needs for what arrived, so a
// large upload at a steady rate is never cut off. On EOF the deadline is
// lifted, so that the rest of the request (a long function call, say) is
// not bound by it.
type bodyReader struct {
	rc        *http.ResponseController
	body      io.ReadCloser
	start     time.Time
	grace     time.Duration
	onTimeout func() // called once, on the first timed-out read

	mu       sync.Mutex
	minRate  int64 // bytes per second; 0: the whole body within grace
	read     int64
	timedOut atomic.Bool
}

func newBodyReader(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration, onTimeout func()) *bodyReader {
	b := &bodyReader{rc: http.NewResponseController(w), body: body, start: time.Now(), grace: timeout, onTimeout: onTimeout}
	b.rc.SetReadDeadline(b.start.Add(timeout))
	return b
}

// setMinRate lets a route take its body at rate bytes per second at least
// instead of within the fixed deadline.
func (b *bodyReader) setMinRate(rate int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.minRate = rate
	b.extend()
}

// extend moves the deadline by what minRate allows for the bytes read.
// b.mu is held.
func (b *bodyReader) extend() {
	if b.minRate > 0 {
		d := b.grace + time.Duration(float64(b.read)/float64(b.minRate)*float64(time.Second))
		b.rc.SetReadDeadline(b.start.Add(d))
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if b.timedOut.CompareAndSwap(false, true) {
				b.onTimeout()
			}
			return n, errBodyTimeout
		}
	case n > 0:
		b.extend()
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.body.Close() }

// bodyOf returns the request's bodyReader, if the middleware set one.
func bodyOf(r *http.Request) *bodyReader {
	b, _ := r.Context().Value(keyBody).(*bodyReader)
	return b
}
