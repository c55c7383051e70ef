package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

const alicePW = "correct horse battery"

func loginEnv(t *testing.T) *env {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Password: alicePW, Tenant: "acme", Grants: []Grant{{RoleOperator, "/devices"}}})
	e.user(e.admin, UserSpec{Name: "bob", Password: "bob-password", Tenant: "acme"})
	return e
}

func TestLoginSuccess(t *testing.T) {
	e := loginEnv(t)
	now := e.clock.Now()
	secret, tok, u, err := e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.7:5555", 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Name != "login" || tok.User != "alice" || !tok.Expires.Equal(now.Add(12*time.Hour)) {
		t.Fatalf("token = %+v", tok)
	}
	if u.Name != "alice" || u.Tenant != "acme" || len(u.Grants) != 1 {
		t.Fatalf("user = %+v", u)
	}
	p := e.auth(secret)
	if p.User != "alice" || p.Tenant != "acme" || p.TokenID != tok.ID || p.System {
		t.Fatalf("principal = %+v", p)
	}

	// ttl: shorter is honoured, longer is cut to SessionTTL, negative is invalid.
	_, tok, _, err = e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.7", time.Hour)
	if err != nil || !tok.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("1h login = %+v, %v", tok, err)
	}
	_, tok, _, err = e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.7", 1000*time.Hour)
	if err != nil || !tok.Expires.Equal(now.Add(12*time.Hour)) {
		t.Fatalf("long login = %+v, %v", tok, err)
	}
	_, _, _, err = e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.7", -time.Hour)
	wantErr(t, err, model.ErrInvalid)

	// Session tokens expire.
	e.clock.Advance(12 * time.Hour)
	_, err = e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
}

func TestLoginFailuresLookAlike(t *testing.T) {
	e := loginEnv(t)
	yes := true
	e.user(e.admin, UserSpec{Name: "carol", Password: "carol-password", Tenant: "acme"})
	if _, err := e.svc.UpdateUser(e.ctx, e.admin, "carol", UserUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	attempts := []struct{ user, pw string }{
		{"alice", "wrong password"},
		{"nobody", alicePW},
		{"carol", "carol-password"}, // disabled, right password
		{"admin", ""},               // no password at all
		{"Alice", alicePW},          // not a valid name
		{"alice", strings.Repeat("x", MaxPasswordLen+1)},
	}
	var msg string
	for i, a := range attempts {
		_, _, _, err := e.svc.Login(e.ctx, a.user, a.pw, "198.51.100.1:1", 0)
		wantErr(t, err, ErrUnauthorized)
		if i == 0 {
			msg = err.Error()
		} else if err.Error() != msg {
			t.Errorf("login %s: %q differs from %q", a.user, err, msg)
		}
		e.clock.Advance(time.Minute) // keep the limiter out of it
	}
}

// TestLoginHashesForMissingUser shows a missing user costs a password hash
// like a present one (comparable timing): with the only hashing slot taken,
// the login waits for it rather than answering at once.
func TestLoginHashesForMissingUser(t *testing.T) {
	e := loginEnv(t)
	cfg := testConfig(t, e.rec, e.clock)
	cfg.PasswordConcurrency = 1
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nobody", "alice", "admin", "BAD NAME"} {
		svc.hasher.sem <- struct{}{}
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Millisecond)
		_, _, _, err := svc.Login(ctx, name, "some password", "10.1.1.1", 0)
		cancel()
		<-svc.hasher.sem
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("login %q did not wait to hash: %v", name, err)
		}
	}
	// Abandoned attempts were not counted.
	if _, _, _, err := svc.Login(e.ctx, "alice", alicePW, "10.1.1.1", 0); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRateLimitPerUser(t *testing.T) {
	e := loginEnv(t)
	for i := range testFailures {
		e.clock.Advance(10 * time.Second)
		_, _, _, err := e.svc.Login(e.ctx, "alice", "wrong password", "192.0.2."+string(rune('1'+i)), 0)
		wantErr(t, err, ErrUnauthorized)
	}
	// Failures at +10s, +20s, +30s: blocked from anywhere, even with the
	// right password, until the first failure leaves the window at +70s.
	_, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "203.0.113.9", 0)
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v, want RateLimitError", err)
	}
	if rl.RetryAfter != 40*time.Second {
		t.Fatalf("RetryAfter = %v, want 40s", rl.RetryAfter)
	}
	if !strings.Contains(err.Error(), "40s") {
		t.Fatalf("message %q", err)
	}
	e.clock.Advance(39 * time.Second)
	_, _, _, err = e.svc.Login(e.ctx, "alice", alicePW, "203.0.113.9", 0)
	if !errors.As(err, &rl) || rl.RetryAfter != time.Second {
		t.Fatalf("err = %v, want retry in 1s", err)
	}
	// Refused attempts are not failures: they do not extend the block.
	e.clock.Advance(time.Second)
	if _, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "203.0.113.9", 0); err != nil {
		t.Fatalf("login after window: %v", err)
	}
	// Other users were never affected.
	if _, _, _, err := e.svc.Login(e.ctx, "bob", "bob-password", "203.0.113.10", 0); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRateLimitUnknownUser(t *testing.T) {
	e := loginEnv(t)
	for i := range testFailures + 2 {
		_, _, _, err := e.svc.Login(e.ctx, "nobody", "x", "192.0.2."+string(rune('1'+i)), 0)
		if i < testFailures {
			wantErr(t, err, ErrUnauthorized)
		} else {
			wantErr(t, err, ErrRateLimited) // same as for an existing user
		}
	}
}

func TestLoginRateLimitPerAddress(t *testing.T) {
	e := loginEnv(t)
	for _, name := range []string{"u1", "u2", "u3"} {
		_, _, _, err := e.svc.Login(e.ctx, name, "guess-guess", "192.0.2.1:1000", 0)
		wantErr(t, err, ErrUnauthorized)
	}
	// Same IP, other port, valid account: blocked without a password check.
	_, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.1:2000", 0)
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter != time.Minute {
		t.Fatalf("err = %v, want RateLimitError of 1m", err)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.2:2000", 0); err != nil {
		t.Fatalf("other address: %v", err)
	}
}

func TestLoginSuccessResetsUserNotAddress(t *testing.T) {
	e := loginEnv(t)
	ip := "192.0.2.50:1"
	// Two failures for alice from two addresses, then a success: alice's
	// count starts over.
	for _, a := range []string{"192.0.2.1", "192.0.2.2"} {
		_, _, _, err := e.svc.Login(e.ctx, "alice", "nope-nope", a, 0)
		wantErr(t, err, ErrUnauthorized)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.3", 0); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.4", "192.0.2.5"} {
		_, _, _, err := e.svc.Login(e.ctx, "alice", "nope-nope", a, 0)
		wantErr(t, err, ErrUnauthorized)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "alice", alicePW, "192.0.2.6", 0); err != nil {
		t.Fatalf("user limiter not reset by success: %v", err)
	}

	// The address: two failures, a success, then one more failure blocks.
	for _, u := range []string{"x1", "x2"} {
		_, _, _, err := e.svc.Login(e.ctx, u, "nope-nope", ip, 0)
		wantErr(t, err, ErrUnauthorized)
	}
	if _, _, _, err := e.svc.Login(e.ctx, "bob", "bob-password", ip, 0); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := e.svc.Login(e.ctx, "x3", "nope-nope", ip, 0)
	wantErr(t, err, ErrUnauthorized)
	_, _, _, err = e.svc.Login(e.ctx, "bob", "bob-password", ip, 0)
	wantErr(t, err, ErrRateLimited)
}

// TestLoginConcurrentGuesses: parallel guesses cannot overrun the limit,
// since an attempt counts from the moment it is admitted.
func TestLoginConcurrentGuesses(t *testing.T) {
	e := loginEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := range 20 {
		wg.Go(func() {
			_, _, _, err := e.svc.Login(e.ctx, "alice", "guess-guess", "10.9.0."+string(rune('a'+i)), 0)
			k := "other"
			switch {
			case errors.Is(err, ErrRateLimited):
				k = "limited"
			case errors.Is(err, ErrUnauthorized):
				k = "unauthorized"
			}
			mu.Lock()
			counts[k]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if counts["unauthorized"] != testFailures || counts["limited"] != 20-testFailures {
		t.Fatalf("outcomes = %v", counts)
	}
}

func TestLoginRehashesOldParameters(t *testing.T) {
	e := loginEnv(t)
	old := func() passwordHash {
		var ur userRecord
		if err := json.Unmarshal(e.rec.raw(KindUser, "alice"), &ur); err != nil {
			t.Fatal(err)
		}
		h, err := parseHash(ur.PasswordHash)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if m := old().params.memory; m != 16 {
		t.Fatalf("memory = %d", m)
	}
	cfg := testConfig(t, e.rec, e.clock)
	cfg.PasswordMemoryKiB = 32
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := svc.Login(e.ctx, "alice", alicePW, "10.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	if m := old().params.memory; m != 32 {
		t.Fatalf("not rehashed: memory = %d", m)
	}
	// Both services still accept the password.
	for _, s := range []*Service{svc, e.svc} {
		if _, _, _, err := s.Login(e.ctx, "alice", alicePW, "10.0.0.1", 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoginNeverLogsSecrets(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	rec, clock := newMemRecords(), newFakeClock()
	cfg := testConfig(t, rec, clock)
	cfg.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	adminToken, _ := NewTokenSecret()
	ctx := t.Context()
	if _, err := svc.Bootstrap(ctx, adminToken); err != nil {
		t.Fatal(err)
	}
	admin, _ := svc.Authenticate(ctx, adminToken)
	if _, err := svc.CreateUser(ctx, admin, UserSpec{Name: "alice", Password: alicePW, Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, _, _, _ = svc.Login(ctx, "alice", "a-wrong-secret-guess", "10.0.0.1", 0)
	secret, _, _, err := svc.Login(ctx, "alice", alicePW, "10.0.0.2", 0)
	if err != nil {
		t.Fatal(err)
	}
	tokSecret, _, _ := svc.CreateToken(ctx, admin, "alice", "ci", 0)
	newPW := "a brand new password"
	if _, err := svc.UpdateUser(ctx, admin, "alice", UserUpdate{Password: &newPW}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, s := range []string{alicePW, "a-wrong-secret-guess", newPW, secret, secret[30:], adminToken[30:], tokSecret[30:], "argon2id"} {
		if strings.Contains(out, s) {
			t.Errorf("log contains %q", s)
		}
	}
	for _, s := range []string{"component=auth", "login failed", "msg=login", "user created", "user updated", "token created"} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestClientKey(t *testing.T) {
	cases := map[string]string{
		"192.0.2.1:1234":                "192.0.2.1",
		"192.0.2.1":                     "192.0.2.1",
		"[::ffff:192.0.2.1]:80":         "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443":    "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":          "2001:db8:1:2::/64",
		"[fe80::1%eth0]:22":             "fe80::/64",
		"":                              "?",
		"not-an-ip:80":                  "?not-an-ip",
		strings.Repeat("z", 100) + ":1": "?" + strings.Repeat("z", 64),
	}
	for in, want := range cases {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLimiterBoundsKeys(t *testing.T) {
	l := newLoginLimiter(2, time.Minute, 10)
	now := time.Unix(0, 0)
	for i := range 100 {
		if _, ok := l.begin(string(rune('a'+i)), string(rune('A'+i)), now); !ok {
			t.Fatal("refused")
		}
	}
	if len(l.users) > 10 || len(l.addrs) > 10 {
		t.Fatalf("limiter grew to %d/%d keys", len(l.users), len(l.addrs))
	}
	// Expired entries go first.
	now = now.Add(2 * time.Minute)
	l.begin("x", "X", now)
	if len(l.users) != 1 || len(l.addrs) != 1 {
		t.Fatalf("expired keys kept: %d/%d", len(l.users), len(l.addrs))
	}
}
