package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/objects/s3test"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// editConfig rewrites n's config file through edit.
func editConfig(t *testing.T, n *nodeDir, edit func(*config.Config)) {
	t.Helper()
	cfg, err := config.Load(n.config())
	if err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.config(), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// buildDeb builds a Debian package of name and version holding
// /opt/<name>/VERSION, with dpkg-deb.
func buildDeb(t *testing.T, name, version string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	for dir, files := range map[string]map[string]string{
		"DEBIAN":      {"control": fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: Strata tests <tests@strata.invalid>\nDescription: a test package\n", name, version)},
		"opt/" + name: {"VERSION": version + "\n"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for f, body := range files {
			if err := os.WriteFile(filepath.Join(root, dir, f), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(t.TempDir(), name+"_"+version+".deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}

// buildTar builds a .tar.gz release of version: VERSION, a blob of size
// random bytes, install.sh (which leaves a mark in the install root) and
// health.sh.
func buildTar(t *testing.T, version string, size int) string {
	t.Helper()
	blob := make([]byte, size)
	rand.Read(blob)
	out := filepath.Join(t.TempDir(), "app-"+version+".tar.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for _, e := range []struct {
		name string
		mode int64
		body []byte
	}{
		{"VERSION", 0o644, []byte(version + "\n")},
		{"blob.bin", 0o644, blob},
		{"install.sh", 0o755, []byte("#!/bin/sh\necho \"$STRATA_RELEASE $STRATA_VERSION\" > \"$STRATA_INSTALL_ROOT/installed-$STRATA_VERSION\"\n")},
		{"health.sh", 0o755, []byte("#!/bin/sh\ntest -f VERSION\n")},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	zw.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The whole of software distribution with real processes: HQ keeps
// artifacts in an S3-compatible store (versitygw), a regional node and two
// probes below it; a real strata-agent on each probe (one installs the
// .deb with dpkg, one the tar, with no package manager on its PATH) and
// simulated devices. A rollout of a signed release reaches every device;
// each tier fetches each artifact exactly once; the agents install into
// their test roots; a download cut in the middle resumes; a byte flipped
// in a probe's cached copy is refused by the agent and reported; an older
// version is refused as a downgrade.
func TestSoftwareEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dpkg-deb is missing: scripts/install-test-deps.sh installs it")
		}
		t.Skip("dpkg-deb is missing (apt-get install dpkg-dev, or scripts/install-test-deps.sh)")
	}
	gw := s3test.Start(t)
	gw.CreateBucket(t, "artifacts")
	ctx := context.Background()
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "release.key")
	strata(t, "ctl", "releases", "keygen", "--out", key)
	pub := key + ".pub"
	secret := filepath.Join(keyDir, "s3.secret")
	if err := os.WriteFile(secret, []byte(gw.SecretKey), 0o600); err != nil {
		t.Fatal(err)
	}

	hq := initNode(t, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	eu := initNode(t, "eu", "--role", "regional", "--federation-addr", freeUDP(t))
	p1 := initDeviceNode(t, "p1", "--role", "probe")
	p2 := initDeviceNode(t, "p2", "--role", "probe")
	for _, n := range []*nodeDir{hq, eu, p1, p2} {
		editConfig(t, n, func(c *config.Config) {
			c.Software.TrustedKeys = []string{pub}
			if n == hq {
				c.Objects = config.Objects{Kind: config.ObjectsS3, Endpoint: gw.Endpoint, Bucket: "artifacts", Region: "us-east-1",
					PathStyle: true, AccessKey: gw.AccessKey, SecretKeyFile: secret}
			}
		})
		fastLinks(t, n)
		n.start()
	}
	eu.joinTo(fedAddr(t, hq), hq.peerToken("eu", "operate"))
	p1.joinTo(fedAddr(t, eu), eu.peerToken("p1", "operate"), "/devices")
	p2.joinTo(fedAddr(t, eu), eu.peerToken("p2", "operate"), "/devices")
	waitConnected(t, hq.admin(), "eu", "provider")
	waitConnected(t, eu.admin(), "p1", "provider")
	waitConnected(t, eu.admin(), "p2", "provider")

	// The release: a .deb and a tar for this machine's platform, signed
	// by the operator's key.
	deb := buildDeb(t, "strata-demo", "1.1")
	tgz := buildTar(t, "1.1", 3<<20)
	upload := func(file, version, typ string) {
		t.Helper()
		if out, err := hq.ctl("artifacts", "upload", file, "--release", "app", "--version", version, "--os", "linux",
			"--arch", runtime.GOARCH, "--type", typ, "--key", key, "--no-progress"); err != nil {
			t.Fatalf("upload %s: %v\n%s", file, err, out)
		}
	}
	upload(deb, "1.1", "deb")
	upload(tgz, "1.1", "tar")
	releaseBytes := fileSize(t, deb) + fileSize(t, tgz)

	// Devices: on p1 an agent with dpkg (it takes the .deb), an agent
	// without a package manager on its PATH (it takes the tar) and three
	// simulated devices (the .deb); on p2 an agent without a package
	// manager, behind a proxy that cuts its first download in the
	// middle, and two simulated devices. Each probe's devices need both
	// artifacts.
	rootA, rootB, rootC := t.TempDir(), t.TempDir(), t.TempDir()
	startAgentWith(t, p1, t.TempDir(), agentRun{group: "agents-deb"}, "--trusted-key", pub, "--install-root", rootA, "--log-level", "debug")
	bin := t.TempDir()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	os.Symlink(sh, filepath.Join(bin, "sh"))
	noPackages := []string{"PATH=" + bin, "HOME=" + t.TempDir()}
	startAgentWith(t, p1, t.TempDir(), agentRun{group: "agents-tar", env: noPackages}, "--trusted-key", pub, "--install-root", rootC, "--log-level", "debug")
	cut, err := tcpproxy.New("127.0.0.1:0", p2.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cut.Close() })
	cut.CutAfter(1 << 20)
	startAgentWith(t, p2, t.TempDir(), agentRun{api: "https://" + cut.Addr(), group: "agents-tar", env: noPackages},
		"--trusted-key", pub, "--install-root", rootB, "--log-level", "debug")
	startSims(t, p1, 3, "e2e1", "--trusted-key", pub)
	startSims(t, p2, 2, "e2e2", "--trusted-key", pub)
	admin := hq.admin()
	const devices = 8
	tstest.WaitForErr(t, e2eTimeout, "eight devices offering install at hq", func() (bool, error) {
		page, err := admin.Search(ctx, client.SearchQuery{Path: "/peers/eu", Type: "device"})
		if err != nil {
			return false, err
		}
		n := 0
		for _, d := range page.Contexts {
			for _, f := range d.Functions {
				if f.Name == "install" {
					n++
				}
			}
		}
		return n == devices, nil
	})

	// The rollout, as an operator starts it.
	out, err := hq.ctl("-o", "json", "jobs", "run", "install", "--arg", `release="app"`, "--arg", `version="1.1"`,
		"--filter", "path=/peers/eu", "--filter", "type=device", "--waves", "40,60")
	if err != nil {
		t.Fatalf("ctl jobs run install: %v\n%s", err, out)
	}
	var job client.BulkJob
	if err := json.Unmarshal([]byte(out), &job); err != nil {
		t.Fatalf("ctl printed %q: %v", out, err)
	}
	var done *client.BulkJob
	tstest.WaitForErr(t, 2*e2eTimeout, "the rollout done", func() (bool, error) {
		b, err := admin.GetBulkJob(ctx, job.ID)
		if err != nil {
			return false, err
		}
		done = b
		return b.State == client.BulkDone, nil
	})
	if done.Counters.Total != devices || done.Counters.Succeeded != devices {
		failures, _ := admin.BulkFailures(ctx, job.ID, "", 100)
		t.Fatalf("rollout: %+v; failures %+v", done.Counters, failures)
	}

	// Each tier fetched each artifact exactly once from the tier above,
	// when its first device (or the first node below) asked for it.
	want := map[string]struct {
		bytes   int64
		objects int
	}{"/": {0, 0}, "/peers/eu": {releaseBytes, 2}, "/peers/eu/peers/p1": {releaseBytes, 2}, "/peers/eu/peers/p2": {releaseBytes, 2}}
	tiers, err := admin.SoftwareCache(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range tiers {
		w, ok := want[tr.Path]
		if !ok || tr.FetchedBytes != w.bytes || tr.Objects != w.objects || (tr.Path == "/" && tr.OriginObjects != 2) {
			t.Errorf("tier %s: fetched %d bytes, %d objects; want %d, %d (%+v)", tr.Path, tr.FetchedBytes, tr.Objects, w.bytes, w.objects, tr)
		}
	}
	if len(tiers) != 4 {
		t.Errorf("tiers: %+v", tiers)
	}
	// Over each link, one fetch per artifact, carrying exactly its bytes.
	for _, l := range []struct {
		consumer *nodeDir
		peer     string
		fetches  float64
		bytes    int64
	}{{hq, "eu", 2, releaseBytes}, {eu, "p1", 2, releaseBytes}, {eu, "p2", 2, releaseBytes}} {
		m := scrape(t, l.consumer)
		served := m[`strata_federation_artifact_fetches_total{outcome="served",peer="`+l.peer+`"}`]
		sent := m[`strata_federation_artifact_bytes_total{direction="provider",peer="`+l.peer+`"}`]
		if served != l.fetches || int64(sent) != l.bytes {
			t.Errorf("link to %s: %v fetches served, %v bytes sent; want %v and %d", l.peer, served, sent, l.fetches, l.bytes)
		}
	}

	// The agents installed, into their roots.
	if b, err := os.ReadFile(filepath.Join(rootA, "opt", "strata-demo", "VERSION")); err != nil || string(b) != "1.1\n" {
		t.Errorf("the .deb on p1's agent: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rootB, "current", "app", "VERSION")); err != nil || string(b) != "1.1\n" {
		t.Errorf("the tar on p2's agent: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rootC, "current", "app", "VERSION")); err != nil || string(b) != "1.1\n" {
		t.Errorf("the tar on p1's second agent: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rootB, "installed-1.1")); err != nil || string(b) != "app 1.1\n" {
		t.Errorf("install.sh on p2's agent: %q %v", b, err)
	}
	// p2's agent was cut off in the middle of its download and resumed.
	agentA, agentB := agentOn(t, p1, "agents-deb"), agentOn(t, p2, "agents-tar")
	var res struct {
		Resumed bool   `json:"resumed"`
		Type    string `json:"type"`
		Version string `json:"version"`
	}
	j, err := p2.admin().GetJob(ctx, jobs.BulkJobID(job.ID, path.Base(agentB)))
	if err != nil || json.Unmarshal(j.Result, &res) != nil || !res.Resumed || res.Type != "tar" || res.Version != "1.1" {
		t.Errorf("p2's agent's job: %+v %v", j, err)
	}
	if cut.Stats().Accepted < 2 {
		t.Errorf("the proxy in front of p2 saw %d connections: the download did not resume", cut.Stats().Accepted)
	}

	// A byte flipped in p1's cached copy: the agent refuses it, and the
	// failure is reported at hq.
	deb12 := buildDeb(t, "strata-demo", "1.2")
	upload(deb12, "1.2", "deb")
	if out, err := hq.ctl("releases", "stage", "app", "1.2", "--peer", "/peers/eu/peers/p1"); err != nil {
		t.Fatalf("stage: %v\n%s", err, out)
	}
	sum := fileSHA256(t, deb12)
	var cached string
	tstest.WaitFor(t, e2eTimeout, "app 1.2 cached at p1", func() bool {
		cached = findFile(p1.dir, sum)
		return cached != ""
	})
	flipByte(t, cached, 100)
	final := func(devicePath string, version string) *client.Job {
		t.Helper()
		j, _, err := admin.Call(ctx, devicePath, "install", client.Call{Args: json.RawMessage(`{"release":"app","version":"` + version + `"}`), Wait: 30 * time.Second})
		if err != nil {
			t.Fatalf("install %s on %s: %v", version, devicePath, err)
		}
		jj := &j
		tstest.WaitForErr(t, e2eTimeout, "the install's job final", func() (bool, error) {
			if jobs.State(jj.State).Final() {
				return true, nil
			}
			cur, err := admin.GetJobOn(ctx, jj.Node, jj.ID)
			if err != nil {
				return false, err
			}
			jj = cur
			return jobs.State(jj.State).Final(), nil
		})
		return jj
	}
	if j := final("/peers/eu/peers/p1"+agentA, "1.2"); j.State != "failed" || !strings.Contains(j.Error, "do not match") {
		t.Errorf("install from a corrupted cache: %s %q", j.State, j.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(rootA, "opt", "strata-demo", "VERSION")); string(b) != "1.1\n" {
		t.Errorf("after refusing the corrupted package, p1's agent has %q", b)
	}

	// An older version is refused as a downgrade.
	upload(buildTar(t, "1.0", 64<<10), "1.0", "tar")
	if j := final("/peers/eu/peers/p2"+agentB, "1.0"); j.State != "failed" || !strings.Contains(j.Error, "downgrade refused") {
		t.Errorf("install of an older version: %s %q", j.State, j.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(rootB, "current", "app", "VERSION")); string(b) != "1.1\n" {
		t.Errorf("after refusing the downgrade, p2's agent has %q", b)
	}
	t.Logf("rollout of %d bytes to %d devices over 3 tiers: %+v", releaseBytes, devices, done.Counters)
}

// agentOn returns the path on n of the device of the agent running there
// enrolled in group.
func agentOn(t *testing.T, n *nodeDir, group string) string {
	t.Helper()
	var p string
	tstest.WaitForErr(t, e2eTimeout, "the agent's device", func() (bool, error) {
		page, err := n.admin().Search(context.Background(), client.SearchQuery{Type: "device", Labels: map[string]string{"group": group}})
		if err != nil || len(page.Contexts) != 1 {
			return false, err
		}
		p = page.Contexts[0].Path
		return true, nil
	})
	return p
}

func fileSHA256(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// findFile returns the path of the file named name below dir, or "".
func findFile(dir, name string) string {
	var found string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = p
		}
		return nil
	})
	return found
}

// flipByte inverts the byte at offset of file.
func flipByte(t *testing.T, file string, offset int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, offset); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, offset); err != nil {
		t.Fatal(err)
	}
}

// scrape reads n's /metrics into a map of series (name{labels}) to value.
func scrape(t *testing.T, n *nodeDir) map[string]float64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(n.caPEM())
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + n.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func fileSize(t *testing.T, file string) int64 {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
