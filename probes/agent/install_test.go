package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// tarOf builds an uncompressed tar of the given headers, each with body
// for a regular file.
func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.mode != 0 {
			h.Mode = e.mode
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

type tarEntry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
}

func TestUntarSafety(t *testing.T) {
	good := tarOf(t,
		tarEntry{name: "./", typ: tar.TypeDir},
		tarEntry{name: "bin/", typ: tar.TypeDir},
		tarEntry{name: "bin/app", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o4755},
		tarEntry{name: "lib/link", typ: tar.TypeSymlink, link: "../bin/app"},
		tarEntry{name: "bin/app", typ: tar.TypeReg, body: "second\n"},
	)
	dir := t.TempDir()
	if err := untar(bytes.NewReader(good), dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "bin/app"))
	if err != nil || st.Mode().Perm() != 0o644 || st.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("bin/app: %v %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "lib/link")); string(b) != "second\n" {
		t.Fatalf("through the link: %q", b)
	}

	for name, entries := range map[string][]tarEntry{
		"absolute":      {{name: "/etc/passwd", typ: tar.TypeReg, body: "x"}},
		"dot dot":       {{name: "a/../../x", typ: tar.TypeReg, body: "x"}},
		"leading dots":  {{name: "../x", typ: tar.TypeReg, body: "x"}},
		"link out":      {{name: "l", typ: tar.TypeSymlink, link: "../../etc"}},
		"absolute link": {{name: "l", typ: tar.TypeSymlink, link: "/etc"}},
		// A link to an ancestor makes a later link's lexical target land
		// outside: x/y -> . puts x/y/z in x, and ../../q from there is out.
		"link chain": {{name: "x/", typ: tar.TypeDir}, {name: "x/y", typ: tar.TypeSymlink, link: "."},
			{name: "x/y/z", typ: tar.TypeSymlink, link: "../../q"}},
		"file through a link": {{name: "up", typ: tar.TypeSymlink, link: "."}, {name: "a/", typ: tar.TypeDir},
			{name: "a/b", typ: tar.TypeSymlink, link: "../up"}, {name: "a/b/../../x", typ: tar.TypeReg}},
		"device":    {{name: "dev", typ: tar.TypeChar}},
		"hard link": {{name: "h", typ: tar.TypeLink, link: "x"}},
		"fifo":      {{name: "f", typ: tar.TypeFifo}},
		"backslash": {{name: `a\..\..\x`, typ: tar.TypeReg}},
	} {
		dir := t.TempDir()
		out := filepath.Dir(dir)
		err := untar(bytes.NewReader(tarOf(t, entries...)), dir)
		if !errors.Is(err, ErrUnsafeArchive) {
			t.Errorf("%s: %v", name, err)
		}
		for _, p := range []string{"x", "q", "etc"} {
			if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
				t.Errorf("%s: wrote %s outside", name, p)
			}
		}
	}
	if _, err := cleanTarName("a/./b/"); err != nil {
		t.Fatal(err)
	}
}

func TestParseTrustedKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.StdEncoding.EncodeToString(pub)
	file := filepath.Join(t.TempDir(), "release.key.pub")
	os.WriteFile(file, []byte(b64+"\n"), 0o644)
	for _, s := range []string{b64, file} {
		k, err := ParseTrustedKey(s)
		if err != nil || !k.Equal(pub) {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "nope", base64.StdEncoding.EncodeToString([]byte("short")), filepath.Join(t.TempDir(), "missing")} {
		if _, err := ParseTrustedKey(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// artifactNode serves artifacts at the device download route over TLS of
// the test CA, to device d-test with its secret.
func artifactNode(t *testing.T, ca *testCA, arts map[string][]byte) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "d-test" || p != "sd_secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		sum := strings.TrimPrefix(r.URL.Path, "/api/v1/device/artifacts/")
		data, ok := arts[sum]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+sum+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	srv.TLS = ca.serverTLS()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// signRelease signs a release of one linux artifact per (type, bytes) for
// this platform, expiring at expires.
func signRelease(t *testing.T, key ed25519.PrivateKey, name, version string, expires time.Time, arts map[string][]byte) apitypes.SignedManifest {
	t.Helper()
	goos, goarch := Platform()
	created := expires.Add(-time.Hour)
	m := apitypes.Manifest{Name: name, Version: version, Created: created.UTC().Format(time.RFC3339), Expires: expires.UTC().Format(time.RFC3339)}
	for typ, data := range arts {
		m.Artifacts = append(m.Artifacts, apitypes.Artifact{OS: goos, Arch: goarch, Type: typ, Size: int64(len(data)), SHA256: hexSum(data)})
	}
	sm, err := m.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	return *sm
}

// newInstallAgent is an agent (not started) trusting keys, with an
// install root, downloading from api.
func newInstallAgent(t *testing.T, ca *testCA, api string, keys ...ed25519.PublicKey) (*Agent, string) {
	t.Helper()
	root := t.TempDir()
	a, err := New(Config{StateDir: newStateDir(t, "127.0.0.1:1", ca.pem), TrustedKeys: keys, API: api, InstallRoot: root,
		HasPackageManager: func(string) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	return a, root
}

func callInstall(a *Agent, args apitypes.InstallArgs) (apitypes.InstallResult, error) {
	raw, _ := json.Marshal(args)
	out, err := a.install(context.Background(), &call{job: "j1", args: raw})
	r, _ := out.(apitypes.InstallResult)
	return r, err
}

// TestInstallRefusals: no trusted key, a key not trusted, a changed
// manifest, an expired one and bad args are refused before anything is
// downloaded.
func TestInstallRefusals(t *testing.T) {
	ca := newTestCA(t)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	bin := []byte("#!/bin/sh\necho hi\n")
	api := artifactNode(t, ca, map[string][]byte{hexSum(bin): bin})
	good := signRelease(t, key, "tool", "1.0", time.Now().Add(time.Hour), map[string][]byte{"binary": bin})

	a, _ := newInstallAgent(t, ca, api)
	if _, err := callInstall(a, apitypes.InstallArgs{Release: good}); !errors.Is(err, ErrInstallNotAllowed) {
		t.Fatalf("no trusted key: %v", err)
	}
	a, _ = newInstallAgent(t, ca, api, pub)
	for name, c := range map[string]struct {
		sm   apitypes.SignedManifest
		want string
	}{
		"foreign key": {signRelease(t, other, "tool", "1.0", time.Now().Add(time.Hour), map[string][]byte{"binary": bin}), "not trusted"},
		"changed": {func() apitypes.SignedManifest {
			s := good
			s.Manifest = bytes.Replace(s.Manifest, []byte(`"1.0"`), []byte(`"1.1"`), 1)
			return s
		}(), "does not verify"},
		"expired": {signRelease(t, key, "tool", "1.0", time.Now().Add(-time.Minute), map[string][]byte{"binary": bin}), "expired"},
	} {
		_, err := callInstall(a, apitypes.InstallArgs{Release: c.sm})
		if !errors.Is(err, ErrReleaseRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := a.install(context.Background(), &call{job: "j", args: json.RawMessage(`{"release":{},"force":1}`)}); !errors.Is(err, ErrInvalidArgs) {
		t.Errorf("bad args: %v", err)
	}
	// Nothing for this platform.
	m := apitypes.Manifest{Name: "tool", Version: "1.0", Created: "2026-01-01T00:00:00Z", Expires: "2099-01-01T00:00:00Z",
		Artifacts: []apitypes.Artifact{{OS: "plan9", Arch: "mips", Type: "binary", Size: 1, SHA256: hexSum(bin)}}}
	sm, _ := m.Sign(key)
	if _, err := callInstall(a, apitypes.InstallArgs{Release: *sm}); !errors.Is(err, apitypes.ErrNoArtifact) {
		t.Errorf("no artifact: %v", err)
	}
}

// TestInstallBinaryAndScript: a binary lands as releases/<name>/<version>/<name>
// (0755) behind current/<name>; a script artifact runs once with the
// install environment; software.json records both and survives a
// restart of the agent.
func TestInstallBinaryAndScript(t *testing.T) {
	ca := newTestCA(t)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	bin := []byte("#!/bin/sh\necho tool\n")
	script := []byte("#!/bin/sh\necho \"$STRATA_RELEASE $STRATA_VERSION prev=$STRATA_PREVIOUS_VERSION\" >> \"$STRATA_INSTALL_ROOT/script-ran\"\n")
	api := artifactNode(t, ca, map[string][]byte{hexSum(bin): bin, hexSum(script): script})
	a, root := newInstallAgent(t, ca, api, pub)

	r, err := callInstall(a, apitypes.InstallArgs{Release: signRelease(t, key, "tool", "1.0", time.Now().Add(time.Hour),
		map[string][]byte{"binary": bin, "script": script})})
	if err != nil || r.Type != "binary" || r.Bytes != int64(len(bin)) || r.Resumed {
		t.Fatalf("binary: %+v %v", r, err)
	}
	p := filepath.Join(root, "releases", "tool", "1.0", "tool")
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("%s: %v", p, err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "current", "tool", "tool")); !bytes.Equal(got, bin) {
		t.Fatalf("current/tool/tool: %q", got)
	}

	for _, v := range []string{"1.0", "1.1"} {
		r, err = callInstall(a, apitypes.InstallArgs{Release: signRelease(t, key, "fix", v, time.Now().Add(time.Hour),
			map[string][]byte{"script": script})})
		if err != nil || r.Type != "script" {
			t.Fatalf("script %s: %+v %v", v, r, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "script-ran")); string(b) != "fix 1.0 prev=\nfix 1.1 prev=1.0\n" {
		t.Fatalf("script-ran: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, downloadsDir))
	if len(entries) != 0 {
		t.Fatalf("downloads left: %v", entries)
	}

	a.Shutdown(context.Background())
	a2, err := New(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Shutdown(context.Background())
	list := a2.inst.software.list()
	if len(list) != 2 || list[0].Name != "fix" || list[0].Version != "1.1" || list[1].Name != "tool" || list[1].Version != "1.0" ||
		list[1].Installed.IsZero() {
		t.Fatalf("software after a restart: %+v", list)
	}
	inv, _ := json.Marshal(Inventory{Software: list})
	if !strings.Contains(string(inv), `"software.fix":"1.1"`) || !strings.Contains(string(inv), `"software.tool":"1.0"`) {
		t.Fatalf("inventory: %s", inv)
	}
}

// FuzzUntar: whatever the archive, untar writes nothing outside its
// directory and never panics.
func FuzzUntar(f *testing.F) {
	seed := func(entries ...tarEntry) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, Size: int64(len(e.body))})
			tw.Write([]byte(e.body))
		}
		tw.Close()
		return buf.Bytes()
	}
	f.Add(seed(tarEntry{name: "a/b", typ: tar.TypeReg, body: "x"}))
	f.Add(seed(tarEntry{name: "x/", typ: tar.TypeDir}, tarEntry{name: "x/y", typ: tar.TypeSymlink, link: "."},
		tarEntry{name: "x/y/z", typ: tar.TypeSymlink, link: "../../q"}, tarEntry{name: "x/y/z/w", typ: tar.TypeReg, body: "x"}))
	f.Add(seed(tarEntry{name: "l", typ: tar.TypeSymlink, link: ".."}, tarEntry{name: "l/out", typ: tar.TypeReg, body: "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "in")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		untar(bytes.NewReader(data), dir)
		entries, _ := os.ReadDir(base)
		if len(entries) != 1 {
			t.Fatalf("wrote outside: %v", entries)
		}
	})
}
