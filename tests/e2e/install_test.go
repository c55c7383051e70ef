package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// The real binaries end to end: an operator makes a signing key and
// uploads a tar release with strata ctl; the real strata-agent, trusting
// that key (--trusted-key, the .pub file) and installing into a
// throwaway root (--install-root), installs it when the operator calls
// install by name and version.
func TestAgentInstallEndToEnd(t *testing.T) {
	n := initDeviceNode(t, "probe1")
	keyFile := filepath.Join(t.TempDir(), "release.key")
	if out, err := n.ctl("releases", "keygen", "--out", keyFile); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	cfg, err := config.Load(n.config())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Software.TrustedKeys = []string{keyFile + ".pub"}
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.config(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{"hello.txt": "hello\n", "health.sh": "#!/bin/sh\ntest -f hello.txt\n"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	art := filepath.Join(t.TempDir(), "app.tar")
	os.WriteFile(art, buf.Bytes(), 0o644)
	if out, err := n.ctl("artifacts", "upload", art, "--release", "app", "--version", "1.0", "--os", runtime.GOOS,
		"--arch", runtime.GOARCH, "--type", "tar", "--key", keyFile, "--no-progress"); err != nil {
		t.Fatalf("upload: %v %s", err, out)
	}

	state, root := t.TempDir(), t.TempDir()
	startAgent(t, n, state, "--trusted-key", keyFile+".pub", "--install-root", root)
	admin := n.admin()
	ctx := context.Background()
	var path string
	tstest.WaitForErr(t, e2eTimeout, "the agent declared install", func() (bool, error) {
		ds, err := admin.ListDevices(ctx)
		if err != nil || len(ds) != 1 {
			return false, err
		}
		path = ds[0].Path
		c, err := admin.GetContext(ctx, path)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(c.Functions, func(f client.Function) bool { return f.Name == "install" }), nil
	})
	job, _, err := admin.CallFunction(ctx, path, "install", json.RawMessage(`{"release":"app","version":"1.0"}`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, e2eTimeout, "the install finished", func() (bool, error) {
		j, err := admin.GetJob(ctx, job.ID)
		if err != nil {
			return false, err
		}
		job = *j
		return j.State.Final(), nil
	})
	if job.State != "succeeded" {
		t.Fatalf("install: %s %s", job.State, job.Error)
	}
	if b, err := os.ReadFile(filepath.Join(root, "current", "app", "hello.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("current/app/hello.txt: %q %v", b, err)
	}
	tstest.WaitForErr(t, e2eTimeout, "the inventory shows app 1.0", func() (bool, error) {
		c, err := admin.GetContext(ctx, path)
		if err != nil {
			return false, err
		}
		return string(c.Variables["software.app"].Value) == `"1.0"`, nil
	})
}
