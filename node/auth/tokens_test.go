package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

func TestTokenFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := NewTokenSecret()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != tokenStringLen || strings.Count(s, "_") != 2 || !strings.HasPrefix(s, "st_") {
			t.Fatalf("bad token shape %q", s)
		}
		id, err := parseToken(s)
		if err != nil {
			t.Fatalf("parseToken(%q): %v", s, err)
		}
		if id != s[3:29] || !validTokenID(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	good, _ := NewTokenSecret()
	bad := []string{
		"",
		"st_",
		good[:len(good)-1],
		good + "a",
		"xt" + good[2:],
		strings.ToUpper(good),
		good[:29] + "-" + good[30:],
		good[:10] + "_" + good[11:],             // underscore inside the id
		good[:40] + "1" + good[41:],             // '1' is not base32
		good[:28] + "\n" + good[29:],            // decoder would skip newlines
		good[:28] + "7" + good[29:],             // non-zero trailing bits in the id
		good[:len(good)-1] + "7",                // non-zero trailing bits in the secret
		"st_" + good[3:29] + "a_" + good[30:81], // total length right, split wrong
	}
	for _, s := range bad {
		if _, err := parseToken(s); err == nil {
			t.Errorf("parseToken(%q) accepted", s)
		}
	}
}

func TestBootstrap(t *testing.T) {
	e := newEnv(t)
	p := e.admin
	if p.User != "admin" || !p.System || p.Tenant != "" || len(p.Grants) != 1 || p.Grants[0] != (Grant{RoleAdmin, "/"}) {
		t.Fatalf("admin principal = %+v", p)
	}
	id, _ := parseToken(e.adminToken)
	if p.TokenID != id {
		t.Fatalf("TokenID = %q, want %q", p.TokenID, id)
	}
	toks, err := e.svc.ListTokens(e.ctx, p, "")
	if err != nil || len(toks) != 1 || toks[0].Name != "admin" || !toks[0].Expires.IsZero() {
		t.Fatalf("ListTokens = %+v, %v", toks, err)
	}
	// The admin token never expires.
	e.clock.Advance(20 * 365 * 24 * time.Hour)
	e.auth(e.adminToken)

	// Idempotent: users exist, nothing changes, another token is not stored.
	other, _ := NewTokenSecret()
	created, err := e.svc.Bootstrap(e.ctx, other)
	if err != nil || created {
		t.Fatalf("second Bootstrap = %v, %v", created, err)
	}
	if _, err := e.svc.Authenticate(e.ctx, other); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("second bootstrap token works: %v", err)
	}
	e.auth(e.adminToken)
	if n := e.rec.count(KindUser); n != 1 {
		t.Fatalf("%d users", n)
	}

	// A fresh service over the same records also does nothing.
	svc2, err := New(testConfig(t, e.rec, e.clock))
	if err != nil {
		t.Fatal(err)
	}
	if created, err := svc2.Bootstrap(e.ctx, other); err != nil || created {
		t.Fatalf("Bootstrap on existing records = %v, %v", created, err)
	}

	// Malformed tokens are refused before anything is written.
	fresh, err := New(testConfig(t, newMemRecords(), e.clock))
	if err != nil {
		t.Fatal(err)
	}
	_, err = fresh.Bootstrap(e.ctx, "st_not-a-token")
	wantErr(t, err, model.ErrInvalid)

	// The bootstrap admin has no password: it cannot log in with one.
	_, _, _, err = e.svc.Login(e.ctx, "admin", "", "10.0.0.1:1", 0)
	wantErr(t, err, ErrUnauthorized)
}

func TestCreateTokenTTL(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, _ := e.as("alice")
	now := e.clock.Now()

	_, tok, err := e.svc.CreateToken(e.ctx, alice, "", "ci", 0)
	if err != nil || tok.User != "alice" || tok.Name != "ci" || !tok.Expires.Equal(now.Add(DefaultTokenTTL)) || !tok.Created.Equal(now) {
		t.Fatalf("CreateToken default ttl = %+v, %v", tok, err)
	}
	_, tok, err = e.svc.CreateToken(e.ctx, alice, "alice", "short", time.Hour)
	if err != nil || !tok.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("CreateToken 1h = %+v, %v", tok, err)
	}
	if _, _, err := e.svc.CreateToken(e.ctx, alice, "", "x", MaxTokenTTL); err != nil {
		t.Fatalf("max ttl refused: %v", err)
	}
	for _, ttl := range []time.Duration{-time.Second, MaxTokenTTL + time.Second} {
		_, _, err := e.svc.CreateToken(e.ctx, alice, "", "x", ttl)
		wantErr(t, err, model.ErrInvalid)
	}
	for _, name := range []string{"", strings.Repeat("n", 65), "a\nb", "\xff"} {
		_, _, err := e.svc.CreateToken(e.ctx, alice, "", name, 0)
		wantErr(t, err, model.ErrInvalid)
	}
	_, _, err = e.svc.CreateToken(e.ctx, nil, "", "x", 0)
	wantErr(t, err, ErrUnauthorized)
}

func TestTokenExpiry(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, _ := e.as("alice")
	secret, tok, err := e.svc.CreateToken(e.ctx, alice, "", "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.auth(secret) // now cached
	e.clock.Advance(time.Hour - time.Nanosecond)
	e.auth(secret)
	e.clock.Advance(time.Nanosecond)
	_, err = e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
	if !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v, want expired", err)
	}
	// Also when not cached.
	e.svc.InvalidateRecord(KindToken, tok.ID)
	_, err = e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
}

func TestRevokeIsImmediate(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, secret := e.as("alice")
	e.auth(secret) // cached
	if err := e.svc.RevokeToken(e.ctx, alice, alice.TokenID); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
	if err := e.svc.RevokeToken(e.ctx, e.admin, alice.TokenID); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	toks, err := e.svc.ListTokens(e.ctx, e.admin, "alice")
	if err != nil || len(toks) != 1 || !toks[0].Revoked {
		t.Fatalf("ListTokens = %+v, %v", toks, err)
	}
	err = e.svc.RevokeToken(e.ctx, e.admin, "nope")
	wantErr(t, err, model.ErrNotFound)
}

// TestRevokeRace authenticates in a loop while revoking: once RevokeToken
// has returned, no Authenticate may succeed, whatever was in flight.
func TestRevokeRace(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	for range 20 {
		alice, secret := e.as("alice")
		done := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-done:
						// After revocation completed: must fail.
						if _, err := e.svc.Authenticate(e.ctx, secret); err == nil {
							errs <- errors.New("revoked token authenticated")
						}
						return
					default:
						_, _ = e.svc.Authenticate(e.ctx, secret)
					}
				}
			})
		}
		if err := e.svc.RevokeToken(e.ctx, e.admin, alice.TokenID); err != nil {
			t.Fatal(err)
		}
		close(done)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}

func TestUserChangesApplyToTokens(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	_, secret := e.as("alice")

	// Grants change at once.
	grants := []Grant{{RoleOperator, "/devices"}}
	if _, err := e.svc.UpdateUser(e.ctx, e.admin, "alice", UserUpdate{Grants: &grants}); err != nil {
		t.Fatal(err)
	}
	if p := e.auth(secret); len(p.Grants) != 1 || p.Grants[0] != grants[0] {
		t.Fatalf("grants not updated: %+v", p.Grants)
	}

	// Disabling stops the token; enabling restores it.
	yes, no := true, false
	if _, err := e.svc.UpdateUser(e.ctx, e.admin, "alice", UserUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
	if _, err := e.svc.UpdateUser(e.ctx, e.admin, "alice", UserUpdate{Disabled: &no}); err != nil {
		t.Fatal(err)
	}
	e.auth(secret)

	// The principal is a copy: mutating it changes nothing cached.
	p := e.auth(secret)
	p.Grants[0].Role = RoleAdmin
	p.System = true
	if q := e.auth(secret); q.System || q.Grants[0].Role != RoleOperator {
		t.Fatalf("cache was mutated through a returned principal: %+v", q)
	}
}

func TestDeletedUserTokensStopWorking(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, secret := e.as("alice")
	secret2, _, err := e.svc.CreateToken(e.ctx, alice, "", "second", 0)
	if err != nil {
		t.Fatal(err)
	}
	e.auth(secret2)
	saved := e.rec.raw(KindToken, alice.TokenID)

	if err := e.svc.DeleteUser(e.ctx, e.admin, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, secret2} {
		_, err := e.svc.Authenticate(e.ctx, s)
		wantErr(t, err, ErrUnauthorized)
	}
	if n := e.rec.count(KindToken); n != 1 { // only the admin's
		t.Fatalf("%d token records left", n)
	}
	_, err = e.svc.ListTokens(e.ctx, e.admin, "alice")
	wantErr(t, err, model.ErrNotFound)

	// A token record that outlived its user (say a crash between the
	// deletes) does not authenticate a new user of the same name.
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "globex"})
	if err := e.rec.PutRecord(e.ctx, KindToken, alice.TokenID, saved); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)
	toks, err := e.svc.ListTokens(e.ctx, e.admin, "alice")
	if err != nil || len(toks) != 0 {
		t.Fatalf("new alice lists old tokens: %+v, %v", toks, err)
	}
	n, err := e.svc.Prune(e.ctx, 0)
	if err != nil || n != 1 || e.rec.count(KindToken) != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
}

func TestAuthenticateCache(t *testing.T) {
	e := newEnv(t)
	e.auth(e.adminToken)
	before := e.rec.reads.Load()
	for range 10 {
		e.auth(e.adminToken)
	}
	if n := e.rec.reads.Load() - before; n != 0 {
		t.Fatalf("cached Authenticate read %d records", n)
	}
	// A wrong secret for a cached id fails without the records.
	id, _ := parseToken(e.adminToken)
	other, _ := NewTokenSecret()
	forged := "st_" + id + other[29:]
	if _, err := parseToken(forged); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Authenticate(e.ctx, forged)
	wantErr(t, err, ErrUnauthorized)
	for _, s := range []string{"", "Bearer x", e.adminToken + " "} {
		_, err := e.svc.Authenticate(e.ctx, s)
		wantErr(t, err, ErrUnauthorized)
	}
}

// TestCacheTTL covers changes made behind the Service's back, as another
// cluster replica would: they apply within CacheTTL, or at once after
// InvalidateRecord.
func TestCacheTTL(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, secret := e.as("alice")

	revokeBehindBack := func() {
		var tr tokenRecord
		if err := json.Unmarshal(e.rec.raw(KindToken, alice.TokenID), &tr); err != nil {
			t.Fatal(err)
		}
		tr.Revoked = true
		b, _ := json.Marshal(tr)
		if err := e.rec.PutRecord(e.ctx, KindToken, tr.ID, b); err != nil {
			t.Fatal(err)
		}
	}
	revokeBehindBack()
	e.auth(secret) // still cached
	e.clock.Advance(DefaultCacheTTL)
	_, err := e.svc.Authenticate(e.ctx, secret)
	wantErr(t, err, ErrUnauthorized)

	_, secret2 := e.as("alice")
	e.auth(secret2)
	b := e.rec.raw(KindUser, "alice")
	var ur userRecord
	_ = json.Unmarshal(b, &ur)
	ur.Disabled = true
	b, _ = json.Marshal(ur)
	_ = e.rec.PutRecord(e.ctx, KindUser, "alice", b)
	e.auth(secret2)
	e.svc.InvalidateRecord(KindUser, "alice")
	_, err = e.svc.Authenticate(e.ctx, secret2)
	wantErr(t, err, ErrUnauthorized)
}

func TestPrune(t *testing.T) {
	e := newEnv(t)
	e.user(e.admin, UserSpec{Name: "alice", Tenant: "acme"})
	alice, _ := e.as("alice")
	_, short, _ := e.svc.CreateToken(e.ctx, alice, "", "short", time.Hour)
	keep, _, _ := e.svc.CreateToken(e.ctx, alice, "", "keep", 48*time.Hour)
	if err := e.svc.RevokeToken(e.ctx, alice, alice.TokenID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	if n, err := e.svc.Prune(e.ctx, 24*time.Hour); err != nil || n != 0 {
		t.Fatalf("Prune within retention = %d, %v", n, err)
	}
	e.clock.Advance(24 * time.Hour)
	if n, err := e.svc.Prune(e.ctx, 24*time.Hour); err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	if _, err := e.rec.Record(KindToken, short.ID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("expired token kept: %v", err)
	}
	e.auth(keep)
	e.auth(e.adminToken)
}

func TestTokenJSON(t *testing.T) {
	e := newEnv(t)
	secret, tok, err := e.svc.CreateToken(e.ctx, e.admin, "", "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tok)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"id", "user", "name", "created", "expires", "revoked"} {
		if _, ok := m[k]; !ok {
			t.Errorf("token JSON lacks %q: %s", k, b)
		}
	}
	if len(m) != 6 {
		t.Errorf("token JSON has extra fields: %s", b)
	}
	// The stored record holds the hash, never the secret.
	raw := string(e.rec.raw(KindToken, tok.ID))
	if strings.Contains(raw, secret) || strings.Contains(raw, secret[30:]) || !strings.Contains(raw, tokenHash(secret)) {
		t.Fatalf("stored token record: %s", raw)
	}
}
