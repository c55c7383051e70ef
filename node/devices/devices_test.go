package devices

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/store"
)

func newService(t *testing.T) (*Service, *model.Model) {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); st.Close() })
	ca, err := certs.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Tree: m, CA: ca, CAPEM: ca.CertPEM, AuthFailures: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

var (
	sys     = &auth.Principal{User: "admin", System: true}
	tenantA = &auth.Principal{User: "alice", Tenant: "a", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}}
	tenantB = &auth.Principal{User: "bob", Tenant: "b", Grants: []auth.Grant{{Role: auth.RoleAdmin, Subtree: "/"}}}
	viewerA = &auth.Principal{User: "vic", Tenant: "a", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}}
)

func TestEnrollAndAuthenticate(t *testing.T) {
	s, m := newService(t)
	ctx := context.Background()
	secret, tok, err := s.CreateToken(ctx, tenantA, TokenSpec{Group: "pumps", Tenant: "", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Tenant != "a" || tok.Group != "pumps" {
		t.Fatalf("token %+v", tok)
	}
	e, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-1"}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Tenant != "a" || e.Group != "pumps" || e.MQTTUsername != e.DeviceID || e.TopicPrefix != "strata/"+e.DeviceID+"/" || e.CAPEM == "" {
		t.Fatalf("enrollment %+v", e)
	}
	c, err := m.Get(e.Path)
	if err != nil || c.Tenant != "a" || c.Type != DeviceType || c.Labels["group"] != "pumps" {
		t.Fatalf("context %+v %v", c, err)
	}
	if d, err := s.Authenticate(e.DeviceID, e.MQTTPassword, "10.0.0.1:2"); err != nil || d.Tenant != "a" {
		t.Fatalf("authenticate: %+v %v", d, err)
	}
	if _, err := s.Authenticate(e.DeviceID, "sd_wrong", "10.0.0.1:2"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong secret: %v", err)
	}
	// Same hardware again: same id, new secret, old one dead.
	e2, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-1"}, "10.0.0.1:1")
	if err != nil || e2.DeviceID != e.DeviceID || e2.MQTTPassword == e.MQTTPassword {
		t.Fatalf("re-enroll: %+v %v", e2, err)
	}
	if _, err := s.Authenticate(e.DeviceID, e.MQTTPassword, "10.0.0.9:1"); err == nil {
		t.Fatal("the old secret still works")
	}
	// Two uses spent.
	if _, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw-2"}, "10.0.0.1:1"); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("third use of a two-use token: %v", err)
	}
	// The same hardware in another tenant is another device.
	sb, _, err := s.CreateToken(ctx, tenantB, TokenSpec{Group: "pumps"})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := s.Enroll(ctx, EnrollRequest{Token: sb, HardwareID: "hw-1"}, "10.0.0.2:1")
	if err != nil || eb.DeviceID == e.DeviceID || eb.Tenant != "b" {
		t.Fatalf("tenant b: %+v %v", eb, err)
	}
}

func TestTokenRules(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	if _, _, err := s.CreateToken(ctx, tenantA, TokenSpec{Group: "g", Tenant: "b"}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("token for another tenant: %v", err)
	}
	if _, _, err := s.CreateToken(ctx, viewerA, TokenSpec{Group: "g"}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("viewer made a token: %v", err)
	}
	for _, g := range []string{"", "a/b", "x+", "#", ".."} {
		if _, _, err := s.CreateToken(ctx, sys, TokenSpec{Group: g}); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("group %q: %v", g, err)
		}
	}
	secret, tok, err := s.CreateToken(ctx, sys, TokenSpec{Group: "g", Tenant: "b", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ts, _ := s.ListTokens(tenantA); len(ts) != 0 {
		t.Fatalf("tenant a sees %+v", ts)
	}
	if err := s.RevokeToken(ctx, tenantA, tok.ID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("tenant a revoked b's token: %v", err)
	}
	if ts, _ := s.ListTokens(tenantB); len(ts) != 1 {
		t.Fatalf("tenant b sees %+v", ts)
	}
	if err := s.RevokeToken(ctx, tenantB, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "x"}, "10.1.0.1:1"); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("revoked token enrolled: %v", err)
	}
	// Expired.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	secret2, _, _ := s.CreateToken(ctx, sys, TokenSpec{Group: "g", TTL: time.Minute})
	s.now = func() time.Time { return time.Now().Add(3 * time.Hour) }
	if _, err := s.Enroll(ctx, EnrollRequest{Token: secret2, HardwareID: "x"}, "10.1.0.2:1"); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("expired token enrolled: %v", err)
	}
	// Bad input.
	for _, req := range []EnrollRequest{{Token: "garbage", HardwareID: "x"}, {Token: secret, HardwareID: ""}, {Token: secret, HardwareID: "a\nb"}} {
		if _, err := s.Enroll(ctx, req, "10.1.0.3:1"); err == nil {
			t.Fatalf("%+v enrolled", req)
		}
	}
}

func TestEnrollRateLimit(t *testing.T) {
	s, _ := newService(t)
	for range 3 {
		s.Enroll(context.Background(), EnrollRequest{Token: "se_bad", HardwareID: "x"}, "10.9.9.9:1")
	}
	var rle *auth.RateLimitError
	if _, err := s.Enroll(context.Background(), EnrollRequest{Token: "se_bad", HardwareID: "x"}, "10.9.9.9:2"); !errors.As(err, &rle) {
		t.Fatalf("fourth failure from one address: %v", err)
	}
	// Another address is unaffected.
	if _, err := s.Enroll(context.Background(), EnrollRequest{Token: "se_bad", HardwareID: "x"}, "10.9.9.10:1"); errors.As(err, &rle) {
		t.Fatal("another address limited")
	}
}

func TestRevoke(t *testing.T) {
	s, m := newService(t)
	ctx := context.Background()
	var mu sync.Mutex
	var revoked []string
	s.OnRevoke(func(id string) { mu.Lock(); revoked = append(revoked, id); mu.Unlock() })
	secret, _, _ := s.CreateToken(ctx, tenantA, TokenSpec{Group: "g"})
	e, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw"}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, tenantB, e.DeviceID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("tenant b revoked a's device: %v", err)
	}
	if _, err := s.Revoke(ctx, viewerA, e.DeviceID); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("viewer revoked: %v", err)
	}
	if ds, _ := s.List(tenantB); len(ds) != 0 {
		t.Fatalf("tenant b lists %+v", ds)
	}
	if ds, _ := s.List(viewerA); len(ds) != 1 {
		t.Fatalf("viewer a lists %+v", ds)
	}
	d, err := s.Revoke(ctx, tenantA, e.DeviceID)
	if err != nil || !d.Revoked {
		t.Fatalf("revoke: %+v %v", d, err)
	}
	if _, err := s.Authenticate(e.DeviceID, e.MQTTPassword, "10.0.0.3:1"); err == nil {
		t.Fatal("revoked device authenticated")
	}
	mu.Lock()
	if len(revoked) != 1 || revoked[0] != e.DeviceID {
		t.Fatalf("revocation hook: %v", revoked)
	}
	mu.Unlock()
	evs, _ := m.Events(e.Path, model.EventQuery{})
	if len(evs) < 2 || evs[0].Name != "revoked" {
		t.Fatalf("events %+v", evs)
	}
}

func TestEnrollWithCSR(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	secret, _, _ := s.CreateToken(ctx, sys, TokenSpec{Group: "g"})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "evil-other-id"}}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	e, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw", CSRPEM: string(csr)}, "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(e.CertPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.Subject.CommonName != e.DeviceID {
		t.Fatalf("certificate CN %q (want the device id), %v", cert.Subject.CommonName, err)
	}
	if _, err := s.AuthenticateSerial(e.DeviceID, cert.SerialNumber.String(), "10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateSerial(e.DeviceID, "12345", "10.0.0.1:1"); err == nil {
		t.Fatal("another serial authenticated")
	}
	if _, err := s.Enroll(ctx, EnrollRequest{Token: secret, HardwareID: "hw2", CSRPEM: "junk"}, "10.0.0.1:1"); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("junk CSR: %v", err)
	}
}
