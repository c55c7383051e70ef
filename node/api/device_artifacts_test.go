package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/objects"
	"github.com/strata-dm/strata/node/releases"
)

// newDeviceReleasesEnv is a relEnv whose API also has a device registry,
// so devices enroll and download with their own credentials.
func newDeviceReleasesEnv(t *testing.T, devCfg func(*devices.Config)) *relEnv {
	t.Helper()
	e := newServicesEnv(t, devCfg)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	objs, err := objects.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rs, err := releases.New(context.Background(), releases.Config{Records: e.model, Objects: objs, StagingDir: t.TempDir(),
		Registerer: reg, TrustedKeys: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Model: e.model, Auth: e.auth, Devices: e.devices, Jobs: e.jobs, Releases: rs,
		Gatherer: reg, KeepAlive: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	e.api, e.srv = a, srv
	return &relEnv{env: e, key: key, objs: objs, reg: reg}
}

// publish creates release name 1.0 as the holder of token with one
// artifact of n random bytes and uploads it; it returns the bytes and
// their SHA-256.
func (e *relEnv) publish(token, name string, n int, upload bool) ([]byte, string) {
	e.t.Helper()
	data, sum := artifactBytes(n)
	art := apitypes.Artifact{OS: "linux", Arch: "arm64", Type: apitypes.ArtifactBinary, Size: int64(n), SHA256: sum}
	rel := "/api/v1/releases/" + name + "/1.0"
	e.want(e.do("PUT", rel, token, e.sign(e.manifest(name, "1.0", art))), http.StatusCreated, "")
	if upload {
		e.want(e.do("PUT", rel+"/artifacts/"+sum, token, data, "Upload-Offset", "0"), http.StatusCreated, "")
	}
	return data, sum
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// deviceGet downloads artifact sum as a device (auth is the Authorization
// header, "" for none), with more headers.
func (e *relEnv) deviceGet(method, sum, authz string, hdr ...string) resp {
	e.t.Helper()
	if authz != "" {
		hdr = append(hdr, "Authorization", authz)
	}
	return e.do(method, "/api/v1/device/artifacts/"+sum, "", nil, hdr...)
}

func (e *relEnv) counters() map[string]float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.Counter == nil {
				continue
			}
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			vals[name] = m.Counter.GetValue()
		}
	}
	return vals
}

// TestDeviceDownloadCrossings tries to cross the device download rule:
// another tenant's artifact, a revoked device, a wrong secret, no
// credentials, an operator's bearer token. Refusals are counted.
func TestDeviceDownloadCrossings(t *testing.T) {
	e := newDeviceReleasesEnv(t, nil)
	c := e.tenants()
	acmeData, acmeSum := e.publish(c.alice, "acme-agent", 20_000, true)
	_, globexSum := e.publish(c.bob, "globex-agent", 20_000, true)
	sharedData, sharedSum := e.publish(e.admin, "base", 10_000, true)
	_, pendingSum := e.publish(c.alice, "pending", 1_000, false)
	_, missingSum := artifactBytes(10)

	acme := e.enroll(e.enrollToken(c.alice, `{"group":"g"}`).Secret, "hw-acme")
	globex := e.enroll(e.enrollToken(c.bob, `{"group":"g"}`).Secret, "hw-globex")
	acmeAuth, globexAuth := basic(acme.MQTTUsername, acme.MQTTPassword), basic(globex.MQTTUsername, globex.MQTTPassword)

	// Its tenant's release and a shared one.
	r := e.deviceGet("GET", acmeSum, acmeAuth)
	if r.status != http.StatusOK || string(r.body) != string(acmeData) || r.header.Get("ETag") != `"`+acmeSum+`"` {
		t.Fatalf("own artifact: %d, %d bytes, %v", r.status, len(r.body), r.header)
	}
	r = e.deviceGet("GET", sharedSum, globexAuth)
	if r.status != http.StatusOK || string(r.body) != string(sharedData) {
		t.Fatalf("shared artifact: %d, %d bytes", r.status, len(r.body))
	}
	r = e.deviceGet("HEAD", acmeSum, acmeAuth)
	if r.status != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Length") != strconv.Itoa(len(acmeData)) ||
		r.header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("HEAD: %d %v", r.status, r.header)
	}

	// Another tenant's artifact reads exactly like a missing one, both
	// ways; an artifact not uploaded yet too.
	miss := e.deviceGet("GET", missingSum, acmeAuth)
	e.want(miss, http.StatusNotFound, codeNotFound)
	sameAnswer(t, "acme device, globex artifact", e.deviceGet("GET", globexSum, acmeAuth), miss, globexSum, missingSum)
	sameAnswer(t, "globex device, acme artifact", e.deviceGet("GET", acmeSum, globexAuth), e.deviceGet("GET", missingSum, globexAuth), acmeSum, missingSum)
	sameAnswer(t, "artifact not uploaded", e.deviceGet("GET", pendingSum, acmeAuth), miss, pendingSum, missingSum)
	if r := e.deviceGet("HEAD", globexSum, acmeAuth); r.status != http.StatusNotFound {
		t.Fatalf("HEAD of another tenant's artifact: %d", r.status)
	}

	// Credentials.
	for name, authz := range map[string]string{
		"none":           "",
		"wrong secret":   basic(acme.MQTTUsername, acme.MQTTPassword+"x"),
		"other's secret": basic(acme.MQTTUsername, globex.MQTTPassword),
		"unknown device": basic("d-nosuchdevice", acme.MQTTPassword),
		"empty secret":   basic(acme.MQTTUsername, ""),
		"operator token": "Bearer " + c.alice,
		"garbage":        "Basic !!!",
	} {
		r := e.deviceGet("GET", acmeSum, authz)
		e.want(r, http.StatusUnauthorized, codeUnauthorized)
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s: challenge %q", name, r.header.Get("WWW-Authenticate"))
		}
		if strings.Contains(string(r.body), acmeSum[:16]) && name != "none" {
			// Nothing about the artifact before the device is known.
			t.Errorf("%s: answer names the artifact: %s", name, r.body)
		}
	}
	// The operator routes do not take device credentials.
	e.want(e.do("GET", "/api/v1/releases/acme-agent/1.0/artifacts/"+acmeSum, "", nil, "Authorization", acmeAuth),
		http.StatusUnauthorized, codeUnauthorized)

	// A revoked device is refused like a wrong secret.
	e.want(e.do("POST", "/api/v1/devices/"+acme.DeviceID+"/revoke", c.alice, nil), http.StatusOK, "")
	e.want(e.deviceGet("GET", acmeSum, acmeAuth), http.StatusUnauthorized, codeUnauthorized)
	e.want(e.deviceGet("GET", sharedSum, acmeAuth), http.StatusUnauthorized, codeUnauthorized)

	// Malformed requests of a known device.
	e.want(e.deviceGet("GET", strings.ToUpper(sharedSum), globexAuth), http.StatusBadRequest, codeInvalid)
	e.want(e.do("GET", "/api/v1/device/artifacts/"+sharedSum+"?tenant=acme", "", nil, "Authorization", globexAuth),
		http.StatusBadRequest, codeInvalid)

	vals := e.counters()
	if got := vals["strata_software_device_served_bytes_total"]; got != float64(len(acmeData)+len(sharedData)) {
		t.Errorf("device bytes served %v, want %d", got, len(acmeData)+len(sharedData))
	}
	if vals["strata_software_device_downloads_refused_total/credentials"] != 9 ||
		vals["strata_software_device_downloads_refused_total/not_found"] != 6 {
		t.Errorf("refusals %v", vals)
	}
}

// TestDeviceDownloadResume: a device downloads the first half of an
// artifact, is cut off, and fetches the rest with Range: bytes=N- and
// If-Range; the bytes put together have the artifact's SHA-256.
func TestDeviceDownloadResume(t *testing.T) {
	e := newDeviceReleasesEnv(t, nil)
	c := e.tenants()
	data, sum := e.publish(c.alice, "agent", 300_001, true)
	dev := e.enroll(e.enrollToken(c.alice, `{"group":"g"}`).Secret, "hw-1")
	authz := basic(dev.DeviceID, dev.MQTTPassword)
	etag := `"` + sum + `"`

	half := len(data) / 2
	first := e.deviceGet("GET", sum, authz, "Range", "bytes=0-"+strconv.Itoa(half-1))
	if first.status != http.StatusPartialContent || len(first.body) != half {
		t.Fatalf("first half: %d, %d bytes", first.status, len(first.body))
	}
	rest := e.deviceGet("GET", sum, authz, "Range", "bytes="+strconv.Itoa(half)+"-", "If-Range", etag)
	if rest.status != http.StatusPartialContent ||
		rest.header.Get("Content-Range") != "bytes "+strconv.Itoa(half)+"-"+strconv.Itoa(len(data)-1)+"/"+strconv.Itoa(len(data)) {
		t.Fatalf("rest: %d %v", rest.status, rest.header)
	}
	got := sha256.Sum256(append(first.body, rest.body...))
	if hex.EncodeToString(got[:]) != sum {
		t.Fatal("resumed download does not hash to the artifact's SHA-256")
	}

	// If-Range naming other bytes: the whole artifact, not a piece of it.
	r := e.deviceGet("GET", sum, authz, "Range", "bytes="+strconv.Itoa(half)+"-", "If-Range", `"`+strings.Repeat("0", 64)+`"`)
	if r.status != http.StatusOK || len(r.body) != len(data) {
		t.Fatalf("If-Range mismatch: %d, %d bytes", r.status, len(r.body))
	}
	r = e.deviceGet("GET", sum, authz, "Range", "bytes="+strconv.Itoa(len(data))+"-")
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", r.status)
	}
}

// TestDeviceDownloadRateLimited: failed device authentications are
// limited per device and address (the MQTT limit), and counted; another
// device at the same address is not locked out.
func TestDeviceDownloadRateLimited(t *testing.T) {
	e := newDeviceReleasesEnv(t, func(c *devices.Config) { c.AuthFailures = 3 })
	c := e.tenants()
	_, sum := e.publish(c.alice, "agent", 1_000, true)
	tok := e.enrollToken(c.alice, `{"group":"g","uses":2}`).Secret
	one, two := e.enroll(tok, "hw-1"), e.enroll(tok, "hw-2")
	for range 3 {
		e.want(e.deviceGet("GET", sum, basic(one.DeviceID, "guess")), http.StatusUnauthorized, codeUnauthorized)
	}
	r := e.deviceGet("GET", sum, basic(one.DeviceID, one.MQTTPassword))
	e.want(r, http.StatusTooManyRequests, codeRateLimited)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if r := e.deviceGet("GET", sum, basic(two.DeviceID, two.MQTTPassword)); r.status != http.StatusOK {
		t.Fatalf("the other device: %d %s", r.status, r.body)
	}
	if v := e.counters(); v["strata_software_device_downloads_refused_total/rate_limited"] != 1 ||
		v["strata_software_device_downloads_refused_total/credentials"] != 3 {
		t.Fatalf("refusals %v", v)
	}
}

// TestDeviceDownloadNotEnabled: without a device registry or releases the
// route answers 501.
func TestDeviceDownloadNotEnabled(t *testing.T) {
	e := newReleasesEnv(t, true) // releases, no devices
	_, sum := artifactBytes(10)
	e.want(e.do("GET", "/api/v1/device/artifacts/"+sum, "", nil, "Authorization", basic("d-x", "s")), http.StatusNotImplemented, codeNotImplemented)
	s := newServicesEnv(t, nil) // devices, no releases
	s.want(s.do("GET", "/api/v1/device/artifacts/"+sum, "", nil), http.StatusNotImplemented, codeNotImplemented)
}
