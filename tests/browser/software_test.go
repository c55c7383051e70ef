package browser

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// artifactFile is an artifact of a test release: its platform and bytes,
// uploaded when upload is set.
type artifactFile struct {
	os, arch string
	data     []byte
	upload   bool
}

// publishRelease signs a release of files with key, created at created,
// sends it with c (its user's tenant is the release's) and uploads the
// artifacts marked so.
func publishRelease(t *testing.T, c *client.Client, key ed25519.PrivateKey, name, version string, created time.Time, files ...artifactFile) {
	t.Helper()
	ctx := context.Background()
	m := apitypes.Manifest{Name: name, Version: version, Created: created.UTC().Format(time.RFC3339), Expires: created.Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)}
	for _, f := range files {
		h := sha256.Sum256(f.data)
		m.Artifacts = append(m.Artifacts, apitypes.Artifact{OS: f.os, Arch: f.arch, Type: apitypes.ArtifactDeb, Size: int64(len(f.data)), SHA256: hex.EncodeToString(h[:])})
	}
	sm, err := m.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PutRelease(ctx, name, version, sm); err != nil {
		t.Fatalf("release %s %s: %v", name, version, err)
	}
	for _, f := range files {
		if !f.upload {
			continue
		}
		h := sha256.Sum256(f.data)
		if _, err := c.UploadArtifact(ctx, name, version, hex.EncodeToString(h[:]), 0, bytes.NewReader(f.data), int64(len(f.data))); err != nil {
			t.Fatal(err)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// userClient logs user in and returns a client with its token.
func (tn *testNode) userClient(t *testing.T, user, password string) *client.Client {
	t.Helper()
	s, err := tn.admin.Login(context.Background(), user, password, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tn.admin.WithToken(s.Token)
}

// jobPosts records the bodies of the tab's POST /api/v1/jobs requests,
// as the browser sends them (the DevTools network events); the function
// returned gives those seen so far.
func jobPosts(t *testing.T, tab context.Context) func() [][]byte {
	t.Helper()
	var (
		mu   sync.Mutex
		sent [][]byte
	)
	if err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request.Method == "POST" && strings.HasSuffix(e.Request.URL, "/api/v1/jobs") {
			var body []byte
			for _, p := range e.Request.PostDataEntries {
				body = append(body, p.Bytes...)
			}
			mu.Lock()
			sent = append(sent, body)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), sent...)
	}
}

// sameJSON fails t unless got and want are the same JSON value.
func sameJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("request body %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("request body\n%s\nwant\n%s", got, want)
	}
}

// rowOrder lists the data-release attribute of the rows of the releases
// table, top to bottom.
func rowOrder(t *testing.T, tab context.Context) []string {
	return eval[[]string](t, tab, `Array.from(document.querySelectorAll("[data-test=releases] tbody tr[data-release]"), r => r.dataset.release)`)
}

// TestSoftwareConsole: releases of three owners (shared, acme, globex) on
// HQ, which trusts the test's signing key, with a probe joined below it.
// A system administrator lists them all, newest first, and rolls acme's
// out to the probe's device by its path (the body names the release's
// tenant); the probe fetches the artifact, and one of globex's release
// staged to the probe from its page, which the cache of each tier shows. An acme viewer sees acme's and the shared ones, downloads an
// artifact (saved, its SHA-256 checked) and has no delete or rollout
// button, while the node refuses the viewer's delete and rollout made
// with the tab's own session; an acme operator starts a rollout of the
// shared release from its page with every field of the form (the request
// body is the bulk job of docs/jobs.md with the function install) and
// lands on the job, which shows the release, then deletes acme's release
// after the confirmation; a globex operator sees no acme release and no
// cache, which is for system users.
func TestSoftwareConsole(t *testing.T) {
	ctx := context.Background()
	b := newBrowser(t)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []string{base64.StdEncoding.EncodeToString(pub)}
	hq := startNodeWith(t, "hq", func(c *config.Config) {
		c.Role, c.Software.TrustedKeys = "hq", trusted
		c.Federation.Addr = "127.0.0.1:0"
	})
	// A probe below, granted operate so that rollouts reach it; it
	// trusts the same key and fetches the artifacts of a release sent
	// to it from HQ.
	tok, err := hq.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "probe", Grant: "operate"})
	if err != nil {
		t.Fatal(err)
	}
	probe := startNodeWith(t, "probe", func(c *config.Config) {
		c.Role, c.Software.TrustedKeys = "probe", trusted
		c.Federation.Upstreams = []config.Upstream{{Address: hq.n.FederationAddr(), Token: tok.Token, Publish: []string{"/devices"}}}
	})
	d1 := hq.device(t, "acme", "hw-sw-1")
	hq.device(t, "acme", "hw-sw-2")
	pd := enrollDevice(t, probe.admin, probe.n.MQTTAddr("tls"), "acme", "hw-sw-3")
	probePath := "/peers/probe" + pd.path
	tstest.WaitForErr(t, 20*time.Second, "the probe's device mirrored at HQ", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, probePath)
		return err == nil, err
	})
	rootUser, rootPass := hq.systemUser(t, "root")
	opUser, opPass := hq.user(t, "olive@acme", "acme", "operator")
	viewUser, viewPass := hq.user(t, "vic@acme", "acme", "viewer")
	gusUser, gusPass := hq.user(t, "gus@globex", "globex", "operator")

	now := time.Now().UTC().Truncate(time.Second)
	amd64 := randomBytes(200 << 10)
	publishRelease(t, hq.admin, key, "agent", "1.4.2", now.Add(-3*time.Hour),
		artifactFile{os: "linux", arch: "amd64", data: amd64, upload: true},
		artifactFile{os: "linux", arch: "arm64", data: randomBytes(1000)})
	publishRelease(t, hq.userClient(t, gusUser, gusPass), key, "globex-tool", "0.9", now.Add(-2*time.Hour),
		artifactFile{os: "linux", arch: "amd64", data: randomBytes(100), upload: true})
	publishRelease(t, hq.userClient(t, opUser, opPass), key, "acme-app", "2.0.1", now.Add(-time.Hour),
		artifactFile{os: "linux", arch: "arm64", data: randomBytes(300), upload: true})
	shared, acme, globex := "/agent/1.4.2", "acme/acme-app/2.0.1", "globex/globex-tool/0.9"

	t.Run("SystemSeesAll", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, rootUser, rootPass)
		run(t, tab, "the releases", chromedp.Click(chromedp.CSS(`[data-test=nav-software]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=releases]`)))
		tstest.WaitFor(t, 10*time.Second, "three releases, newest first", func() bool {
			return reflect.DeepEqual(rowOrder(t, tab), []string{acme, globex, shared})
		})
		shot(t, tab, "releases")
		// A tenant's release opens by its tenant (?tenant=).
		run(t, tab, "acme's release",
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-release=%q] a`, acme))),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=artifacts]`)),
		)
		if q := eval[string](t, tab, `location.search`); q != "?tenant=acme" {
			t.Fatalf("acme's release opened at %q", q)
		}
		waitText(t, tab, `[data-test=release-by]`, 5*time.Second, func(s string) bool { return strings.HasPrefix(s, opUser) })
		if !exists(t, tab, `[data-test=delete-release]`) {
			t.Fatal("a system user has no Delete on a tenant's release")
		}
		// acme's release to the probe's device named by its path, nothing
		// else given: the body names the release's tenant (a system
		// user's job would mean a shared release otherwise), the target
		// the path, and has no rollout.
		sent := jobPosts(t, tab)
		run(t, tab, "the rollout form, devices by path",
			chromedp.Click(chromedp.CSS(`[data-test=start-rollout]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=rollout-form]`)),
			chromedp.Click(chromedp.CSS(`input[name=mode][value=paths]`)),
			chromedp.WaitVisible(chromedp.CSS(`textarea[name=target_paths]`)),
		)
		setInput(t, tab, `textarea[name=target_paths]`, "peers/probe")
		run(t, tab, "start with a relative path", chromedp.Click(chromedp.CSS(`[data-test=rollout-submit]`)))
		if e := waitText(t, tab, `[data-test=rollout-error]`, 5*time.Second, func(s string) bool { return s != "" }); !strings.Contains(e, "want a path from the root") {
			t.Fatalf("error for a relative path: %q", e)
		}
		setInput(t, tab, `textarea[name=target_paths]`, probePath+"\n")
		run(t, tab, "start", chromedp.Click(chromedp.CSS(`[data-test=rollout-submit]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-waves]`)))
		bodies := sent()
		if len(bodies) != 1 {
			t.Fatalf("%d job requests sent, want 1", len(bodies))
		}
		sameJSON(t, bodies[0], fmt.Sprintf(`{"function": "install", "args": {"release": "acme-app", "version": "2.0.1", "tenant": "acme", "downgrade": false},
			"target": {"paths": [%q]}}`, probePath))
		waitText(t, tab, `[data-test=bulk-release]`, 5*time.Second, func(s string) bool { return s == "acme-app 2.0.1 of acme" })
		waitText(t, tab, `[data-test=bulk-downgrade]`, 5*time.Second, func(s string) bool { return s == "refused" })
		if exists(t, tab, `[data-test=bulk-check]`) {
			t.Fatal("a health check shown for a rollout without one")
		}
		// The job went down the link: the probe is among its nodes.
		run(t, tab, "the probe's part", chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-peers] tr[data-peer="/peers/probe"]`)))
	})

	// The release went down with the rollout, and the probe fetched its
	// artifact from HQ; another staged to the probe from its page is
	// fetched too and pinned: the cache of each tier says so.
	t.Run("CachePerTier", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, rootUser, rootPass)
		token, _ := sessionToken(t, tab)
		type tier struct {
			Node         string `json:"node"`
			Path         string `json:"path"`
			Objects      int    `json:"objects"`
			Pinned       int    `json:"pinned"`
			FetchedBytes int64  `json:"fetched_bytes"`
		}
		// probeHolds waits until the API reports the probe's cache with
		// objects objects, pinned pinned and fetched bytes fetched.
		probeHolds := func(what string, objects, pinned int, fetched int64) {
			t.Helper()
			tstest.WaitForErr(t, 20*time.Second, what, func() (bool, error) {
				raw := eval[string](t, tab, fmt.Sprintf(`fetch("/api/v1/software/cache", {headers: {Authorization: "Bearer " + %q}}).then(r => r.text())`, token))
				var c struct{ Tiers []tier }
				if err := json.Unmarshal([]byte(raw), &c); err != nil {
					return false, fmt.Errorf("%s: %v", raw, err)
				}
				if len(c.Tiers) != 2 {
					return false, fmt.Errorf("tiers %+v, want hq and the probe", c.Tiers)
				}
				for _, tr := range c.Tiers {
					if tr.Path == "/peers/probe" && tr.Objects == objects && tr.Pinned == pinned && tr.FetchedBytes == fetched {
						return true, nil
					}
				}
				return false, fmt.Errorf("tiers %+v", c.Tiers)
			})
		}
		// A rollout fetches an artifact when a device asks for it; these
		// devices download nothing, so the probe holds nothing yet.
		probeHolds("the probe's cache after the rollout", 0, 0, 0)

		// Stage globex's release to the probe from its page.
		run(t, tab, "globex's release",
			chromedp.Navigate(hq.url+"/releases/globex-tool/0.9?tenant=globex"),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=stage-release]`)),
			chromedp.Click(chromedp.CSS(`[data-test=stage-release]`)),
			chromedp.WaitVisible(chromedp.CSS(`input[name=stage_peer][value="/peers/probe"]`)),
			chromedp.Click(chromedp.CSS(`input[name=stage_peer][value="/peers/probe"]`)),
			chromedp.Click(chromedp.CSS(`[data-test=stage-submit]`)),
		)
		if s := waitText(t, tab, `[data-test=stage-result] tr[data-peer="/peers/probe"]`, 10*time.Second, func(s string) bool { return s != "" }); s != "/peers/probestaged" {
			t.Fatalf("staging to the probe: %q", s)
		}
		probeHolds("the probe's staged copy of globex-tool", 1, 1, 100)

		run(t, tab, "the cache",
			chromedp.Click(chromedp.CSS(`[data-test=nav-software]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=tab-cache]`)),
			chromedp.Click(chromedp.CSS(`[data-test=tab-cache]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=cache-tiers] tr[data-tier="/peers/probe"]`)),
		)
		if n := eval[int](t, tab, `document.querySelectorAll("[data-test=cache-tiers] tbody tr[data-tier]").length`); n != 2 {
			t.Fatalf("%d tiers shown, want 2", n)
		}
		cell := func(tier, col string) string {
			return waitText(t, tab, fmt.Sprintf(`tr[data-tier=%q] td[data-col=%q]`, tier, col), 5*time.Second, func(s string) bool { return s != "" })
		}
		for _, c := range []struct{ tier, col, want string }{
			{"/", "node", "hq (this node)"},
			{"/", "role", "hq"},
			{"/", "origin", "3 (200.4 KiB)"},
			{"/", "served", "100 B"},
			{"/peers/probe", "node", "probe"},
			{"/peers/probe", "role", "probe"},
			{"/peers/probe", "budget", "unlimited"},
			{"/peers/probe", "objects", "1"},
			{"/peers/probe", "pinned", "1"},
			{"/peers/probe", "fetched", "100 B"},
		} {
			if got := cell(c.tier, c.col); got != c.want {
				t.Errorf("tier %s %s: %q, want %q", c.tier, c.col, got, c.want)
			}
		}
		shot(t, tab, "cache")
	})

	t.Run("ViewerDownloadsAndChangesNothing", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, viewUser, viewPass)
		run(t, tab, "the releases", chromedp.Click(chromedp.CSS(`[data-test=nav-software]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=releases]`)))
		tstest.WaitFor(t, 10*time.Second, "acme's and the shared release", func() bool {
			return reflect.DeepEqual(rowOrder(t, tab), []string{acme, shared})
		})
		if n := waitText(t, tab, fmt.Sprintf(`tr[data-release=%q] [data-test=artifact-count]`, shared), 5*time.Second, func(s string) bool { return s != "" }); n != "2 (1 uploaded)" {
			t.Fatalf("the shared release's artifacts: %q", n)
		}
		dl := t.TempDir()
		run(t, tab, "the shared release",
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-release=%q] a`, shared))),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=artifacts]`)),
		)
		keyID := waitText(t, tab, `[data-test=release-key]`, 5*time.Second, func(s string) bool { return s != "" })
		if keyID != apitypes.KeyID(pub) {
			t.Fatalf("key id %q, want %q", keyID, apitypes.KeyID(pub))
		}
		if help := waitText(t, tab, `[data-test=upload-help] pre`, 5*time.Second, func(s string) bool { return s != "" }); !strings.Contains(help, "strata ctl artifacts upload FILE --release agent --version 1.4.2") {
			t.Fatalf("upload help %q", help)
		}
		// The artifact not uploaded yet has no download.
		if exists(t, tab, `tr[data-artifact="linux/arm64/deb"] [data-test=download]`) {
			t.Fatal("an artifact not uploaded has a download")
		}
		run(t, tab, "download the amd64 artifact",
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
					Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl,
				})
				return err
			}),
			chromedp.Click(chromedp.CSS(`tr[data-artifact="linux/amd64/deb"] [data-test=download]`)),
		)
		waitText(t, tab, `tr[data-artifact="linux/amd64/deb"] [data-test=download-note]`, 20*time.Second, func(s string) bool { return s == "saved, SHA-256 checked" })
		tstest.WaitForErr(t, 20*time.Second, "the saved artifact", func() (bool, error) {
			got, err := os.ReadFile(filepath.Join(dl, "agent_1.4.2_linux_amd64.deb"))
			return err == nil && bytes.Equal(got, amd64), err
		})
		shot(t, tab, "release")
		for _, sel := range []string{`[data-test=delete-release]`, `[data-test=start-rollout]`, `[data-test=stage-release]`} {
			if exists(t, tab, sel) {
				t.Fatalf("a viewer sees %s", sel)
			}
		}
		token, _ := sessionToken(t, tab)
		status := eval[int](t, tab, fmt.Sprintf(`fetch("/api/v1/releases/acme-app/2.0.1", {method: "DELETE", headers: {Authorization: "Bearer " + %q}}).then(r => r.status)`, token))
		if status != http.StatusForbidden {
			t.Fatalf("viewer's delete: %d, want 403", status)
		}
		status = eval[int](t, tab, fmt.Sprintf(`fetch("/api/v1/jobs", {method: "POST", headers: {Authorization: "Bearer " + %q, "Content-Type": "application/json"}, body: %q}).then(r => r.status)`,
			token, `{"function":"install","args":{"release":"agent","version":"1.4.2","downgrade":false},"target":{"filter":{"path":"/","type":"device"}}}`))
		if status != http.StatusForbidden {
			t.Fatalf("viewer's rollout: %d, want 403", status)
		}
		rels, err := hq.admin.Releases(ctx)
		if err != nil || len(rels) != 3 {
			t.Fatalf("releases after the viewer's delete: %d (%v)", len(rels), err)
		}

		// A device job of install (one call on a device that declares
		// it) shows the release, not first the manifest its arguments
		// hold.
		d1.publish(t, "inventory", map[string]any{"functions": []map[string]any{{"name": "ping", "args": pingArgs}, {"name": "reboot"}, {"name": "install"}}})
		tstest.WaitForErr(t, 10*time.Second, "install declared", func() (bool, error) {
			c, err := hq.admin.GetContext(ctx, d1.path)
			return err == nil && len(c.Functions) == 3, err
		})
		j, _, err := hq.admin.CallFunction(ctx, d1.path, "install", json.RawMessage(`{"release":"agent","version":"1.4.2","check":"true"}`), 10*time.Second)
		if err != nil || j.State != "succeeded" {
			t.Fatalf("install call: %+v %v", j, err)
		}
		run(t, tab, "the install job", chromedp.Navigate(hq.url+"/jobs/"+j.ID), chromedp.WaitVisible(chromedp.CSS(`[data-test=job-history]`)))
		if s := waitText(t, tab, `[data-test=job-install]`, 5*time.Second, func(s string) bool { return s != "" }); s != "installs agent 1.4.2 shared, downgrade refused, health check: true" {
			t.Fatalf("the install job shows %q", s)
		}
	})

	var jobID string
	t.Run("OperatorRollsOutAndDeletes", func(t *testing.T) {
		tab := b.tab(t)
		// The deadline field is local time: the tab's zone is UTC.
		run(t, tab, "time zone", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "UTC"})
			return err
		}))
		sent := jobPosts(t, tab)
		login(t, tab, hq.url, opUser, opPass)
		run(t, tab, "the shared release",
			chromedp.Navigate(hq.url+"/releases/agent/1.4.2"),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=artifacts]`)),
		)
		// A tenant user changes only its tenant's releases, and staging is
		// for system users.
		if exists(t, tab, `[data-test=delete-release]`) || exists(t, tab, `[data-test=stage-release]`) {
			t.Fatal("an acme operator may delete or stage a shared release")
		}
		run(t, tab, "open the rollout form", chromedp.Click(chromedp.CSS(`[data-test=start-rollout]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=rollout-form]`)))
		setInput(t, tab, `input[name=target_path]`, "/devices")
		run(t, tab, "online devices", chromedp.SetValue(chromedp.CSS(`select[name=target_online]`), "true"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("select[name=target_online]").dispatchEvent(new Event("change", {bubbles: true}))`))
		setInput(t, tab, `input[name=target_filters]`, "os=linux")
		waitText(t, tab, `[data-test=rollout-count]`, 10*time.Second, func(s string) bool { return strings.HasPrefix(s, "2 devices match now") })
		// A malformed field is refused in the page: nothing is sent.
		setInput(t, tab, `input[name=waves]`, "1, half")
		run(t, tab, "start with a bad wave", chromedp.Click(chromedp.CSS(`[data-test=rollout-submit]`)))
		if e := waitText(t, tab, `[data-test=rollout-error]`, 5*time.Second, func(s string) bool { return s != "" }); !strings.Contains(e, `"half": want a count`) {
			t.Fatalf("error for a bad wave: %q", e)
		}
		setInput(t, tab, `input[name=waves]`, "1, 50%")
		setInput(t, tab, `input[name=success_threshold]`, "100%")
		setInput(t, tab, `input[name=max_failures]`, "10%")
		setInput(t, tab, `input[name=min_finished]`, "2")
		setInput(t, tab, `input[name=max_concurrency]`, "50")
		setInput(t, tab, `input[name=rate]`, "5")
		setInput(t, tab, `input[name=rate_factor]`, "2")
		setInput(t, tab, `input[name=rate_every]`, "10")
		setInput(t, tab, `input[name=rate_max]`, "40")
		deadline := now.Add(3 * time.Hour).Truncate(time.Minute)
		setInput(t, tab, `input[name=deadline]`, deadline.Format("2006-01-02T15:04"))
		run(t, tab, "allow a downgrade", chromedp.Click(chromedp.CSS(`input[name=downgrade]`)))
		setInput(t, tab, `input[name=check]`, "systemctl is-active agent")
		run(t, tab, "the form in view", chromedp.Evaluate[chromedp.Void](`document.querySelector("[data-test=rollout-form]").scrollIntoView()`))
		shot(t, tab, "rollout")
		run(t, tab, "start", chromedp.Click(chromedp.CSS(`[data-test=rollout-submit]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-waves]`)))

		// The request is the bulk job of docs/jobs.md installing the
		// release.
		bodies := sent()
		if len(bodies) != 1 {
			t.Fatalf("%d job requests sent, want 1", len(bodies))
		}
		sameJSON(t, bodies[0], fmt.Sprintf(`{"function": "install",
			"args": {"release": "agent", "version": "1.4.2", "downgrade": true, "check": "systemctl is-active agent"},
			"target": {"filter": {"path": "/devices", "type": "device", "var.online": "true", "label.os": "linux"}},
			"rollout": {"waves": [1, "50%%"], "success_threshold": "100%%", "max_failures": "10%%", "min_finished": 2,
			            "max_concurrency": 50, "rate": {"per_second": 5, "factor": 2, "every": 10, "max_per_second": 40}},
			"deadline": %q}`, deadline.Format(time.RFC3339)))

		// The node took it: the job's screen shows the release installed.
		jobID = strings.TrimPrefix(eval[string](t, tab, `location.pathname`), "/jobs/")
		if !strings.HasPrefix(jobID, "b") || len(jobID) != 21 {
			t.Fatalf("opened %q, want a bulk job", jobID)
		}
		waitText(t, tab, `[data-test=bulk-install]`, 5*time.Second, func(s string) bool { return s == "agent 1.4.2" })
		waitText(t, tab, `[data-test=bulk-release]`, 5*time.Second, func(s string) bool { return s == "agent 1.4.2 shared" })
		waitText(t, tab, `[data-test=bulk-downgrade]`, 5*time.Second, func(s string) bool { return s == "allowed" })
		waitText(t, tab, `[data-test=bulk-check]`, 5*time.Second, func(s string) bool { return s == "systemctl is-active agent" })
		waitText(t, tab, `[data-test=bulk-counters] [data-test=progress-count]`, 10*time.Second, func(s string) bool { return strings.HasSuffix(s, "/2") })
		shot(t, tab, "rollout-job")
		j, err := hq.admin.GetBulkJob(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		// The node keeps the release it resolved: its signed manifest.
		var args struct {
			Release   apitypes.SignedManifest
			Tenant    string
			Downgrade bool
			Check     string
		}
		if err := json.Unmarshal(j.Args, &args); err != nil {
			t.Fatalf("the job's args %s: %v", j.Args, err)
		}
		m, err := apitypes.ParseManifest(args.Release.Manifest)
		if err != nil || m.Name != "agent" || m.Version != "1.4.2" || args.Release.KeyID != apitypes.KeyID(pub) || args.Tenant != "" ||
			!args.Downgrade || args.Check != "systemctl is-active agent" {
			t.Fatalf("the job's args at the node: %s (%v)", j.Args, err)
		}
		if j.Function != "install" ||
			j.Tenant != "acme" || j.CreatedBy != opUser || !j.Deadline.Equal(deadline) || j.Counters.Total != 2 ||
			j.Target.Filter["label.os"] != "linux" {
			t.Fatalf("the job at the node: %+v", j)
		}
		// The release link leads back to the release.
		run(t, tab, "back to the release", chromedp.Click(chromedp.CSS(`[data-test=bulk-release] a`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=artifacts]`)))
		waitText(t, tab, `[data-test=release-name]`, 5*time.Second, func(s string) bool { return s == "agent 1.4.2" })

		// acme's own release: deleted after the confirmation.
		run(t, tab, "acme's release",
			chromedp.Click(chromedp.CSS(`nav.crumbs a`)),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-release=%q] a`, acme))),
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-release=%q] a`, acme))),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=delete-release]`)),
			chromedp.Click(chromedp.CSS(`[data-test=delete-release]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm-delete]`)),
		)
		// Keep it first: nothing is deleted.
		run(t, tab, "keep it", chromedp.Click(chromedp.CSS(`[data-test=confirm-delete-no]`)))
		if exists(t, tab, `[data-test=confirm-delete]`) {
			t.Fatal("the confirmation stays after keep it")
		}
		if rels, err := hq.admin.Releases(ctx); err != nil || len(rels) != 3 {
			t.Fatalf("releases after keep it: %d (%v)", len(rels), err)
		}
		run(t, tab, "delete it",
			chromedp.Click(chromedp.CSS(`[data-test=delete-release]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm-delete-yes]`)),
			chromedp.Click(chromedp.CSS(`[data-test=confirm-delete-yes]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=releases]`)),
		)
		tstest.WaitFor(t, 10*time.Second, "acme's release gone from the list", func() bool {
			return reflect.DeepEqual(rowOrder(t, tab), []string{shared})
		})
		rels, err := hq.admin.Releases(ctx)
		if err != nil || len(rels) != 2 {
			t.Fatalf("releases at the node after the delete: %+v (%v)", rels, err)
		}
		for _, r := range rels {
			if r.Name == "acme-app" {
				t.Fatalf("acme-app still at the node: %+v", r)
			}
		}
	})
	if jobID == "" {
		t.Fatal("no rollout job")
	}

	t.Run("OtherTenantSeesNoAcmeRelease", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, gusUser, gusPass)
		run(t, tab, "the releases", chromedp.Navigate(hq.url+"/releases"), chromedp.WaitVisible(chromedp.CSS(`[data-test=releases]`)))
		tstest.WaitFor(t, 10*time.Second, "globex's and the shared release", func() bool {
			return reflect.DeepEqual(rowOrder(t, tab), []string{globex, shared})
		})
		// acme's rollout is not globex's to see.
		run(t, tab, "acme's rollout", chromedp.Navigate(hq.url+"/jobs/"+jobID), chromedp.WaitVisible(chromedp.CSS(`[data-test=job-error-msg]`)))
		if exists(t, tab, `[data-test=bulk-release]`) {
			t.Fatal("a globex operator sees acme's rollout")
		}
		// The cache of each tier is for system users: no tab, and the
		// node's refusal at its address.
		run(t, tab, "the software tabs", chromedp.Click(chromedp.CSS(`[data-test=nav-software]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=tab-releases]`)))
		if exists(t, tab, `[data-test=tab-cache]`) {
			t.Fatal("a tenant operator has the cache tab")
		}
		run(t, tab, "the cache by its address", chromedp.Navigate(hq.url+"/cache"))
		if e := waitText(t, tab, `[data-test=cache-error]`, 10*time.Second, func(s string) bool { return s != "" }); !strings.Contains(e, "system users") {
			t.Fatalf("a tenant operator's cache: %q", e)
		}
	})
}
