package node

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/probes/agent"
)

// installHarness is a node with a trusted release key and a real
// strata-agent (the library, in process) enrolled on it over HTTPS and
// connected over MQTT/TLS, installing into a throwaway root.
type installHarness struct {
	p     *probeNode
	key   ed25519.PrivateKey
	dir   string // the node's directory
	state string // the agent's state directory
	root  string // the agent's install root
	path  string // the device's context
}

func startInstallHarness(t *testing.T) *installHarness {
	t.Helper()
	ctx := context.Background()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	id, err := WriteIdentity(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = "probe", dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Software.TrustedKeys = []string{base64.StdEncoding.EncodeToString(pub)}
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	p := &probeNode{fedNode: fedNode{file: file}, token: id.AdminToken, ca: id.CAPEM}
	p.start(t)

	tok, _, err := p.n.devices.CreateToken(ctx, &auth.Principal{User: "admin", System: true}, devices.TokenSpec{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := agent.Enroll(ctx, agent.EnrollRequest{API: "https://" + p.n.APIAddr(), Token: tok, HardwareID: "hw-install", CAPEM: p.ca})
	if err != nil {
		t.Fatal(err)
	}
	h := &installHarness{p: p, key: key, dir: dir, state: t.TempDir(), root: t.TempDir(), path: creds.Path}
	if err := agent.SaveCredentials(h.state, creds); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		StateDir: h.state, Logger: tstest.Logger(t).With("test", "agent"),
		TrustedKeys: []ed25519.PublicKey{pub}, InstallRoot: h.root,
		// Every download is cut once after 64 KiB and resumed.
		DownloadInterruptAt: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(sctx)
	})
	tstest.WaitForErr(t, time.Minute, "the agent declared install", func() (bool, error) {
		c, err := p.admin.GetContext(ctx, h.path)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(c.Functions, func(f client.Function) bool { return f.Name == "install" }), nil
	})
	return h
}

// release signs a manifest of name and version with one artifact per
// (type, bytes), sends it to the node and uploads the artifacts.
func (h *installHarness) release(t *testing.T, name, version string, arts map[string][]byte) *apitypes.SignedManifest {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: name, Version: version, Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339)}
	for typ, data := range arts {
		m.Artifacts = append(m.Artifacts, apitypes.Artifact{OS: "linux", Arch: goarch(), Type: typ, Size: int64(len(data)), SHA256: sum256(data)})
	}
	sm, err := m.Sign(h.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.p.admin.PutRelease(ctx, name, version, sm); err != nil {
		t.Fatal(err)
	}
	for _, data := range arts {
		if _, err := h.p.admin.UploadArtifact(ctx, name, version, sum256(data), 0, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	return sm
}

// install creates an install job with args through the API and waits for
// its final state.
func (h *installHarness) install(t *testing.T, args apitypes.InstallArgs) client.Job {
	t.Helper()
	raw, _ := json.Marshal(args)
	return h.installRaw(t, raw)
}

// installRaw is install with the args as an operator writes them.
func (h *installHarness) installRaw(t *testing.T, raw json.RawMessage) client.Job {
	t.Helper()
	ctx := context.Background()
	job, status, err := h.p.admin.CallFunction(ctx, h.path, "install", raw, 30*time.Second)
	if err != nil || status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("install: %d %v", status, err)
	}
	tstest.WaitForErr(t, 2*time.Minute, "the install job ended", func() (bool, error) {
		j, err := h.p.admin.GetJob(ctx, job.ID)
		if err != nil {
			return false, err
		}
		job = *j
		return j.State.Final(), nil
	})
	return job
}

func installResult(t *testing.T, j client.Job) apitypes.InstallResult {
	t.Helper()
	var r apitypes.InstallResult
	if err := json.Unmarshal(j.Result, &r); err != nil {
		t.Fatalf("result %s: %v", j.Result, err)
	}
	return r
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func goarch() string {
	_, arch := agent.Platform()
	return arch
}

// tarball builds a gzip-compressed tar of files (name → content; a name
// ending in .sh is executable).
func tarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasSuffix(n, ".sh") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// appTar is a tar release of "app": a 200 KB data file (so the download
// is cut and resumed), install.sh recording its environment, and
// health.sh exiting with health.
func appTar(t *testing.T, version string, health int, data []byte) []byte {
	return tarball(t, map[string]string{
		"data.bin": string(data),
		"VERSION":  version,
		"install.sh": "#!/bin/sh\nset -e\n" +
			`echo "$STRATA_RELEASE $STRATA_VERSION prev=$STRATA_PREVIOUS_VERSION root=$STRATA_INSTALL_ROOT cwd=$(pwd)" > installed-by-script` + "\n",
		"health.sh": "#!/bin/sh\nexit " + string(rune('0'+health)) + "\n",
	})
}

func readLink(t *testing.T, p string) string {
	t.Helper()
	l, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestAgentInstallTar: the real agent installs tar releases from a real
// node: unpacked into its root, install.sh run, the current link
// switched, the download cut and resumed; a re-sent install changes
// nothing; a failing health check rolls back; a downgrade is refused
// unless allowed; a tampered copy, on the node or in the agent's
// partial download, is refused naming the digest; the inventory shows
// the version.
func TestAgentInstallTar(t *testing.T) {
	h := startInstallHarness(t)
	ctx := context.Background()
	data := make([]byte, 200_000)
	rand.Read(data)

	// 1.0: installed, the download cut at 64 KiB and resumed.
	tar10 := appTar(t, "1.0", 0, data)
	v10 := h.release(t, "app", "1.0", map[string][]byte{"tar": tar10})
	j := h.install(t, apitypes.InstallArgs{Release: *v10})
	if j.State != apitypes.JobSucceeded {
		t.Fatalf("install 1.0: %s %s", j.State, j.Error)
	}
	r := installResult(t, j)
	if r.Name != "app" || r.Version != "1.0" || r.Previous != "" || r.Type != "tar" || r.SHA256 != sum256(tar10) ||
		r.Bytes != int64(len(tar10)) || !r.Resumed || r.AlreadyInstalled {
		t.Fatalf("result of 1.0: %+v", r)
	}
	dir10 := filepath.Join(h.root, "releases", "app", "1.0")
	if got, _ := os.ReadFile(filepath.Join(dir10, "data.bin")); !bytes.Equal(got, data) {
		t.Fatal("data.bin did not land in the release directory")
	}
	script, _ := os.ReadFile(filepath.Join(dir10, "installed-by-script"))
	if want := "app 1.0 prev= root=" + h.root + " cwd=" + dir10 + "\n"; string(script) != want {
		t.Fatalf("install.sh wrote %q, want %q", script, want)
	}
	if l := readLink(t, filepath.Join(h.root, "current", "app")); l != "../releases/app/1.0" {
		t.Fatalf("current/app -> %s", l)
	}

	// The same release again (a new job): nothing is reinstalled.
	os.Remove(filepath.Join(dir10, "installed-by-script"))
	j = h.install(t, apitypes.InstallArgs{Release: *v10})
	if r := installResult(t, j); j.State != apitypes.JobSucceeded || !r.AlreadyInstalled || r.Bytes != 0 {
		t.Fatalf("install 1.0 again: %s %s %+v", j.State, j.Error, r)
	}
	if _, err := os.Stat(filepath.Join(dir10, "installed-by-script")); err == nil {
		t.Fatal("1.0 was installed again")
	}

	// 2.0 fails its health.sh: rolled back to 1.0.
	v20 := h.release(t, "app", "2.0", map[string][]byte{"tar": appTar(t, "2.0", 1, data)})
	j = h.install(t, apitypes.InstallArgs{Release: *v20})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "health check failed") || !strings.Contains(j.Error, "rolled back to 1.0") {
		t.Fatalf("install 2.0 with a failing health check: %s %q", j.State, j.Error)
	}
	if l := readLink(t, filepath.Join(h.root, "current", "app")); l != "../releases/app/1.0" {
		t.Fatalf("after the rollback current/app -> %s", l)
	}
	if _, err := os.Stat(filepath.Join(h.root, "releases", "app", "2.0")); !os.IsNotExist(err) {
		t.Fatalf("the failed 2.0 stayed: %v", err)
	}

	// A check given in the job's args fails too: rolled back.
	v15 := h.release(t, "app", "1.5", map[string][]byte{"tar": appTar(t, "1.5", 0, data)})
	j = h.install(t, apitypes.InstallArgs{Release: *v15, Check: `test "$STRATA_VERSION" = 9.9`})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "health check failed") || !strings.Contains(j.Error, "rolled back to 1.0") {
		t.Fatalf("install 1.5 with a failing check: %s %q", j.State, j.Error)
	}

	// An older version: refused unless allowed.
	v09 := h.release(t, "app", "0.9", map[string][]byte{"tar": appTar(t, "0.9", 0, data)})
	j = h.install(t, apitypes.InstallArgs{Release: *v09})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "downgrade refused") {
		t.Fatalf("install 0.9: %s %q", j.State, j.Error)
	}

	// The node's copy of 1.1 is tampered with: refused, naming the digest.
	tar11 := appTar(t, "1.1", 0, data)
	v11 := h.release(t, "app", "1.1", map[string][]byte{"tar": tar11})
	flipStoredByte(t, h.dir, sum256(tar11))
	j = h.install(t, apitypes.InstallArgs{Release: *v11})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "do not match") || !strings.Contains(j.Error, sum256(tar11)) {
		t.Fatalf("install of a tampered copy: %s %q", j.State, j.Error)
	}
	if l := readLink(t, filepath.Join(h.root, "current", "app")); l != "../releases/app/1.0" {
		t.Fatalf("after a tampered copy current/app -> %s", l)
	}

	// The agent's own partial download of 1.2 has a flipped byte: refused
	// and dropped, so the next job downloads it whole and installs it.
	tar12 := appTar(t, "1.2", 0, data)
	v12 := h.release(t, "app", "1.2", map[string][]byte{"tar": tar12})
	part := bytes.Clone(tar12[:50_000])
	part[1000] ^= 0x40
	os.MkdirAll(filepath.Join(h.state, "downloads"), 0o700)
	partFile := filepath.Join(h.state, "downloads", sum256(tar12)+".part")
	if err := os.WriteFile(partFile, part, 0o600); err != nil {
		t.Fatal(err)
	}
	j = h.install(t, apitypes.InstallArgs{Release: *v12})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "do not match") || !strings.Contains(j.Error, sum256(tar12)) {
		t.Fatalf("install from a tampered partial download: %s %q", j.State, j.Error)
	}
	j = h.install(t, apitypes.InstallArgs{Release: *v12})
	if r := installResult(t, j); j.State != apitypes.JobSucceeded || r.Previous != "1.0" || r.Version != "1.2" {
		t.Fatalf("install 1.2 after the tampered partial: %s %q %+v", j.State, j.Error, r)
	}
	if l := readLink(t, filepath.Join(h.root, "current", "app")); l != "../releases/app/1.2" {
		t.Fatalf("current/app -> %s", l)
	}

	// The inventory shows it: the software list and software.app.
	tstest.WaitForErr(t, time.Minute, "the inventory shows app 1.2", func() (bool, error) {
		c, err := h.p.admin.GetContext(ctx, h.path)
		if err != nil {
			return false, err
		}
		var sw []apitypes.InstalledSoftware
		json.Unmarshal(c.Variables["software"].Value, &sw)
		return len(sw) == 1 && sw[0].Name == "app" && sw[0].Version == "1.2" && sw[0].Type == "tar" &&
			string(c.Variables["software.app"].Value) == `"1.2"`, nil
	})

	// Allowed, the downgrade to 0.9 goes through; the operator names the
	// release and the node puts its signed manifest in the device's args.
	j = h.installRaw(t, json.RawMessage(`{"release":"app","version":"0.9","downgrade":true}`))
	if r := installResult(t, j); j.State != apitypes.JobSucceeded || r.Previous != "1.2" || r.Version != "0.9" {
		t.Fatalf("allowed downgrade: %s %q %+v", j.State, j.Error, r)
	}
}

// flipStoredByte flips a byte of the node's stored object sum (fs store).
func flipStoredByte(t *testing.T, dir, sum string) {
	t.Helper()
	var found string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == sum {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("object %s not found under %s", sum, dir)
	}
	b, err := os.ReadFile(found)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(found, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// debPackage builds a .deb of package hello-strata at version with dpkg-deb:
// /opt/hello/VERSION and a postinst that records it ran.
func debPackage(t *testing.T, version string) []byte {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pkg")
	for _, d := range []string{"DEBIAN", "opt/hello"} {
		os.MkdirAll(filepath.Join(pkg, d), 0o755)
	}
	os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"), []byte("Package: hello-strata\nVersion: "+version+
		"\nArchitecture: all\nMaintainer: Strata tests <tests@strata.invalid>\nDescription: install test package\n"), 0o644)
	os.WriteFile(filepath.Join(pkg, "DEBIAN", "postinst"), []byte("#!/bin/sh\necho \"$1 "+version+"\" >> \"$DPKG_ROOT/opt/hello/postinst-ran\"\n"), 0o755)
	os.WriteFile(filepath.Join(pkg, "opt", "hello", "VERSION"), []byte(version+"\n"), 0o644)
	out := filepath.Join(dir, "hello.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v: %s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestAgentInstallDeb: a .deb built here is installed by the real agent
// with dpkg into its throwaway root (its own dpkg database there); a
// second version failing its check is rolled back by reinstalling the
// kept first package.
func TestAgentInstallDeb(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install dpkg): %v", tool, err)
		}
	}
	h := startInstallHarness(t)
	deb1 := debPackage(t, "1.0")
	v1 := h.release(t, "hello", "1.0", map[string][]byte{"deb": deb1, "tar": tarball(t, map[string]string{"x": "y"})})
	j := h.install(t, apitypes.InstallArgs{Release: *v1})
	if r := installResult(t, j); j.State != apitypes.JobSucceeded || r.Type != "deb" || r.SHA256 != sum256(deb1) {
		t.Fatalf("install deb 1.0: %s %q %+v", j.State, j.Error, r)
	}
	version := func() string {
		b, _ := os.ReadFile(filepath.Join(h.root, "opt", "hello", "VERSION"))
		return strings.TrimSpace(string(b))
	}
	if v := version(); v != "1.0" {
		t.Fatalf("/opt/hello/VERSION in the root: %q", v)
	}
	if b, _ := os.ReadFile(filepath.Join(h.root, "opt", "hello", "postinst-ran")); string(b) != "configure 1.0\n" {
		t.Fatalf("postinst: %q", b)
	}
	status, _ := os.ReadFile(filepath.Join(h.root, "var", "lib", "dpkg", "status"))
	if !strings.Contains(string(status), "Package: hello-strata\nStatus: install ok installed") {
		t.Fatalf("dpkg status in the root:\n%s", status)
	}

	deb2 := debPackage(t, "2.0")
	v2 := h.release(t, "hello", "2.0", map[string][]byte{"deb": deb2})
	j = h.install(t, apitypes.InstallArgs{Release: *v2, Check: `grep -q 3.0 "$STRATA_INSTALL_ROOT/opt/hello/VERSION"`})
	if j.State != apitypes.JobFailed || !strings.Contains(j.Error, "health check failed") || !strings.Contains(j.Error, "rolled back to 1.0") {
		t.Fatalf("install deb 2.0 failing its check: %s %q", j.State, j.Error)
	}
	if v := version(); v != "1.0" {
		t.Fatalf("after the rollback VERSION is %q", v)
	}
	j = h.install(t, apitypes.InstallArgs{Release: *v2, Check: `grep -q 2.0 "$STRATA_INSTALL_ROOT/opt/hello/VERSION"`})
	if r := installResult(t, j); j.State != apitypes.JobSucceeded || r.Previous != "1.0" {
		t.Fatalf("install deb 2.0: %s %q %+v", j.State, j.Error, r)
	}
	if v := version(); v != "2.0" {
		t.Fatalf("VERSION is %q", v)
	}
}
