package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/objects/s3test"
)

// releaseNode starts a real node from a folder strata init wrote, with
// extra configuration appended, and returns its config file.
func releaseNode(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq", "--api-addr", addr); code != 0 {
		t.Fatal(e)
	}
	cfgPath := filepath.Join(dir, configFile)
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(extra)
	f.Close()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Options{Config: cfg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return cfgPath
}

func testCtlReleases(t *testing.T, objectsConfig string) {
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "signing.key")
	code, out, e := runCmd(t, nil, "", "ctl", "releases", "keygen", "--out", key)
	if code != 0 || !strings.HasPrefix(out, "key ") {
		t.Fatalf("keygen: %d %q %q", code, out, e)
	}
	if code, _, _ := runCmd(t, nil, "", "ctl", "releases", "keygen", "--out", key); code == 0 {
		t.Fatal("keygen overwrote a key")
	}
	cfgPath := releaseNode(t, "software:\n  trusted_keys: ["+key+".pub]\n"+objectsConfig)

	file := filepath.Join(t.TempDir(), "agent_1.0_arm64.deb")
	data := make([]byte, 2<<20+3)
	rand.Read(data)
	os.WriteFile(file, data, 0o644)
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCmd(t, nil, "", append([]string{"ctl", "--config", cfgPath}, args...)...)
	}
	upload := []string{"artifacts", "upload", file, "--release", "agent", "--version", "1.0", "--os", "linux", "--arch", "arm64", "--type", "deb", "--key", key}
	code, out, e = ctl(upload...)
	if code != 0 || !strings.Contains(out, hexSum) || !strings.Contains(e, "created release agent 1.0") {
		t.Fatalf("upload: %d %q %q", code, out, e)
	}
	// Again: nothing to sign or send.
	if code, _, e = ctl(upload...); code != 0 || strings.Contains(e, "release agent 1.0") {
		t.Fatalf("second upload: %d %q", code, e)
	}
	// A second platform extends the release.
	file2 := filepath.Join(t.TempDir(), "agent.tar")
	os.WriteFile(file2, []byte("a tarball"), 0o644)
	code, _, e = ctl("artifacts", "upload", file2, "--release", "agent", "--version", "1.0", "--os", "linux", "--arch", "amd64", "--type", "tar", "--key", key)
	if code != 0 || !strings.Contains(e, "extended release agent 1.0") {
		t.Fatalf("second artifact: %d %q", code, e)
	}
	code, out, _ = ctl("releases", "list")
	if code != 0 || !strings.Contains(out, "agent") || !strings.Contains(out, "2       2") && !strings.Contains(out, "2  ") {
		t.Fatalf("list: %d %q", code, out)
	}
	code, out, _ = ctl("-o", "json", "releases", "show", "agent", "1.0")
	var rel client.Release
	if code != 0 || json.Unmarshal([]byte(out), &rel) != nil || len(rel.Artifacts) != 2 || !rel.Artifacts[0].Stored || !rel.Artifacts[1].Stored {
		t.Fatalf("show: %d %q", code, out)
	}

	// The bytes come back, from an offset too.
	tok, _ := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), adminTokenFile))
	ca, _ := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), caFile))
	cfg, _ := config.Load(cfgPath)
	cl, err := client.New("https://"+cfg.API.Addr, strings.TrimSpace(string(tok)), ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, off := range []int64{0, 1 << 20} {
		rc, err := cl.OpenArtifact(ctx, "agent", "1.0", hexSum, off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("download from %d: %d bytes, %v", off, len(got), err)
		}
	}

	// A resumed upload: the node holds a part, the command sends the rest.
	data3 := bytes.Repeat([]byte("strata"), 100_000)
	file3 := filepath.Join(t.TempDir(), "tool")
	os.WriteFile(file3, data3, 0o644)
	sum3 := sha256.Sum256(data3)
	up3 := []string{"artifacts", "upload", file3, "--release", "tool", "--version", "2", "--os", "linux", "--arch", "riscv64", "--type", "binary", "--key", key}
	// Upload and delete it (nothing of it is kept), then send the
	// manifest and a first part by hand, and let the command resume.
	if code, _, e := ctl(up3...); code != 0 {
		t.Fatalf("tool upload: %q", e)
	}
	if code, _, e := ctl("releases", "delete", "tool", "2"); code != 0 || !strings.Contains(e, "deleted") {
		t.Fatalf("delete: %q", e)
	}
	if _, err := cl.Release(ctx, "tool", "2"); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// The manifest again (signed by ctl), the first 1000 bytes by hand.
	if code, _, e := ctl(append(slices.Clone(up3[:len(up3)-2]), "--key", filepath.Join(keyDir, "missing"))...); code == 0 {
		t.Fatalf("a missing key was accepted: %q", e)
	}
	sm := signedFor(t, key, "tool", "2", "linux", "riscv64", "binary", data3)
	if _, _, err := cl.PutRelease(ctx, "tool", "2", sm); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UploadArtifact(ctx, "tool", "2", hex.EncodeToString(sum3[:]), 0, bytes.NewReader(data3[:1000]), 1000); err != nil {
		t.Fatal(err)
	}
	code, _, e = ctl(up3...)
	if code != 0 || !strings.Contains(e, "resuming at byte 1000") {
		t.Fatalf("resume: %d %q", code, e)
	}
	off, complete, err := cl.UploadOffset(ctx, "tool", "2", hex.EncodeToString(sum3[:]))
	if err != nil || !complete || off != int64(len(data3)) {
		t.Fatalf("after resume: %d %v %v", off, complete, err)
	}
}

// signedFor signs a one-artifact manifest with the key file.
func signedFor(t *testing.T, keyFile, name, version, os_, arch, typ string, data []byte) *client.SignedManifest {
	t.Helper()
	k, err := readSigningKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	now := time.Now().UTC()
	m := client.Manifest{Name: name, Version: version, Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339),
		Artifacts: []client.Artifact{{OS: os_, Arch: arch, Type: typ, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}}
	sm, err := m.Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

func TestCtlReleasesFS(t *testing.T) {
	testCtlReleases(t, "")
}

func TestCtlReleasesS3(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(t, "artifacts")
	secret := filepath.Join(t.TempDir(), "s3.secret")
	os.WriteFile(secret, []byte(gw.SecretKey+"\n"), 0o600)
	testCtlReleases(t, "objects:\n  kind: s3\n  endpoint: "+gw.Endpoint+"\n  bucket: artifacts\n  path_style: true\n  prefix: strata/\n"+
		"  access_key: "+gw.AccessKey+"\n  secret_key_file: "+secret+"\n")
	// The objects are in the bucket, under the prefix.
	n := 0
	filepath.Walk(filepath.Join(gw.Dir, "artifacts", "strata"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("%d objects in the bucket, want 3", n)
	}
}

// ctl releases cache lists this node's cache; stage needs its nodes, and
// one this node has no link to is reported as not reached.
func TestCtlReleasesCacheAndStage(t *testing.T) {
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "release.key")
	if code, _, e := runCmd(t, nil, "", "ctl", "releases", "keygen", "--out", key); code != 0 {
		t.Fatal(e)
	}
	cfgPath := releaseNode(t, "software:\n  trusted_keys: ["+key+".pub]\n  cache_budget: 1GiB\n")
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "--config", cfgPath}, args...)...)
	}
	code, out, e := ctl("releases", "cache")
	if code != 0 || !strings.Contains(out, "PATH") || !strings.Contains(out, "hq") || !strings.Contains(out, "1.0 GiB") {
		t.Fatalf("cache: %d %q %q", code, out, e)
	}
	code, out, _ = ctl("--output", "json", "releases", "cache")
	var tiers []client.CacheTier
	if code != 0 || json.Unmarshal([]byte(out), &tiers) != nil || len(tiers) != 1 || tiers[0].Path != "/" || tiers[0].BudgetBytes != 1<<30 {
		t.Fatalf("cache as JSON: %d %q", code, out)
	}
	if code, _, e := ctl("releases", "stage", "fw", "1.0"); code == 0 || !strings.Contains(e, "--peer") {
		t.Fatalf("stage without nodes: %d %q", code, e)
	}
	file := filepath.Join(keyDir, "fw.bin")
	os.WriteFile(file, []byte("firmware"), 0o600)
	if code, _, e := ctl("artifacts", "upload", file, "--release", "fw", "--version", "1.0", "--os", "linux", "--arch", "amd64", "--type", "binary", "--key", key, "--no-progress"); code != 0 {
		t.Fatal(e)
	}
	if code, out, e := ctl("releases", "stage", "fw", "1.0", "--peer", "/peers/nowhere"); code == 0 || !strings.Contains(out, "/peers/nowhere") || !strings.Contains(e, "1 of 1 nodes were not reached") {
		t.Fatalf("stage to a node this one has no link to: %d %q %q", code, out, e)
	}
}
