package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/releases"
	"github.com/strata-dm/strata/probes/sim"
)

// softwareNode starts a node trusting pub, with a federation listener
// when listen, an MQTT listener, and edit applied to its config.
func softwareNode(t *testing.T, name string, listen bool, pub ed25519.PublicKey, edit func(*config.Config)) *probeNode {
	t.Helper()
	dir := t.TempDir()
	id, err := WriteIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = name, dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	if listen {
		cfg.Federation.Addr = "127.0.0.1:0"
	}
	cfg.Software.TrustedKeys = []string{base64.StdEncoding.EncodeToString(pub)}
	if edit != nil {
		edit(&cfg)
	}
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	p := &probeNode{fedNode: fedNode{file: file}, token: id.AdminToken, ca: id.CAPEM}
	p.start(t)
	return p
}

// testRelease signs and uploads to n a release of one binary artifact
// per arch, of the sizes given; it returns the artifacts' bytes by digest.
func testRelease(t *testing.T, cl *client.Client, key ed25519.PrivateKey, name, version string, sizes map[string]int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: name, Version: version, Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339)}
	data := map[string][]byte{}
	for arch, size := range sizes {
		b := make([]byte, size)
		rand.Read(b)
		h := sha256.Sum256(b)
		sum := hex.EncodeToString(h[:])
		data[sum] = b
		m.Artifacts = append(m.Artifacts, apitypes.Artifact{OS: "linux", Arch: arch, Type: apitypes.ArtifactBinary, Size: int64(size), SHA256: sum})
	}
	sm, err := m.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.PutRelease(ctx, name, version, sm); err != nil {
		t.Fatal(err)
	}
	for sum, b := range data {
		if _, err := cl.UploadArtifact(ctx, name, version, sum, 0, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

func total(data map[string][]byte) int64 {
	var n int64
	for _, b := range data {
		n += int64(len(b))
	}
	return n
}

// waitCached waits until n holds every artifact of data and fetches
// nothing more.
func waitCached(t *testing.T, n *Node, data map[string][]byte) releases.CacheState {
	t.Helper()
	var st releases.CacheState
	tstest.WaitForErr(t, bulkWait, n.cfg.Name+" caches the artifacts", func() (bool, error) {
		var err error
		if st, err = n.releases.Cache(context.Background()); err != nil || st.Fetching > 0 {
			return false, err
		}
		for sum := range data {
			if _, err := n.objects.Stat(context.Background(), sum); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	return st
}

// TestSoftwareAcrossTiers: a rollout of a release issued at hq reaches
// the devices of two probes under a regional node; each tier fetches each
// artifact once from the tier above, devices download it from their
// probe, a probe cannot fetch what was not sent to it, staging brings a
// release down ahead, and the cache keeps to its budget without evicting
// what is staged.
func TestSoftwareAcrossTiers(t *testing.T) {
	ctx := context.Background()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	hq := softwareNode(t, "hq", true, pub, nil)
	eu := softwareNode(t, "eu", true, pub, nil)
	p1 := softwareNode(t, "p1", false, pub, nil)
	p2 := softwareNode(t, "p2", false, pub, func(c *config.Config) { c.Software.CacheBudget = "300KB" })
	var devs []*simDevice
	for _, p := range []*probeNode{p1, p2} {
		d := enrollSim(t, p.n, "acme", "hw-"+p.n.cfg.Name, "plant-7", "linux")
		if _, err := p.n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: d.e.Path,
			Functions: []model.Function{{Name: releases.InstallFunction}}, SetFunctions: true}); err != nil {
			t.Fatal(err)
		}
		d.connect(t, p.n)
		devs = append(devs, d)
	}
	joinNode(t, &eu.fedNode, &hq.fedNode, "eu", "operate")
	joinNode(t, &p1.fedNode, &eu.fedNode, "p1", "operate", "/devices")
	joinNode(t, &p2.fedNode, &eu.fedNode, "p2", "operate", "/devices")
	for i, p := range []string{"p1", "p2"} {
		path := "/peers/eu/peers/" + p + string(devs[i].e.Path)
		tstest.WaitForErr(t, bulkWait, path+" at hq", func() (bool, error) {
			_, err := hq.admin.GetContext(ctx, path)
			return err == nil, err
		})
	}
	fw := testRelease(t, hq.admin, key, "fw", "1.0", map[string]int{"amd64": 300 << 10, "arm64": 200 << 10})

	// The rollout: an install of fw 1.0 on every device below eu.
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: releases.InstallFunction,
		Args:   json.RawMessage(`{"release":"fw","version":"1.0"}`),
		Target: client.BulkTarget{Filter: map[string]string{"path": "/peers/eu", "type": "device"}}})
	if err != nil {
		t.Fatal(err)
	}
	if done := waitBulk(t, hq.admin, b.ID, client.BulkDone); done.Counters.Succeeded != 2 {
		t.Fatalf("rollout: %+v", done.Counters)
	}
	// The device got the signed manifest, which verifies.
	j, err := p1.n.jobs.Get(jobs.BulkJobID(b.ID, devs[0].e.DeviceID))
	if err != nil {
		t.Fatal(err)
	}
	ins, err := releases.ParseInstall(j.Args)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ins.Release.Verify([]ed25519.PublicKey{pub}); err != nil || m.Name != "fw" || m.Version != "1.0" {
		t.Fatalf("the device's install args: %s: %v", j.Args, err)
	}

	// A rollout alone fetches nothing (these test devices download
	// nothing): a tier fetches what is asked of it.
	for _, n := range []*Node{hq.n, eu.n, p1.n, p2.n} {
		if st, _ := n.releases.Cache(ctx); st.Fetched != 0 {
			t.Errorf("%s fetched %d bytes for a rollout no device downloads", n.cfg.Name, st.Fetched)
		}
	}

	// A device downloads from its probe: p1 fetches each artifact from eu,
	// which fetches it from hq, once.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p1.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	dl := sim.Downloader{API: "https://" + p1.n.APIAddr(), Client: hc, Backoff: time.Millisecond}
	creds := sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: devs[0].e.DeviceID, MQTTUsername: devs[0].e.MQTTUsername, MQTTPassword: devs[0].e.MQTTPassword}}
	for range 2 {
		for sum, want := range fw {
			var out bytes.Buffer
			if _, err := dl.Download(ctx, creds, sum, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("download from p1: %d bytes, %v", out.Len(), err)
			}
		}
	}
	size := total(fw)
	for _, n := range []*Node{eu.n, p1.n} {
		if st := waitCached(t, n, fw); st.Fetched != size {
			t.Errorf("%s fetched %d bytes, the release has %d", n.cfg.Name, st.Fetched, size)
		}
	}
	if st, _ := hq.n.releases.Cache(ctx); st.Fetched != 0 || st.OriginObjects != 2 {
		t.Errorf("hq's cache: %+v", st)
	}

	// Staging: tools 2.0 goes to p1 only, ahead of any rollout.
	tools := testRelease(t, hq.admin, key, "tools", "2.0", map[string]int{"amd64": 100 << 10})
	res, err := hq.admin.StageRelease(ctx, "tools", "2.0", []string{"/peers/eu/peers/p1"})
	if err != nil || len(res) != 1 || res[0].Error != "" {
		t.Fatalf("stage: %+v %v", res, err)
	}
	waitCached(t, p1.n, tools)
	// p2 was not sent tools: it cannot fetch it from eu, though eu has it.
	var sum string
	for s := range tools {
		sum = s
	}
	if _, _, err := p2.n.fed.Fetch(ctx, "eu", sum, 0); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("p2 fetching an artifact not sent to it: %v", err)
	}
	// A tenant operator stages nothing, and a tenant user sees no caches.
	alice := tenantClient(t, &hq.fedNode, "alice", "acme", auth.RoleOperator)
	if _, err := alice.StageRelease(ctx, "tools", "2.0", []string{"/peers/eu/peers/p2"}); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a tenant operator staging: %v", err)
	}
	if _, err := alice.SoftwareCache(ctx); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a tenant user reading the caches: %v", err)
	}
	// Over a link too: a consumer asking for a cache report on behalf of
	// a tenant operator is refused by the provider.
	if _, err := hq.n.fed.Info(ctx, "eu", federation.Identity{User: "alice", Tenant: "acme"}, infoCache); !errors.Is(err, federation.ErrForbidden) {
		t.Fatalf("a cache report over the link for a tenant operator: %v", err)
	}

	// The caches, from hq.
	tiers, err := hq.admin.SoftwareCache(ctx)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]apitypes.CacheTier{}
	for _, tr := range tiers {
		paths[tr.Path] = tr
	}
	if len(tiers) != 4 || paths["/"].Node != "hq" || paths["/peers/eu/peers/p1"].Objects != 3 || paths["/peers/eu"].FetchedBytes != size+total(tools) ||
		paths["/peers/eu/peers/p2"].BudgetBytes != 300_000 {
		t.Fatalf("cache tiers: %+v", tiers)
	}

	// p2's budget (300 kB) is below fw's size (500 KiB). Staged, tools
	// (100 KiB) stays whatever the budget; fw's artifacts, fetched as a
	// device asks for them, push each other out, least recently used
	// first (never the one just fetched).
	if res, err := hq.admin.StageRelease(ctx, "tools", "2.0", []string{"/peers/eu/peers/p2"}); err != nil || res[0].Error != "" {
		t.Fatalf("stage to p2: %+v %v", res, err)
	}
	waitCached(t, p2.n, tools)
	pool2 := x509.NewCertPool()
	pool2.AppendCertsFromPEM(p2.ca)
	hc2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool2}}}
	t.Cleanup(hc2.CloseIdleConnections)
	dl2 := sim.Downloader{API: "https://" + p2.n.APIAddr(), Client: hc2, Backoff: 10 * time.Millisecond}
	creds2 := sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: devs[1].e.DeviceID, MQTTUsername: devs[1].e.MQTTUsername, MQTTPassword: devs[1].e.MQTTPassword}}
	download2 := func(sum string) {
		t.Helper()
		var out bytes.Buffer
		if _, err := dl2.Download(ctx, creds2, sum, &out); err != nil || !bytes.Equal(out.Bytes(), fw[sum]) {
			t.Fatalf("download from p2: %d bytes, %v", out.Len(), err)
		}
	}
	var sums []string
	for sum := range fw {
		sums = append(sums, sum)
	}
	download2(sums[0])
	download2(sums[1])
	st, err := p2.n.releases.Cache(ctx)
	if err != nil || st.Objects != 2 || st.Pinned != 1 || st.Fetched != size+total(tools) {
		t.Fatalf("p2's cache after both downloads: %+v %v", st, err)
	}
	if _, err := p2.n.objects.Stat(ctx, sums[0]); err == nil {
		t.Fatalf("p2 kept %s, past its budget", sums[0])
	}
	// Asked for again, it comes back from eu.
	download2(sums[0])
	if st, _ := p2.n.releases.Cache(ctx); st.Fetched != size+total(tools)+int64(len(fw[sums[0]])) {
		t.Errorf("p2 fetched %d bytes in all", st.Fetched)
	}
}
