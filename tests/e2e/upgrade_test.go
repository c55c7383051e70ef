package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
)

// The previous release, as testdata/previous-release names it: a version
// and the commit it was built from. The upgrade test builds it from the
// repository's history.
var previous struct {
	once             sync.Once
	version, commit  string
	bin              string
	err              error
	missingInHistory bool
}

// previousStrata builds the previous release's strata (once per run) and
// returns its path and version.
func previousStrata(t *testing.T) (string, string) {
	t.Helper()
	previous.once.Do(func() {
		b, err := os.ReadFile("testdata/previous-release")
		if err != nil {
			previous.err = err
			return
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			previous.err = fmt.Errorf("testdata/previous-release: want VERSION COMMIT, got %q", b)
			return
		}
		previous.version, previous.commit = f[0], f[1]
		root, err := filepath.Abs("../..")
		if err != nil {
			previous.err = err
			return
		}
		if err := exec.Command("git", "-C", root, "cat-file", "-e", previous.commit+"^{commit}").Run(); err != nil {
			previous.missingInHistory = true
			previous.err = fmt.Errorf("commit %s of %s is not in this clone's history (a shallow clone?): %v", previous.commit, previous.version, err)
			return
		}
		src, err := os.MkdirTemp("", "strata-previous")
		if err != nil {
			previous.err = err
			return
		}
		archive := exec.Command("git", "-C", root, "archive", "--format=tar", previous.commit)
		untar := exec.Command("tar", "-x", "-C", src)
		var aerr, uerr bytes.Buffer
		archive.Stderr, untar.Stderr = &aerr, &uerr
		pipe, err := archive.StdoutPipe()
		if err != nil {
			previous.err = err
			return
		}
		untar.Stdin = pipe
		if err := untar.Start(); err != nil {
			previous.err = err
			return
		}
		if err := archive.Run(); err != nil {
			previous.err = fmt.Errorf("git archive %s: %v: %s", previous.commit, err, aerr.String())
			return
		}
		if err := untar.Wait(); err != nil {
			previous.err = fmt.Errorf("untar: %v: %s", err, uerr.String())
			return
		}
		previous.bin = filepath.Join(src, "strata-"+previous.version)
		build := exec.Command("go", "build", "-ldflags", "-X main.version="+previous.version+" -X main.commit="+previous.commit,
			"-o", previous.bin, "./node/cmd/strata")
		build.Dir = src
		if out, err := build.CombinedOutput(); err != nil {
			previous.err = fmt.Errorf("building %s: %v\n%s", previous.version, err, out)
		}
	})
	if previous.err != nil {
		if previous.missingInHistory && os.Getenv("CI") == "" {
			t.Skip(previous.err)
		}
		t.Fatal(previous.err)
	}
	return previous.bin, previous.version
}

// Tiers of the previous release and of this tree interoperate, both ways:
// a probe of one under an HQ of the other keeps federation (its devices
// mirrored at HQ), calls routed down, bulk jobs and software rollouts
// working.
func TestUpgradeInterop(t *testing.T) {
	prev, version := previousStrata(t)
	for _, c := range []struct {
		name            string
		hqBin, probeBin string
	}{
		{"probe " + version + " under this HQ", strataBin, prev},
		{"this probe under HQ " + version, prev, strataBin},
	} {
		t.Run(c.name, func(t *testing.T) { interop(t, c.hqBin, c.probeBin) })
	}
}

// trustKey adds key to the node's software.trusted_keys by appending to
// its config file (which either binary then reads).
func trustKey(t *testing.T, n *nodeDir, key string) {
	t.Helper()
	b, err := os.ReadFile(n.config())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "\nsoftware:") {
		t.Fatalf("%s already has a software section", n.config())
	}
	if err := os.WriteFile(n.config(), append(b, []byte("software:\n  trusted_keys: ["+key+"]\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func interop(t *testing.T, hqBin, probeBin string) {
	ctx := context.Background()
	key := filepath.Join(t.TempDir(), "release.key")
	strata(t, "ctl", "releases", "keygen", "--out", key)
	pub := key + ".pub"
	hq := initNodeWith(t, hqBin, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	probe := initNodeWith(t, probeBin, "p1", "--role", "probe", "--mqtt-addr", freeAddr(t))
	for _, n := range []*nodeDir{hq, probe} {
		trustKey(t, n, pub)
		fastLinks(t, n)
		n.start()
	}
	probe.joinTo(fedAddr(t, hq), hq.peerToken("p1", "operate"), "/devices")
	admin := hq.admin()
	waitConnected(t, admin, "p1", "provider")

	startSims(t, probe, 3, "up", "--trusted-key", pub, "--install-arch", runtime.GOARCH)

	// Federation: the probe's devices are mirrored at HQ.
	var devices []string
	tstest.WaitForErr(t, e2eTimeout, "three devices offering install at hq", func() (bool, error) {
		page, err := admin.Search(ctx, client.SearchQuery{Path: "/peers/p1", Type: "device"})
		if err != nil {
			return false, err
		}
		devices = devices[:0]
		for _, d := range page.Contexts {
			for _, f := range d.Functions {
				if f.Name == "install" {
					devices = append(devices, d.Path)
				}
			}
		}
		return len(devices) == 3, nil
	})

	// A call routed down.
	j, _, err := admin.Call(ctx, devices[0], "echo", client.Call{Args: json.RawMessage(`{"n":1}`), Wait: e2eTimeout})
	if err != nil || j.State != "succeeded" {
		t.Fatalf("call through the link: %+v %v", j, err)
	}

	// A bulk job.
	runBulk := func(function string, args ...string) *client.BulkJob {
		t.Helper()
		cmd := append([]string{"-o", "json", "jobs", "run", function, "--filter", "path=/peers/p1", "--filter", "type=device"}, args...)
		out, err := hq.ctl(cmd...)
		if err != nil {
			t.Fatalf("ctl jobs run %s: %v\n%s", function, err, out)
		}
		var b client.BulkJob
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("ctl printed %q: %v", out, err)
		}
		var done *client.BulkJob
		tstest.WaitForErr(t, e2eTimeout, function+" bulk job done", func() (bool, error) {
			cur, err := admin.GetBulkJob(ctx, b.ID)
			done = cur
			return err == nil && cur.State == client.BulkDone, err
		})
		return done
	}
	if b := runBulk("echo", "--arg", "n=2"); b.Counters.Total != 3 || b.Counters.Succeeded != 3 {
		t.Fatalf("bulk echo: %+v", b.Counters)
	}

	// A software rollout: the release uploaded at HQ, fetched by the probe
	// over the link, installed (pretend) by the devices.
	blob := filepath.Join(t.TempDir(), "app.bin")
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(i * 31)
	}
	if err := os.WriteFile(blob, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := hq.ctl("artifacts", "upload", blob, "--release", "app", "--version", "2.0", "--os", "linux",
		"--arch", runtime.GOARCH, "--type", "binary", "--key", key, "--no-progress"); err != nil {
		t.Fatalf("upload: %v\n%s", err, out)
	}
	if b := runBulk("install", "--arg", `release="app"`, "--arg", `version="2.0"`); b.Counters.Total != 3 || b.Counters.Succeeded != 3 {
		failures, _ := admin.BulkFailures(ctx, b.ID, "", 10)
		t.Fatalf("software rollout: %+v; failures %+v", b.Counters, failures)
	}
	tstest.WaitForErr(t, e2eTimeout, "the installed version at hq", func() (bool, error) {
		c, err := admin.GetContext(ctx, devices[0])
		if err != nil {
			return false, err
		}
		v, ok := c.Variables["software.app"]
		return ok && string(v.Value) == `"2.0"`, nil
	})
}
