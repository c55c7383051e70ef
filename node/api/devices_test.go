package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/devices"
)

// createdEnrollToken is the answer creating an enrollment token.
type createdEnrollToken struct {
	Secret string `json:"token"`
	devices.EnrollToken
}

// enrollToken creates an enrollment token as the holder of token.
func (e *env) enrollToken(token, body string) createdEnrollToken {
	e.t.Helper()
	r := e.do("POST", "/api/v1/enrollment-tokens", token, body)
	e.want(r, 201, "")
	var ct createdEnrollToken
	r.json(e.t, &ct)
	return ct
}

// enroll enrolls hardware hw with an enrollment token secret.
func (e *env) enroll(secret, hw string) devices.Enrollment {
	e.t.Helper()
	r := e.do("POST", "/api/v1/enroll", "", map[string]string{"token": secret, "hardware_id": hw})
	e.want(r, 200, "")
	var en devices.Enrollment
	r.json(e.t, &en)
	return en
}

// sameAnswer checks that an answer about something that exists reads
// exactly like the one about something missing, names aside.
func sameAnswer(t *testing.T, what string, hit, miss resp, hitName, missName string) {
	t.Helper()
	if hit.status != miss.status || strings.ReplaceAll(string(hit.body), hitName, missName) != string(miss.body) {
		t.Errorf("%s: existing %d %s, missing %d %s", what, hit.status, hit.body, miss.status, miss.body)
	}
}

func TestDevicesNotEnabled(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("POST", "/api/v1/enroll", "", `{"token":"se_x","hardware_id":"hw"}`), 501, codeNotImplemented)
	for _, rt := range [][2]string{
		{"GET", "/api/v1/enrollment-tokens"}, {"POST", "/api/v1/enrollment-tokens"}, {"DELETE", "/api/v1/enrollment-tokens/x"},
		{"GET", "/api/v1/devices"}, {"GET", "/api/v1/devices/d-x"}, {"POST", "/api/v1/devices/d-x/revoke"},
		{"GET", "/api/v1/jobs"}, {"GET", "/api/v1/jobs/j1"}, {"POST", "/api/v1/jobs/j1/cancel"},
	} {
		e.want(e.do(rt[0], rt[1], e.admin, `{"group":"g"}`), 501, codeNotImplemented)
	}
}

func TestEnrollment(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	tok := e.enrollToken(c.alice, `{"group":"pumps","ttl":"72h","uses":3}`)
	if !strings.HasPrefix(tok.Secret, "se_") || tok.ID == "" || tok.Group != "pumps" || tok.Tenant != "acme" ||
		tok.Uses != 3 || tok.CreatedBy != "alice" || tok.Expires.Sub(tok.Created).Hours() != 72 {
		t.Fatalf("token %+v", tok)
	}

	en := e.enroll(tok.Secret, "b8:27:eb:12:34:56")
	if !strings.HasPrefix(en.DeviceID, "d-") || en.MQTTUsername != en.DeviceID || !strings.HasPrefix(en.MQTTPassword, "sd_") ||
		en.MQTTAddress != "127.0.0.1:8883" || en.Path != devices.PathOf(en.DeviceID) || en.Tenant != "acme" ||
		en.Group != "pumps" || en.TopicPrefix != "strata/"+en.DeviceID+"/" || !strings.Contains(en.CAPEM, "BEGIN CERTIFICATE") || en.CertPEM != "" {
		t.Fatalf("enrollment %+v", en)
	}
	ctxt, err := e.model.Get(en.Path)
	if err != nil || ctxt.Type != devices.DeviceType || ctxt.Tenant != "acme" || ctxt.Labels["group"] != "pumps" {
		t.Fatalf("device context %+v, %v", ctxt, err)
	}

	// With a CSR the device also gets a certificate; enrolling again keeps
	// the id.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	r := e.do("POST", "/api/v1/enroll", "", map[string]string{"token": tok.Secret, "hardware_id": "b8:27:eb:12:34:56", "csr_pem": csr})
	e.want(r, 200, "")
	var again devices.Enrollment
	r.json(t, &again)
	if again.DeviceID != en.DeviceID || !strings.Contains(again.CertPEM, "BEGIN CERTIFICATE") || again.MQTTPassword == en.MQTTPassword {
		t.Fatalf("enrolling again: %+v", again)
	}

	// Bad requests: 400; bad tokens: 401, as is a used-up one.
	for _, body := range []string{`{"token":"` + tok.Secret + `"}`, `{"token":"` + tok.Secret + `","hardware_id":"a\u0001b"}`,
		`{"token":"` + tok.Secret + `","hardware_id":"x","csr_pem":"junk"}`, `{"token":"x","hardware_id":"x","extra":1}`, `[]`} {
		e.want(e.do("POST", "/api/v1/enroll", "", body), 400, codeInvalid)
	}
	for _, secret := range []string{"", "se_nope", tok.Secret + "x", "st_" + strings.TrimPrefix(tok.Secret, "se_")} {
		e.want(e.do("POST", "/api/v1/enroll", "", map[string]string{"token": secret, "hardware_id": "hw-2"}), 401, codeUnauthorized)
	}
	e.enroll(tok.Secret, "hw-3") // third use
	e.want(e.do("POST", "/api/v1/enroll", "", map[string]string{"token": tok.Secret, "hardware_id": "hw-4"}), 401, codeUnauthorized)
	// A bearer token is not needed, and not a substitute for the enrollment token.
	e.want(e.do("POST", "/api/v1/enroll", e.admin, `{"token":"","hardware_id":"hw-5"}`), 401, codeUnauthorized)
}

func TestEnrollRateLimit(t *testing.T) {
	e := newServicesEnv(t, func(c *devices.Config) { c.AuthFailures = 3 })
	tok := e.enrollToken(e.admin, `{"group":"g","tenant":"acme"}`)
	bad := map[string]string{"token": "se_wrong", "hardware_id": "hw"}
	for range 3 {
		e.want(e.do("POST", "/api/v1/enroll", "", bad), 401, codeUnauthorized)
	}
	r := e.do("POST", "/api/v1/enroll", "", bad)
	e.want(r, 429, codeRateLimited)
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// The limit is per token and address: a good token from the same
	// address (a site behind NAT) still enrolls.
	e.want(e.do("POST", "/api/v1/enroll", "", map[string]string{"token": tok.Secret, "hardware_id": "hw"}), 200, "")
}

func TestEnrollmentTokens(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	acme := e.enrollToken(c.alice, `{"group":"pumps"}`)
	globex := e.enrollToken(c.bob, `{"group":"presses","uses":1}`)
	if acme.Tenant != "acme" || globex.Tenant != "globex" || acme.Expires.Sub(acme.Created) != devices.DefaultTokenTTL {
		t.Fatalf("tokens %+v %+v", acme, globex)
	}
	sys := e.enrollToken(e.admin, `{"group":"g","tenant":"globex"}`)
	if sys.Tenant != "globex" {
		t.Fatalf("system admin's token for globex: %+v", sys)
	}

	list := func(token string) []devices.EnrollToken {
		t.Helper()
		r := e.do("GET", "/api/v1/enrollment-tokens", token, nil)
		e.want(r, 200, "")
		var out struct{ Tokens []devices.EnrollToken }
		r.json(t, &out)
		return out.Tokens
	}
	if ts := list(c.alice); len(ts) != 1 || ts[0].ID != acme.ID {
		t.Fatalf("alice lists %+v", ts)
	}
	if ts := list(c.bob); len(ts) != 2 {
		t.Fatalf("bob lists %+v", ts)
	}
	if ts := list(e.admin); len(ts) != 3 {
		t.Fatalf("admin lists %+v", ts)
	}
	if strings.Contains(string(e.do("GET", "/api/v1/enrollment-tokens", e.admin, nil).body), "se_") {
		t.Fatal("a listing shows a secret")
	}

	// A viewer may neither list, create nor revoke; nobody creates for
	// another tenant but system users.
	e.want(e.do("GET", "/api/v1/enrollment-tokens", c.vera, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/enrollment-tokens", c.vera, `{"group":"g"}`), 403, codeForbidden)
	e.want(e.do("DELETE", "/api/v1/enrollment-tokens/"+acme.ID, c.vera, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/enrollment-tokens", c.alice, `{"group":"g","tenant":"globex"}`), 403, codeForbidden)
	for _, body := range []string{`{}`, `{"group":"a/b"}`, `{"group":"g","ttl":"-1h"}`, `{"group":"g","ttl":"soon"}`,
		`{"group":"g","uses":-1}`, `{"group":"g","kind":"enroll"}`, `{"group":"g","ttl":"100000h"}`} {
		e.want(e.do("POST", "/api/v1/enrollment-tokens", c.alice, body), 400, codeInvalid)
	}

	// Bob cannot revoke alice's token: it reads as a missing one.
	hit := e.do("DELETE", "/api/v1/enrollment-tokens/"+acme.ID, c.bob, nil)
	miss := e.do("DELETE", "/api/v1/enrollment-tokens/nothing", c.bob, nil)
	e.want(hit, 404, codeNotFound)
	sameAnswer(t, "revoke another tenant's token", hit, miss, acme.ID, "nothing")

	e.want(e.do("DELETE", "/api/v1/enrollment-tokens/"+acme.ID, c.alice, nil), 204, "")
	e.want(e.do("DELETE", "/api/v1/enrollment-tokens/"+acme.ID, c.alice, nil), 204, "") // again: no error
	if ts := list(c.alice); len(ts) != 1 || !ts[0].Revoked {
		t.Fatalf("after revocation %+v", ts)
	}
	e.want(e.do("POST", "/api/v1/enroll", "", map[string]string{"token": acme.Secret, "hardware_id": "hw"}), 401, codeUnauthorized)
	e.enroll(globex.Secret, "hw") // bob's still works
}

func TestDevices(t *testing.T) {
	e := newServicesEnv(t, nil)
	c := e.tenants()
	a := e.enroll(e.enrollToken(c.alice, `{"group":"pumps"}`).Secret, "hw-a")
	b := e.enroll(e.enrollToken(c.bob, `{"group":"presses"}`).Secret, "hw-b")

	list := func(token string) []devices.Device {
		t.Helper()
		r := e.do("GET", "/api/v1/devices", token, nil)
		e.want(r, 200, "")
		var out struct{ Devices []devices.Device }
		r.json(t, &out)
		return out.Devices
	}
	for token, want := range map[string][]string{c.alice: {a.DeviceID}, c.vera: {a.DeviceID}, c.bob: {b.DeviceID}} {
		got := list(token)
		if len(got) != len(want) || got[0].ID != want[0] {
			t.Errorf("listing %v, want %v", got, want)
		}
	}
	if got := list(e.admin); len(got) != 2 {
		t.Errorf("admin lists %v", got)
	}
	if r := e.do("GET", "/api/v1/devices", c.gina, nil); strings.Contains(string(r.body), a.DeviceID) {
		t.Error("globex's admin lists acme's device")
	}

	r := e.do("GET", "/api/v1/devices/"+a.DeviceID, c.vera, nil)
	e.want(r, 200, "")
	var d devices.Device
	r.json(t, &d)
	if d.ID != a.DeviceID || d.Tenant != "acme" || d.Group != "pumps" || d.HardwareID != "hw-a" || d.Revoked || d.Enrolled.IsZero() {
		t.Fatalf("device %+v", d)
	}
	if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "sd_") {
		t.Fatalf("device shows its secret: %s", r.body)
	}

	// Another tenant's device reads exactly like a missing one.
	for _, rt := range [][2]string{{"GET", ""}, {"POST", "/revoke"}} {
		hit := e.do(rt[0], "/api/v1/devices/"+a.DeviceID+rt[1], c.bob, nil)
		miss := e.do(rt[0], "/api/v1/devices/d-nothing"+rt[1], c.bob, nil)
		e.want(hit, 404, codeNotFound)
		sameAnswer(t, rt[0]+" another tenant's device", hit, miss, a.DeviceID, "d-nothing")
	}
	e.want(e.do("GET", "/api/v1/devices/a%2Fb", c.alice, nil), 404, codeNotFound)

	e.want(e.do("POST", "/api/v1/devices/"+a.DeviceID+"/revoke", c.vera, nil), 403, codeForbidden)
	for range 2 { // revoking twice answers the device both times
		r = e.do("POST", "/api/v1/devices/"+a.DeviceID+"/revoke", c.alice, nil)
		e.want(r, 200, "")
		d = devices.Device{}
		r.json(t, &d)
		if !d.Revoked || d.RevokedAt.IsZero() {
			t.Fatalf("revoked %+v", d)
		}
	}
	if _, err := e.devices.Authenticate(a.DeviceID, a.MQTTPassword, "127.0.0.1:1"); err == nil {
		t.Fatal("a revoked device authenticates")
	}
	if _, err := e.devices.Authenticate(b.DeviceID, b.MQTTPassword, "127.0.0.1:1"); err != nil {
		t.Fatalf("bob's device: %v", err)
	}
	e.want(e.do("GET", "/api/v1/devices/revoke", c.alice, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/devices/"+a.DeviceID+"/revoke", c.alice, nil), 405, codeMethodNotAllowed)
	if evs, _ := e.model.Events(a.Path, model.EventQuery{}); len(evs) == 0 || evs[0].Name != "revoked" {
		t.Fatalf("events %+v", evs)
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"probe1.example:8443": "probe1.example", "probe1.example": "probe1.example",
		"[::1]:8443": "::1", "[::1]": "::1", "10.0.0.1:1": "10.0.0.1", "": "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}
