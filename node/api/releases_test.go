package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/objects"
	"github.com/strata-dm/strata/node/releases"
)

// relEnv is an env whose API serves releases over an fs object store,
// trusting key.
type relEnv struct {
	*env
	key  ed25519.PrivateKey
	objs *objects.FS
	reg  *prometheus.Registry
}

func newReleasesEnv(t *testing.T, trust bool) *relEnv {
	t.Helper()
	e := newEnv(t)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	objs, err := objects.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rc := releases.Config{Records: e.model, Objects: objs, StagingDir: t.TempDir(), Registerer: reg}
	if trust {
		// An old key and the current one: a rotation in progress.
		old, _, _ := ed25519.GenerateKey(rand.Reader)
		rc.TrustedKeys = []ed25519.PublicKey{old, key.Public().(ed25519.PublicKey)}
	}
	rs, err := releases.New(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Model: e.model, Auth: e.auth, Releases: rs, Gatherer: reg, KeepAlive: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	e.api, e.srv = a, srv
	return &relEnv{env: e, key: key, objs: objs, reg: reg}
}

func artifactBytes(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func (e *relEnv) manifest(name, version string, arts ...apitypes.Artifact) apitypes.Manifest {
	now := time.Now().UTC()
	return apitypes.Manifest{Name: name, Version: version, Artifacts: arts,
		Created: now.Format(time.RFC3339), Expires: now.Add(24 * time.Hour).Format(time.RFC3339)}
}

func (e *relEnv) sign(m apitypes.Manifest) *apitypes.SignedManifest {
	e.t.Helper()
	sm, err := m.Sign(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	return sm
}

func TestReleaseUploadResumeDownload(t *testing.T) {
	e := newReleasesEnv(t, true)
	c := e.tenants()
	data, sum := artifactBytes(300_000)
	art := apitypes.Artifact{OS: "linux", Arch: "arm64", Type: apitypes.ArtifactDeb, Size: int64(len(data)), SHA256: sum}
	rel := "/api/v1/releases/agent/1.2.0"
	up := rel + "/artifacts/" + sum

	r := e.do("PUT", rel, c.alice, e.sign(e.manifest("agent", "1.2.0", art)))
	e.want(r, http.StatusCreated, "")
	var got apitypes.Release
	r.json(t, &got)
	if got.Tenant != "acme" || got.By != "alice" || len(got.Artifacts) != 1 || got.Artifacts[0].Stored {
		t.Fatalf("created release: %+v", got)
	}

	// Nothing yet.
	r = e.do("HEAD", up, c.alice, nil)
	if r.status != http.StatusOK || r.header.Get("Upload-Offset") != "0" || r.header.Get("Upload-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD before upload: %d %v", r.status, r.header)
	}
	r = e.do("GET", up, c.alice, nil)
	e.want(r, http.StatusNotFound, codeNotFound)

	// The first part, then a resume at the wrong offset, then the rest.
	r = e.do("PUT", up, c.alice, data[:100_000], "Upload-Offset", "0")
	e.want(r, http.StatusOK, "")
	var st apitypes.UploadState
	r.json(t, &st)
	if st.Offset != 100_000 || st.Complete {
		t.Fatalf("after the first part: %+v", st)
	}
	r = e.do("HEAD", up, c.alice, nil)
	if r.header.Get("Upload-Offset") != "100000" {
		t.Fatalf("HEAD offset %q, want 100000", r.header.Get("Upload-Offset"))
	}
	r = e.do("PUT", up, c.alice, data[50_000:], "Upload-Offset", "50000")
	e.want(r, http.StatusConflict, codeConflict)
	if r.header.Get("Upload-Offset") != "100000" {
		t.Fatalf("conflict names offset %q, want 100000", r.header.Get("Upload-Offset"))
	}
	r = e.do("PUT", up, c.alice, data[100_000:], "Content-Range", fmt.Sprintf("bytes 100000-%d/%d", len(data)-1, len(data)))
	e.want(r, http.StatusCreated, "")
	r.json(t, &st)
	if !st.Complete || st.Offset != int64(len(data)) {
		t.Fatalf("after the rest: %+v", st)
	}

	// Downloads, whole and ranged.
	r = e.do("GET", up, c.alice, nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("download: %d, %d bytes", r.status, len(r.body))
	}
	r = e.do("GET", up, c.alice, nil, "Range", "bytes=123456-200000")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[123456:200001]) {
		t.Fatalf("ranged download: %d, %d bytes", r.status, len(r.body))
	}
	r = e.do("GET", up, c.alice, nil, "Range", "bytes=-10")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[len(data)-10:]) {
		t.Fatalf("suffix download: %d, %d bytes", r.status, len(r.body))
	}
	r = e.do("GET", up, c.alice, nil, "Range", "bytes=400000-")
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", r.status)
	}
	r = e.do("GET", rel, c.alice, nil)
	e.want(r, http.StatusOK, "")
	r.json(t, &got)
	if !got.Artifacts[0].Stored {
		t.Fatalf("release after upload: %+v", got)
	}
	// Uploading a stored artifact again changes nothing.
	r = e.do("PUT", up, c.alice, data, "Upload-Offset", "0")
	if r.status/100 != 2 {
		t.Fatalf("upload of a stored artifact: %d %s", r.status, r.body)
	}

	// Metrics.
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.Counter != nil {
				vals[mf.GetName()] = m.Counter.GetValue()
			} else if m.Gauge != nil {
				vals[mf.GetName()] = m.Gauge.GetValue()
			}
		}
	}
	if vals["strata_software_uploaded_bytes_total"] != float64(len(data)) || vals["strata_objects_stored"] != 1 ||
		vals["strata_software_served_bytes_total"] < float64(len(data)) {
		t.Fatalf("metrics %v", vals)
	}

	// Audit.
	r = e.do("GET", "/api/v1/audit", e.admin, nil)
	for _, op := range []string{`"release.put"`, `"artifact.upload"`, `"conflict"`} {
		if !strings.Contains(string(r.body), op) {
			t.Errorf("audit trail lacks %s", op)
		}
	}

	// Delete removes the object.
	e.want(e.do("DELETE", rel, c.alice, nil), http.StatusNoContent, "")
	if _, err := e.objs.Stat(context.Background(), sum); err == nil {
		t.Fatal("object kept after its release was deleted")
	}
	e.want(e.do("GET", up, c.alice, nil), http.StatusNotFound, codeNotFound)
}

func TestReleaseTamperedUpload(t *testing.T) {
	e := newReleasesEnv(t, true)
	data, sum := artifactBytes(1000)
	art := apitypes.Artifact{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactTar, Size: 1000, SHA256: sum}
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, e.sign(e.manifest("a", "1", art))), http.StatusCreated, "")
	bad := bytes.Clone(data)
	bad[500] ^= 1
	up := "/api/v1/releases/a/1/artifacts/" + sum
	e.want(e.do("PUT", up, e.admin, bad), http.StatusBadRequest, codeInvalid)
	r := e.do("HEAD", up, e.admin, nil)
	if r.header.Get("Upload-Offset") != "0" {
		t.Fatalf("after a refused upload, offset %q, want 0", r.header.Get("Upload-Offset"))
	}
	e.want(e.do("PUT", up, e.admin, append(bytes.Clone(data), 'x')), http.StatusBadRequest, codeInvalid)
	// The fitting bytes were kept: the artifact completes with nothing more.
	r = e.do("HEAD", up, e.admin, nil)
	if r.header.Get("Upload-Offset") != "1000" {
		t.Fatalf("offset %q after an over-long body", r.header.Get("Upload-Offset"))
	}
	e.want(e.do("PUT", up, e.admin, "", "Upload-Offset", "1000"), http.StatusCreated, "")
	for _, h := range [][]string{{"Upload-Offset", "-1"}, {"Upload-Offset", "1x"}, {"Content-Range", "bytes 5-1/10"}, {"Content-Range", "items 0-1/2"}} {
		e.want(e.do("PUT", up, e.admin, "x", h...), http.StatusBadRequest, codeInvalid)
	}
}

func TestReleaseManifestChecks(t *testing.T) {
	e := newReleasesEnv(t, true)
	_, sum := artifactBytes(10)
	art := apitypes.Artifact{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactBinary, Size: 10, SHA256: sum}
	good := e.manifest("a", "1", art)

	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	untrusted, _ := good.Sign(stranger)
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, untrusted), http.StatusBadRequest, codeInvalid)

	tampered := e.sign(good)
	tampered.Manifest = bytes.Replace(tampered.Manifest, []byte(`"size":10`), []byte(`"size":11`), 1)
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, tampered), http.StatusBadRequest, codeInvalid)

	unsigned := e.sign(good)
	unsigned.Signature = ""
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, unsigned), http.StatusBadRequest, codeInvalid)

	expired := good
	expired.Created = time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	expired.Expires = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, e.sign(expired)), http.StatusBadRequest, codeInvalid)

	e.want(e.do("PUT", "/api/v1/releases/a/2", e.admin, e.sign(good)), http.StatusBadRequest, codeInvalid)
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, e.sign(good)), http.StatusCreated, "")

	// Extending keeps every artifact: 200; changing one: 409.
	_, sum2 := artifactBytes(10)
	more := e.manifest("a", "1", art, apitypes.Artifact{OS: "linux", Arch: "arm64", Type: apitypes.ArtifactBinary, Size: 10, SHA256: sum2})
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, e.sign(more)), http.StatusOK, "")
	changed := e.manifest("a", "1", apitypes.Artifact{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactBinary, Size: 10, SHA256: sum2})
	e.want(e.do("PUT", "/api/v1/releases/a/1", e.admin, e.sign(changed)), http.StatusConflict, codeConflict)

	// A node that trusts no key creates nothing.
	n := newReleasesEnv(t, false)
	n.want(n.do("PUT", "/api/v1/releases/a/1", n.admin, n.sign(good)), http.StatusNotImplemented, codeNotImplemented)
	n.want(n.do("GET", "/api/v1/releases", n.admin, nil), http.StatusOK, "")

	// Bad names.
	e.want(e.do("GET", "/api/v1/releases/a/..x", e.admin, nil), http.StatusBadRequest, codeInvalid)
	e.want(e.do("GET", "/api/v1/releases/a/1?x=1", e.admin, nil), http.StatusBadRequest, codeInvalid)
	e.want(e.do("GET", "/api/v1/releases/a/1/artifacts/ABC", e.admin, nil), http.StatusBadRequest, codeInvalid)
}

func TestReleaseTrust(t *testing.T) {
	e := newReleasesEnv(t, true)
	c := e.tenants()
	viewer := e.user(auth.UserSpec{Name: "vic", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}})
	data, sum := artifactBytes(64)
	art := apitypes.Artifact{OS: "linux", Arch: "arm64", Type: apitypes.ArtifactScript, Size: 64, SHA256: sum}
	own := "/api/v1/releases/tool/1"
	e.want(e.do("PUT", own, c.alice, e.sign(e.manifest("tool", "1", art))), http.StatusCreated, "")
	e.want(e.do("PUT", own+"/artifacts/"+sum, c.alice, data), http.StatusCreated, "")

	// Another tenant: as if it did not exist, and it may use the name.
	for _, m := range []string{"GET", "DELETE"} {
		e.want(e.do(m, own, c.bob, nil), http.StatusNotFound, codeNotFound)
	}
	e.want(e.do("GET", own+"/artifacts/"+sum, c.bob, nil), http.StatusNotFound, codeNotFound)
	e.want(e.do("PUT", own+"/artifacts/"+sum, c.bob, data), http.StatusNotFound, codeNotFound)
	r := e.do("GET", "/api/v1/releases", c.bob, nil)
	var list apitypes.ReleaseList
	r.json(t, &list)
	if len(list.Releases) != 0 {
		t.Fatalf("globex lists %+v", list.Releases)
	}
	e.want(e.do("PUT", own, c.bob, e.sign(e.manifest("tool", "1", art))), http.StatusCreated, "")

	// A viewer on / reads and downloads, and changes nothing; one on a
	// subtree does not even read.
	e.want(e.do("GET", own, viewer, nil), http.StatusOK, "")
	r = e.do("GET", own+"/artifacts/"+sum, viewer, nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("viewer download: %d", r.status)
	}
	e.want(e.do("PUT", own, viewer, e.sign(e.manifest("tool", "1", art))), http.StatusForbidden, codeForbidden)
	e.want(e.do("PUT", own+"/artifacts/"+sum, viewer, data), http.StatusForbidden, codeForbidden)
	e.want(e.do("DELETE", own, viewer, nil), http.StatusForbidden, codeForbidden)
	e.want(e.do("GET", own, c.vera, nil), http.StatusForbidden, codeForbidden)

	// A shared release: every tenant reads it, none changes it.
	shared := "/api/v1/releases/base/1"
	e.want(e.do("PUT", shared, e.admin, e.sign(e.manifest("base", "1", art))), http.StatusCreated, "")
	e.want(e.do("GET", shared, c.bob, nil), http.StatusOK, "")
	e.want(e.do("DELETE", shared, c.alice, nil), http.StatusForbidden, codeForbidden)
	e.want(e.do("PUT", shared, c.alice, e.sign(e.manifest("base", "1", art))), http.StatusConflict, codeConflict)
	r = e.do("GET", "/api/v1/releases", c.alice, nil)
	r.json(t, &list)
	if len(list.Releases) != 2 {
		t.Fatalf("acme lists %d releases, want its own and the shared one", len(list.Releases))
	}
	// A system user names a tenant's release with ?tenant=.
	e.want(e.do("GET", own+"?tenant=acme", e.admin, nil), http.StatusOK, "")
	e.want(e.do("GET", own, e.admin, nil), http.StatusNotFound, codeNotFound)

	// Deleting globex's release keeps the object acme's still names.
	e.want(e.do("DELETE", own, c.bob, nil), http.StatusNoContent, "")
	if r := e.do("GET", own+"/artifacts/"+sum, c.alice, nil); r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("acme's download after globex deleted its release: %d", r.status)
	}

	// A revoked token reaches nothing.
	p := e.principal(c.alice)
	if err := e.auth.RevokeToken(e.ctx, e.principal(e.admin), p.TokenID); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("GET", own, c.alice, nil), http.StatusUnauthorized, codeUnauthorized)
	e.want(e.do("PUT", own+"/artifacts/"+sum, c.alice, data), http.StatusUnauthorized, codeUnauthorized)
}
