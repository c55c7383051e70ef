package auth

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
)

// fixedToken builds a token string from given bytes, for seeds.
func fixedToken(id, secret byte) string {
	return tokenPrefix + b32.EncodeToString(bytes.Repeat([]byte{id}, tokenIDBytes)) + "_" +
		b32.EncodeToString(bytes.Repeat([]byte{secret}, tokenSecBytes))
}

func FuzzParseToken(f *testing.F) {
	good := fixedToken(0x5a, 0xa5)
	for _, s := range []string{
		good, fixedToken(0, 0), fixedToken(0xff, 0xff),
		"", "st_", "st__", "st_a_b", strings.ToUpper(good), good + "\n",
		good[:28] + "7" + good[29:], strings.ReplaceAll(good, "_", "-"),
		"st_" + strings.Repeat("_", tokenStringLen-3),
		"Bearer " + good,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseToken(s)
		if err != nil {
			if id != "" {
				t.Fatal("id returned with an error")
			}
			return
		}
		// Accepted strings are exactly the canonical ones.
		if len(s) != tokenStringLen || !validTokenID(id) || strings.Contains(id, "_") {
			t.Fatalf("accepted %q with id %q", s, id)
		}
		rawID, err1 := b32.DecodeString(id)
		rawSec, err2 := b32.DecodeString(s[len(tokenPrefix)+tokenIDChars+1:])
		if err1 != nil || err2 != nil || len(rawID) != tokenIDBytes || len(rawSec) != tokenSecBytes {
			t.Fatalf("accepted undecodable %q", s)
		}
		if again := tokenPrefix + b32.EncodeToString(rawID) + "_" + b32.EncodeToString(rawSec); again != s {
			t.Fatalf("non-canonical %q accepted (canonical %q)", s, again)
		}
	})
}

// FuzzAuthenticate feeds arbitrary bearer strings to a bootstrapped
// service: only the admin token itself may authenticate, everything else is
// ErrUnauthorized (never another error, never a panic).
func FuzzAuthenticate(f *testing.F) {
	e := newEnv(f)
	tok := e.adminToken
	f.Add(tok)
	f.Add(tok[:len(tok)-1] + "a")
	f.Add(tok[:30] + strings.Repeat("a", tokenSecChars))
	f.Add(fixedToken(1, 2))
	f.Add("")
	f.Add("st_" + tok)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := e.svc.Authenticate(e.ctx, s)
		if s == tok {
			if err != nil || !p.System {
				t.Fatalf("admin token: %v, %+v", err, p)
			}
			return
		}
		if !errors.Is(err, ErrUnauthorized) || p != nil {
			t.Fatalf("Authenticate(%q) = %+v, %v", s, p, err)
		}
	})
}

func FuzzParseHash(f *testing.F) {
	h := passwordHash{params: argonParams{memory: 65536, time: 1, threads: 2}, salt: make([]byte, 16), key: make([]byte, 32)}
	f.Add(h.String())
	f.Add("$argon2id$v=19$m=16,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=016,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=4294967295,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2i$v=19$m=16,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=16,t=1,p=2$$")
	f.Add("$argon2id$v=19$m=17,t=1,p=1$00000000000$0000000000000000000000\r0") // newline skipped by the decoder
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHash(s)
		if err != nil {
			return
		}
		if h.String() != s {
			t.Fatalf("non-canonical %q accepted (canonical %q)", s, h.String())
		}
		p := h.params
		if p.memory < minMemoryKiB || p.memory > maxMemoryKiB || p.memory < 8*uint32(p.threads) ||
			p.time < 1 || p.time > maxTime || p.threads < 1 || len(h.salt) < 8 || len(h.key) < 16 || len(h.key) > 64 {
			t.Fatalf("out-of-bounds hash accepted: %q", s)
		}
	})
}

func FuzzClientKey(f *testing.F) {
	for _, s := range []string{"192.0.2.1:80", "[2001:db8::1]:443", "[fe80::1%eth0]:1", "::ffff:1.2.3.4", "", ":", "[", "]:80", strings.Repeat("x", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := clientKey(s)
		if len(k) > 65 && !strings.Contains(k, "/") {
			t.Fatalf("clientKey(%q) = %q: unbounded", s, k)
		}
		if clientKey(s) != k {
			t.Fatal("not deterministic")
		}
	})
}

var userNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
var tenantRE = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// FuzzUserInput checks the validators of user input against their
// specification and that grant normalisation is idempotent.
func FuzzUserInput(f *testing.F) {
	f.Add("alice", "acme", "admin", "/devices/")
	f.Add("-x", "Acme", "root", "/a/../b")
	f.Add("a.b", "a-b", "viewer", "")
	f.Add("é", "", "operator", "devices//x")
	f.Fuzz(func(t *testing.T, name, tenant, role, subtree string) {
		if (validUserName(name) == nil) != userNameRE.MatchString(name) {
			t.Fatalf("validUserName(%q) disagrees with the spec", name)
		}
		if (ValidTenant(tenant) == nil) != tenantRE.MatchString(tenant) {
			t.Fatalf("ValidTenant(%q) disagrees with the spec", tenant)
		}
		in := []Grant{{Role: Role(role), Subtree: subtree}}
		gs, err := normalizeGrants(in)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("normalizeGrants error %v is not invalid", err)
			}
			return
		}
		if !gs[0].Role.Valid() {
			t.Fatalf("accepted role %q", role)
		}
		if _, err := model.ParsePath(gs[0].Subtree); err != nil {
			t.Fatalf("stored subtree %q does not parse", gs[0].Subtree)
		}
		again, err := normalizeGrants(gs)
		if err != nil || !slices.Equal(again, gs) {
			t.Fatalf("not idempotent: %v -> %v (%v)", gs, again, err)
		}
		// A grant covers itself.
		if !gs[0].covers(gs[0]) {
			t.Fatalf("%v does not cover itself", gs[0])
		}
	})
}

// FuzzUserName feeds arbitrary names to validUserName and qualifyUserName:
// an accepted name is either unqualified or "local@tenant" with both parts
// valid, and a tenant administrator's new user always lands in its tenant.
func FuzzUserName(f *testing.F) {
	for _, s := range []string{"carol", "carol@acme", "carol@globex", "a@b@c", "@acme", "carol@", "Carol", "c.a_r-l@a-1", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	admin := &Principal{User: "ada", Tenant: "acme", Grants: []Grant{{Role: RoleAdmin, Subtree: "/"}}}
	f.Fuzz(func(t *testing.T, name string) {
		if validUserName(name) != nil {
			return
		}
		if local, tenant, ok := strings.Cut(name, "@"); ok {
			if validUserName(local) != nil || ValidTenant(tenant) != nil || strings.Contains(tenant, "@") {
				t.Fatalf("accepted %q", name)
			}
		}
		got, err := qualifyUserName(admin, UserSpec{Name: name, Tenant: "acme"})
		if err != nil {
			return
		}
		if !strings.HasSuffix(got, "@acme") || validUserName(got) != nil {
			t.Fatalf("%q became %q for a tenant admin of acme", name, got)
		}
	})
}
