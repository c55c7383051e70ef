package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// memRecords is an in-memory Records with the model's semantics: values are
// copied in and out, iteration is in key order, deletes of missing records
// succeed.
type memRecords struct {
	mu    sync.Mutex
	m     map[string]map[string][]byte
	reads atomic.Int64 // Record calls, to observe the token cache
}

var _ Records = (*memRecords)(nil)

func newMemRecords() *memRecords { return &memRecords{m: map[string]map[string][]byte{}} }

func (r *memRecords) Record(kind, key string) ([]byte, error) {
	r.reads.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[kind][key]
	if !ok {
		return nil, fmt.Errorf("record %s/%s: %w", kind, key, model.ErrNotFound)
	}
	return slices.Clone(v), nil
}

func (r *memRecords) Records(kind string, fn func(key string, value []byte) error) error {
	r.mu.Lock()
	keys := make([]string, 0, len(r.m[kind]))
	vals := map[string][]byte{}
	for k, v := range r.m[kind] {
		keys = append(keys, k)
		vals[k] = slices.Clone(v)
	}
	r.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k, vals[k]); err != nil {
			return err
		}
	}
	return nil
}

func (r *memRecords) PutRecord(ctx context.Context, kind, key string, value []byte) error {
	if kind == "" || key == "" {
		return errors.New("empty kind or key")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[kind] == nil {
		r.m[kind] = map[string][]byte{}
	}
	r.m[kind][key] = slices.Clone(value)
	return nil
}

func (r *memRecords) DeleteRecord(ctx context.Context, kind, key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m[kind], key)
	return nil
}

func (r *memRecords) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m[kind])
}

func (r *memRecords) raw(kind, key string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.m[kind][key])
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a bootstrapped Service with a fake clock and a system admin.
type env struct {
	t          testing.TB
	ctx        context.Context
	svc        *Service
	rec        *memRecords
	clock      *fakeClock
	adminToken string
	admin      *Principal
}

const testFailures = 3

func testConfig(t testing.TB, rec Records, clock *fakeClock) Config {
	return Config{
		Records:           rec,
		Logger:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:               clock.Now,
		LoginFailures:     testFailures,
		LoginWindow:       time.Minute,
		SessionTTL:        12 * time.Hour,
		PasswordMemoryKiB: 16, // tiny: tests hash a lot
	}
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), rec: newMemRecords(), clock: newFakeClock()}
	svc, err := New(testConfig(t, e.rec, e.clock))
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.adminToken, err = NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	created, err := svc.Bootstrap(e.ctx, e.adminToken)
	if err != nil || !created {
		t.Fatalf("Bootstrap = %v, %v", created, err)
	}
	e.admin = e.auth(e.adminToken)
	return e
}

func (e *env) auth(secret string) *Principal {
	e.t.Helper()
	p, err := e.svc.Authenticate(e.ctx, secret)
	if err != nil {
		e.t.Fatalf("Authenticate: %v", err)
	}
	return p
}

// user creates a user as by and fails the test on error.
func (e *env) user(by *Principal, spec UserSpec) User {
	e.t.Helper()
	if spec.Password == "" {
		spec.Password = "password-" + spec.Name
	}
	u, err := e.svc.CreateUser(e.ctx, by, spec)
	if err != nil {
		e.t.Fatalf("CreateUser(%s) by %s: %v", spec.Name, by.User, err)
	}
	return u
}

// as returns a principal for an existing user through a fresh token issued
// by the system admin, and the token's secret.
func (e *env) as(name string) (*Principal, string) {
	e.t.Helper()
	secret, _, err := e.svc.CreateToken(e.ctx, e.admin, name, "test", 0)
	if err != nil {
		e.t.Fatalf("CreateToken(%s): %v", name, err)
	}
	return e.auth(secret), secret
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}
