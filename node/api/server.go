// Package api is a node's operator HTTP API (docs/api.md): contexts, the
// tree, events, the live change stream, users, tokens, devices and their
// enrollment, jobs (function calls) and operations endpoints. It provides
// an http.Handler; the node owns the listener and wraps it in TLS.
//
// Invariants the package keeps (and its tests try to break):
//
//   - Every /api/v1 route except login, device enrollment and the OpenAPI
//     document requires a bearer token that auth.Service accepts; every
//     error is JSON {"error","code"} with the status errorStatus gives it.
//   - Tenant isolation: a context whose tenant the caller does not see is
//     answered exactly like a missing one (same status, same message), for
//     reads, writes, deletes, events and function calls, and as a parent
//     (creating under it answers as under a missing parent; a context
//     whose only children are invisible deletes as one without children);
//     tree listings and change streams leave such contexts out. Devices, enrollment tokens
//     and jobs the caller may not see answer exactly like missing ones,
//     and listings leave them out. Only system users set a context's
//     tenant; nobody else changes a shared folder (tenant ""), nor calls
//     functions of a device of no tenant.
//   - The checks the API makes before a write give clear answers; the
//     guarantee comes from the state machine: a non-system user's
//     mutations carry its tenant as Mutation.Actor, and the model refuses
//     them at apply time if the context or an ancestor belongs to another
//     tenant. No race turns a create into a takeover of a context another
//     tenant created meanwhile.
//   - Every authenticated request on a state-changing route is recorded
//     in the audit trail with its outcome, refusals included (audit.go;
//     a test holds that no such route lacks an operation).
//   - Context paths are taken from the escaped URL path segment by segment
//     and must be canonical: "..", ".", empty segments and encoded slashes
//     are 400 invalid, never cleaned, redirected or reinterpreted.
//
// Lifecycle: New returns a ready Server holding no goroutines; each open
// change stream is served on its request's goroutine and ends on
// Shutdown, on token revocation or when the client goes. A function call
// waiting for its job likewise stops waiting (and answers 202) on
// Shutdown.
package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/releases"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes              = 1 << 20
	DefaultKeepAlive                 = 15 * time.Second
	DefaultMaxStreams                = 1000
	DefaultMaxStreamsPerUser         = 32
	DefaultBodyTimeout               = 30 * time.Second
	DefaultReadHeaderTimeout         = 10 * time.Second
	DefaultIdleTimeout               = 2 * time.Minute
	DefaultMaxConns                  = 4096
	DefaultMaxConnsPerAddr           = 256
	DefaultMaxUnauthenticated        = 1024
	DefaultMaxUnauthenticatedPerAddr = 64
)

// Config is what New needs. Zero fields take the defaults above.
type Config struct {
	Model *model.Model  // required
	Auth  *auth.Service // required
	// Logger receives one debug line per request and an error line per
	// 5xx answer; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies (413 beyond).
	MaxBodyBytes int64
	// Gatherer is served at /metrics; nil serves an empty private registry.
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own metrics; nil registers none.
	Registerer prometheus.Registerer
	// Ready reports readiness for /readyz; nil means always ready.
	Ready func() error
	// Version is the node's build version (strata_build_info).
	Version string
	// KeepAlive is the interval of change-stream keepalive comments and
	// token rechecks.
	KeepAlive time.Duration
	// MaxStreams bounds concurrent change streams (503 beyond), and
	// MaxStreamsPerUser those of one user (429 beyond).
	MaxStreams        int
	MaxStreamsPerUser int

	// Limits on slow and numerous clients (see limits.go). BodyTimeout is
	// how long a request body may take to arrive after its headers (408
	// beyond); ReadHeaderTimeout bounds the TLS handshake and the headers,
	// IdleTimeout an idle keep-alive connection (both used by HTTPServer).
	BodyTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// MaxConns and MaxConnsPerAddr bound open connections overall and per
	// client IP address (LimitListener closes those beyond).
	MaxConns        int
	MaxConnsPerAddr int
	// MaxUnauthenticated and MaxUnauthenticatedPerAddr bound requests in
	// flight on the routes that take no token (login, enrollment), overall
	// (503 beyond) and per client IP address (429 beyond).
	MaxUnauthenticated        int
	MaxUnauthenticatedPerAddr int

	Devices *devices.Service // nil: device endpoints answer 501 not_implemented
	Jobs    *jobs.Service    // nil: function calls answer 501
	Bulk    *bulk.Service    // nil: bulk jobs answer 501
	Alerts  *alerts.Service  // nil: alert endpoints answer 501
	// Releases keeps software releases and their artifacts; nil: the
	// release endpoints answer 501.
	Releases *releases.Service
	// Software stages releases to the nodes below and reports their
	// caches; nil: those routes answer 501.
	Software Software
	// MQTTAddress returns the HOST:PORT given to enrolling devices; host is
	// the request's Host without port. nil or "" : mqtt_address is "".
	MQTTAddress func(host string) string
	// Search answers GET /api/v1/search; nil: 501 not_implemented.
	Search Searcher
	// Feed answers GET /api/v1/events (the event feed of a subtree); nil:
	// 501 not_implemented.
	Feed EventFeed
	// History answers GET /api/v1/history/{path} on this node's
	// contexts; nil: 501 not_implemented (mounted paths are read below).
	History History
	// Federation routes calls and live reads on mounted paths and serves
	// the peer endpoints; nil: they answer 501. ReloadFederation re-reads
	// the upstreams from the node's configuration and applies them.
	Federation       Federation
	ReloadFederation func(context.Context) ([]federation.Upstream, error)
	// Cluster serves GET /api/v1/cluster and names this replica's role on
	// /readyz; nil (a node that is not a cluster): 501.
	Cluster Cluster
	// Backups takes the backups POST /api/v1/backup streams; nil: 501.
	Backups Backups
	// Audit receives a record of every state-changing request and lists
	// the trail (GET /api/v1/audit); nil: a trail of its own over Model.
	Audit *audit.Log
	// Console answers GET and HEAD on every path the API does not serve,
	// except /api and /api/... (which stay JSON 404s): the operator web
	// console (package node/console). nil: those paths answer JSON 404.
	Console http.Handler
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxStreamsPerUser == 0 {
		c.MaxStreamsPerUser = DefaultMaxStreamsPerUser
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if c.MaxUnauthenticated == 0 {
		c.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if c.MaxUnauthenticatedPerAddr == 0 {
		c.MaxUnauthenticatedPerAddr = DefaultMaxUnauthenticatedPerAddr
	}
}

// Validate checks c as New would use it: zero fields count as their
// defaults.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Model == nil:
		return errors.New("api: Model is required")
	case c.Auth == nil:
		return errors.New("api: Auth is required")
	case c.MaxBodyBytes < 0:
		return errors.New("api: MaxBodyBytes must not be negative")
	case c.KeepAlive < 0:
		return errors.New("api: KeepAlive must not be negative")
	case c.MaxStreams < 0:
		return errors.New("api: MaxStreams must not be negative")
	case c.MaxStreamsPerUser < 0:
		return errors.New("api: MaxStreamsPerUser must not be negative")
	case c.BodyTimeout < 0, c.ReadHeaderTimeout < 0, c.IdleTimeout < 0:
		return errors.New("api: BodyTimeout, ReadHeaderTimeout and IdleTimeout must not be negative")
	case c.MaxConns < 0, c.MaxConnsPerAddr < 0, c.MaxUnauthenticated < 0, c.MaxUnauthenticatedPerAddr < 0:
		return errors.New("api: connection and request limits must not be negative")
	}
	return nil
}

// Server is the operator API of one node. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	model   *model.Model
	auth    *auth.Service
	audit   *audit.Log
	metrics *metrics
	handler http.Handler
	routes  []route

	streams *slots // open change streams, per user
	conns   *slots // open connections (LimitListener), per client address
	unauth  *slots // public-route requests in flight, per client address

	// quit is cancelled by Shutdown; change streams end when it is.
	quit     context.Context
	shutdown context.CancelFunc

	idPrefix string
	idSeq    atomic.Uint64
}

// New returns a Server serving cfg.Model and cfg.Auth. It registers its
// metrics on cfg.Registerer and fails if they are already registered there.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "api"),
		model:    cfg.Model,
		auth:     cfg.Auth,
		audit:    cfg.Audit,
		idPrefix: hex.EncodeToString(rnd[:]) + "-",
		streams:  newSlots(cfg.MaxStreams, cfg.MaxStreamsPerUser),
		conns:    newSlots(cfg.MaxConns, cfg.MaxConnsPerAddr),
		unauth:   newSlots(cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerAddr),
	}
	var err error
	if s.audit == nil {
		if s.audit, err = audit.New(audit.Config{Records: cfg.Model, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	if s.metrics, err = newMetrics(cfg.Registerer, cfg.Version, s.streams.held, s.conns.held, s.unauth.held); err != nil {
		return nil, err
	}
	s.quit, s.shutdown = context.WithCancel(context.Background())
	s.routes = s.routeTable()
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var paths []string
	for _, rt := range s.routes {
		mux.Handle(rt.pattern, rt.handler)
		method, p, _ := strings.Cut(rt.pattern, " ")
		if _, ok := allowed[p]; !ok {
			paths = append(paths, p)
		}
		allowed[p] = append(allowed[p], method)
	}
	// JSON answers for a known path with another method, and for unknown
	// paths, instead of ServeMux's plain text.
	for _, p := range paths {
		methods := allowed[p]
		if slices.Contains(methods, http.MethodGet) && !slices.Contains(methods, http.MethodHead) {
			methods = append(methods, http.MethodHead)
		}
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, r, apiError(http.StatusMethodNotAllowed, codeMethodNotAllowed, "method %s not allowed; allowed: %s", r.Method, allow))
		})
	}
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, apiError(http.StatusNotFound, codeNotFound, "no such endpoint %s", r.URL.EscapedPath()))
	}
	if cfg.Console != nil {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if p := r.URL.Path; p == "/api" || strings.HasPrefix(p, "/api/") {
				notFound(w, r)
				return
			}
			cfg.Console.ServeHTTP(w, r)
		})
	} else {
		mux.HandleFunc("/", notFound)
	}
	// Without this, ServeMux would redirect the bare prefix to "prefix/"
	// (the root context); the API never redirects. The bare events prefix
	// is a route of its own (the feed, feed.go).
	mux.HandleFunc(contextsPrefix, notFound)
	mux.HandleFunc(historyPrefix, notFound)
	s.handler = s.middleware(mux)
	return s, nil
}

// Handler is the API's http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Shutdown ends open change streams and function-call waits at once and
// refuses new streams, so that http.Server.Shutdown can finish. Other
// requests are unaffected. Calling it more than once is safe.
func (s *Server) Shutdown() {
	s.shutdown()
}

// route is one ServeMux pattern, its handler and the path under which the
// OpenAPI document describes it.
type route struct {
	pattern string // "METHOD /path"
	doc     string // OpenAPI path
	handler http.Handler
}

func (s *Server) routeTable() []route {
	const (
		contexts = "/api/v1/contexts/{path...}"
		events   = "/api/v1/events/{path...}"
		history  = "/api/v1/history/{path...}"
		release  = "/api/v1/releases/{name}/{version}"
		artifact = release + "/artifacts/{sha256}"
		// devArtifact is a device's download, with its own credentials.
		devArtifact = "/api/v1/device/artifacts/{sha256}"
	)
	return []route{
		{"GET /healthz", "/healthz", http.HandlerFunc(s.healthz)},
		{"GET /readyz", "/readyz", http.HandlerFunc(s.readyz)},
		{"GET /metrics", "/metrics", s.metricsHandler()},
		{"GET /api/v1/openapi.json", "/api/v1/openapi.json", http.HandlerFunc(serveOpenAPI)},
		{"POST /api/v1/login", "/api/v1/login", s.public(s.login)},
		{"GET /api/v1/whoami", "/api/v1/whoami", s.authed(s.whoami)},
		{"GET /api/v1/tree", "/api/v1/tree", s.authed(s.tree)},
		{"GET /api/v1/search", "/api/v1/search", s.authed(s.search)},
		{"GET " + contexts, "/api/v1/contexts/{path}", s.authed(s.getContext)},
		{"PUT " + contexts, "/api/v1/contexts/{path}", s.authed(s.putContext)},
		{"DELETE " + contexts, "/api/v1/contexts/{path}", s.authed(s.deleteContext)},
		{"POST " + contexts, "/api/v1/contexts/{path}/functions/{name}", s.authed(s.callFunction)},
		{"GET /api/v1/events", "/api/v1/events", s.authed(s.feed)},
		{"GET " + events, "/api/v1/events/{path}", s.authed(s.getEvents)},
		{"POST " + events, "/api/v1/events/{path}", s.authed(s.postEvent)},
		{"GET " + history, "/api/v1/history/{path}", s.authed(s.getHistory)},
		{"GET /api/v1/changes", "/api/v1/changes", s.authed(s.changes)},
		{"GET /api/v1/users", "/api/v1/users", s.authed(s.listUsers)},
		{"POST /api/v1/users", "/api/v1/users", s.authed(s.createUser)},
		{"GET /api/v1/users/{name}", "/api/v1/users/{name}", s.authed(s.getUser)},
		{"PATCH /api/v1/users/{name}", "/api/v1/users/{name}", s.authed(s.updateUser)},
		{"DELETE /api/v1/users/{name}", "/api/v1/users/{name}", s.authed(s.deleteUser)},
		{"GET /api/v1/tokens", "/api/v1/tokens", s.authed(s.listTokens)},
		{"POST /api/v1/tokens", "/api/v1/tokens", s.authed(s.createToken)},
		{"DELETE /api/v1/tokens/{id}", "/api/v1/tokens/{id}", s.authed(s.revokeToken)},
		{"POST /api/v1/enroll", "/api/v1/enroll", s.public(s.enroll)},
		{"GET /api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", s.authed(s.listEnrollTokens)},
		{"POST /api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", s.authed(s.createEnrollToken)},
		{"DELETE /api/v1/enrollment-tokens/{id}", "/api/v1/enrollment-tokens/{id}", s.authed(s.revokeEnrollToken)},
		{"GET /api/v1/devices", "/api/v1/devices", s.authed(s.listDevices)},
		{"GET /api/v1/devices/{id}", "/api/v1/devices/{id}", s.authed(s.getDevice)},
		{"POST /api/v1/devices/{id}/revoke", "/api/v1/devices/{id}/revoke", s.authed(s.revokeDevice)},
		{"POST /api/v1/devices/{id}/allow-enroll", "/api/v1/devices/{id}/allow-enroll", s.authed(s.allowDeviceEnroll)},
		{"GET /api/v1/jobs", "/api/v1/jobs", s.authed(s.listJobs)},
		{"POST /api/v1/jobs", "/api/v1/jobs", s.authed(s.createBulkJob)},
		{"GET /api/v1/jobs/{id}", "/api/v1/jobs/{id}", s.authed(s.getJob)},
		{"POST /api/v1/jobs/{id}/cancel", "/api/v1/jobs/{id}/cancel", s.authed(s.cancelJob)},
		{"GET /api/v1/jobs/{id}/failures", "/api/v1/jobs/{id}/failures", s.authed(s.bulkFailures)},
		{"POST /api/v1/jobs/{id}/pause", "/api/v1/jobs/{id}/pause", s.authed(s.pauseBulkJob)},
		{"POST /api/v1/jobs/{id}/resume", "/api/v1/jobs/{id}/resume", s.authed(s.resumeBulkJob)},
		{"POST /api/v1/jobs/{id}/retry", "/api/v1/jobs/{id}/retry", s.authed(s.retryBulkJob)},
		{"GET /api/v1/alert-rules", "/api/v1/alert-rules", s.authed(s.listAlertRules)},
		{"POST /api/v1/alert-rules", "/api/v1/alert-rules", s.authed(s.createAlertRule)},
		{"GET /api/v1/alert-rules/{id}", "/api/v1/alert-rules/{id}", s.authed(s.getAlertRule)},
		{"DELETE /api/v1/alert-rules/{id}", "/api/v1/alert-rules/{id}", s.authed(s.deleteAlertRule)},
		{"GET /api/v1/alerts", "/api/v1/alerts", s.authed(s.listAlerts)},
		{"POST /api/v1/alerts/{path...}", "/api/v1/alerts/{path}/{action}", s.authed(s.alertAction)},
		{"GET /api/v1/peers", "/api/v1/peers", s.authed(s.listPeers)},
		{"POST /api/v1/peer-tokens", "/api/v1/peer-tokens", s.authed(s.createPeerToken)},
		{"POST /api/v1/peers/{name}/revoke", "/api/v1/peers/{name}/revoke", s.authed(s.revokePeer)},
		{"POST /api/v1/federation/verify", "/api/v1/federation/verify", s.authed(s.verifyFederation)},
		{"POST /api/v1/federation/reload", "/api/v1/federation/reload", s.authed(s.reloadFederation)},
		{"GET /api/v1/releases", "/api/v1/releases", s.authed(s.listReleases)},
		{"GET " + release, release, s.authed(s.getRelease)},
		{"PUT " + release, release, s.authed(s.putRelease)},
		{"DELETE " + release, release, s.authed(s.deleteRelease)},
		{"GET " + artifact, artifact, s.authed(s.getArtifact)},
		{"HEAD " + artifact, artifact, s.authed(s.headArtifact)},
		{"PUT " + artifact, artifact, streamingBody(uploadMinRate, s.authed(s.uploadArtifact))},
		{"POST " + release + "/stage", release + "/stage", s.authed(s.stageRelease)},
		{"GET /api/v1/software/cache", "/api/v1/software/cache", s.authed(s.softwareCache)},
		{"GET " + devArtifact, devArtifact, http.HandlerFunc(s.deviceArtifact)},
		{"HEAD " + devArtifact, devArtifact, http.HandlerFunc(s.deviceArtifact)},
		{"GET /api/v1/audit", "/api/v1/audit", s.authed(s.listAudit)},
		{"POST /api/v1/backup", "/api/v1/backup", s.authed(s.backup)},
		{"GET /api/v1/cluster", "/api/v1/cluster", s.authed(s.clusterStatus)},
		{"POST /api/v1/cluster/transfer-leader", "/api/v1/cluster/transfer-leader", s.authed(s.transferLeader)},
		{"DELETE /api/v1/cluster/members/{id}", "/api/v1/cluster/members/{id}", s.authed(s.removeReplica)},
	}
}

// recorder remembers what a handler answered, for logs and metrics.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
	err    error  // the error answered, if any
	user   string // the authenticated caller, if any
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// write deadlines of change streams).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyToken
	keyBody
)

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(keyRequestID).(string)
	return id
}

// middleware gives each request an id, refuses non-canonical URL paths
// before ServeMux could clean and redirect them, and records the outcome.
func (s *Server) middleware(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := s.idPrefix + strconv.FormatUint(s.idSeq.Add(1), 10)
		ctx := context.WithValue(r.Context(), keyRequestID, id)
		if r.Body != nil && r.Body != http.NoBody {
			// Every body, on every route (unknown ones too: net/http
			// reads what a handler left), arrives within BodyTimeout.
			b := newBodyReader(w, r.Body, s.cfg.BodyTimeout, func() { s.metrics.refuse(refusedBodyTimeout) })
			ctx = context.WithValue(ctx, keyBody, b)
			r = r.WithContext(ctx)
			r.Body = b
		} else {
			r = r.WithContext(ctx)
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		rec.Header().Set("X-Request-Id", id)
		if esc := r.URL.EscapedPath(); !canonicalURLPath(esc) {
			writeError(rec, r, invalidf("URL path %q is not canonical (empty, '.' or '..' segments)", esc))
		} else {
			mux.ServeHTTP(rec, r)
		}
		d := time.Since(start)
		route := r.Pattern
		if route == "" {
			route = "none"
		}
		s.metrics.observe(route, rec.status, d)
		level := slog.LevelDebug
		if rec.status >= 500 && r.Context().Err() == nil {
			level = slog.LevelError // not when the client went away first
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.Int("status", rec.status),
			slog.Duration("duration", d),
			slog.String("request_id", id),
		}
		if rec.user != "" {
			attrs = append(attrs, slog.String("user", rec.user))
		}
		if rec.err != nil && rec.status >= 500 {
			attrs = append(attrs, slog.String("err", rec.err.Error()))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// canonicalURLPath reports whether ServeMux would route p as it is: rooted,
// no empty, "." or ".." segments (a trailing slash is allowed). ServeMux
// would answer anything else with a redirect to a cleaned path, which could
// name another context.
func canonicalURLPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np == p
}

// handlerFunc is a handler that answers errors by returning them.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// authedFunc is a handler for an authenticated caller.
type authedFunc func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

// public serves a route that takes no token, within the bound on
// unauthenticated requests in flight.
func (s *Server) public(h handlerFunc) http.Handler {
	return s.unauthenticated(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	}))
}

// streamingBody lets a route that takes large uploads receive its body at
// minRate bytes per second at least, instead of whole within BodyTimeout
// (which stays the grace period for the start).
func streamingBody(minRate int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b := bodyOf(r); b != nil {
			b.setMinRate(minRate)
		}
		h.ServeHTTP(w, r)
	})
}

// authed authenticates the bearer token and runs h for its principal.
func (s *Server) authed(h authedFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			writeError(w, r, fmt.Errorf("%w: missing bearer token", auth.ErrUnauthorized))
			return
		}
		p, err := s.authenticate(r, token) // consistent.go
		if err != nil {
			writeError(w, r, err)
			return
		}
		if rec, ok := w.(*recorder); ok {
			rec.user = p.User
		}
		r = r.WithContext(context.WithValue(r.Context(), keyToken, token))
		r, ae := s.startAudit(r, p)
		err = h(w, r, p)
		if ae != nil {
			s.finishAudit(r, ae, err)
		}
		if err != nil {
			writeError(w, r, err)
		}
	})
}

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// decodeJSON reads r's body into v strictly: at most MaxBodyBytes, no
// unknown fields, exactly one JSON value.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeStrict(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), v)
}

// decodeStrict decodes exactly one JSON object from rd into v, refusing
// unknown fields. Errors wrap model.ErrInvalid, except a body over the
// limit, which stays an *http.MaxBytesError.
func decodeStrict(rd io.Reader, v any) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, errBodyTimeout) {
			return err
		}
		return invalidf("body: %v", err)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return invalidf("body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("body: %v", err)
	}
	if dec.InputOffset() != int64(len(data)) {
		return invalidf("body: more than one JSON value")
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			writeError(w, r, apiError(http.StatusServiceUnavailable, codeUnavailable, "not ready: %v", err))
			return
		}
	}
	if s.cfg.Cluster != nil {
		w.Header().Set(ClusterRoleHeader, s.cfg.Cluster.Role())
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}
