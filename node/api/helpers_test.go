package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/store"
)

// env is one API over a real model on a Badger store in t.TempDir and a
// real auth.Service, served by httptest over plain HTTP.
type env struct {
	t     testing.TB
	ctx   context.Context
	store *store.Badger
	model *model.Model
	auth  *auth.Service
	api   *Server
	srv   *httptest.Server
	reg   *prometheus.Registry
	admin string // the bootstrap system admin's token

	devices *devices.Service // nil unless built by newServicesEnv
	jobs    *jobs.Service    // nil unless built by newServicesEnv
}

type envOption func(*Config, *auth.Config, *model.Config)

// newEnv builds an env without device registry and jobs. The log goes to
// t at debug level.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	return buildEnv(t, nil, opts...)
}

// newServicesEnv builds an env whose API has a device registry (with a CA
// that signs CSRs) and jobs over its model; MQTTAddress answers the
// request's host with port 8883. devCfg, if non-nil, adjusts the
// registry's config.
func newServicesEnv(t testing.TB, devCfg func(*devices.Config), opts ...envOption) *env {
	t.Helper()
	if devCfg == nil {
		devCfg = func(*devices.Config) {}
	}
	return buildEnv(t, devCfg, opts...)
}

// buildEnv builds an env, with services when devCfg is non-nil.
func buildEnv(t testing.TB, devCfg func(*devices.Config), opts ...envOption) *env {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{Dir: t.TempDir(), CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, ok := t.(*testing.F); ok {
		// A fuzz target's env outlives the F's logging (F methods may not
		// be called from inside the target).
		log = slog.New(slog.DiscardHandler)
	}
	mc := model.Config{Store: st, Logger: log}
	ac := auth.Config{PasswordMemoryKiB: 16, Logger: log}
	reg := prometheus.NewRegistry()
	cfg := Config{Logger: log, Gatherer: reg, Registerer: reg, Version: "test", KeepAlive: time.Minute, Feed: st}
	for _, o := range opts {
		o(&cfg, &ac, &mc)
	}
	m, err := model.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ac.Records = m
	as, err := auth.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := auth.NewTokenSecret()
	if _, err := as.Bootstrap(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	cfg.Model, cfg.Auth = m, as
	var ds *devices.Service
	var js *jobs.Service
	if devCfg != nil {
		ca, err := certs.NewCA("test devices CA")
		if err != nil {
			t.Fatal(err)
		}
		dc := devices.Config{Tree: m, CA: ca, CAPEM: ca.CertPEM, Logger: log}
		devCfg(&dc)
		if ds, err = devices.New(dc); err != nil {
			t.Fatal(err)
		}
		if js, err = jobs.New(jobs.Config{Records: m, Logger: log}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(js.Close)
		cfg.Devices, cfg.Jobs = ds, js
		cfg.MQTTAddress = func(host string) string { return net.JoinHostPort(host, "8883") }
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		a.Shutdown()
		srv.Close()
	})
	return &env{t: t, ctx: context.Background(), store: st, model: m, auth: as, api: a, srv: srv, reg: reg, admin: admin,
		devices: ds, jobs: js}
}

// tWriter sends log lines to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// resp is an answer read whole.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errCode returns the "code" of an error body.
func (r resp) errCode(t testing.TB) string {
	t.Helper()
	var e apitypes.ErrorBody
	r.json(t, &e)
	if e.Message == "" {
		t.Fatalf("error body without message: %s", r.body)
	}
	return e.Code
}

// do sends a request with a raw escaped path (sent as written) and an
// optional body (a string is sent as is, anything else as JSON).
func (e *env) do(method, rawPath, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	// Opaque keeps the path exactly as written: no cleaning, no
	// re-escaping.
	path, query, _ := strings.Cut(rawPath, "?")
	req.URL.Opaque = "//" + req.URL.Host + path
	req.URL.RawQuery = query
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: data}
}

// want checks an answer's status and, for errors, its JSON code.
func (e *env) want(r resp, status int, code string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" {
		if got := r.errCode(e.t); got != code {
			e.t.Fatalf("code %q, want %q: %s", got, code, r.body)
		}
	}
	if status >= 400 || (status < 300 && status != http.StatusNoContent && len(r.body) > 0) {
		if ct := r.header.Get("Content-Type"); ct != "application/json" && !strings.HasPrefix(ct, "text/") {
			e.t.Fatalf("content type %q", ct)
		}
	}
}

// user creates a user (as the system admin) and returns a token of it.
func (e *env) user(spec auth.UserSpec) string {
	e.t.Helper()
	if spec.Password == "" {
		spec.Password = "password-" + spec.Name
	}
	sys := e.principal(e.admin)
	if _, err := e.auth.CreateUser(e.ctx, sys, spec); err != nil {
		e.t.Fatal(err)
	}
	p := &auth.Principal{User: spec.Name}
	secret, _, err := e.auth.CreateToken(e.ctx, sys, p.User, "test", time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

func (e *env) principal(token string) *auth.Principal {
	e.t.Helper()
	p, err := e.auth.Authenticate(e.ctx, token)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// tenants creates the usual cast:
//
//	acme:   alice (operator /), vera (viewer /devices), ada (admin /)
//	globex: bob (operator /), gina (admin /)
type cast struct{ alice, vera, ada, bob, gina string }

// and the shared folders (tenant "") /devices and /sites, as a system
// administrator sets them up: tenant users create only under a parent
// they see.
func (e *env) tenants() cast {
	e.t.Helper()
	e.sharedFolders("/devices", "/sites")
	op := []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}
	adm := []auth.Grant{{Role: auth.RoleAdmin, Subtree: "/"}}
	return cast{
		alice: e.user(auth.UserSpec{Name: "alice", Tenant: "acme", Grants: op}),
		vera:  e.user(auth.UserSpec{Name: "vera", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/devices"}}}),
		ada:   e.user(auth.UserSpec{Name: "ada", Tenant: "acme", Grants: adm}),
		bob:   e.user(auth.UserSpec{Name: "bob", Tenant: "globex", Grants: op}),
		gina:  e.user(auth.UserSpec{Name: "gina", Tenant: "globex", Grants: adm}),
	}
}

// sharedFolders creates folders of no tenant (as the system admin) where
// missing.
func (e *env) sharedFolders(paths ...string) {
	e.t.Helper()
	for _, p := range paths {
		path, err := model.ParsePath(p)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpPut, Path: path, Type: model.FolderType}); err != nil {
			e.t.Fatal(err)
		}
	}
}
