package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// The operations screens (Jobs, Links, Access, Audit) on one HQ node with
// a probe joined below it over a real federation link, devices of two
// tenants, and users of every kind; each subtest has its own tab.
func TestOpsScreens(t *testing.T) {
	ctx := context.Background()
	b := newBrowser(t)
	hq := startNodeWith(t, "hq", func(c *config.Config) { c.Federation.Addr = "127.0.0.1:0" })
	tok, err := hq.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "probe", Grant: "read"})
	if err != nil {
		t.Fatal(err)
	}
	startNodeWith(t, "probe", func(c *config.Config) {
		c.Federation.Upstreams = []config.Upstream{{Address: hq.n.FederationAddr(), Token: tok.Token, Publish: []string{"/devices"}}}
	})
	d := hq.device(t, "acme", "hw-ops-1")
	other := hq.device(t, "globex", "hw-ops-2")
	// A device that went away: its jobs stay queued, so they can be cancelled.
	gone := hq.device(t, "acme", "hw-ops-3")
	gone.c.Disconnect(100)

	sysUser, sysPass := hq.systemUser(t, "ada")
	admUser, admPass := hq.user(t, "amy@acme", "acme", "admin")
	opUser, opPass := hq.user(t, "olive@acme", "acme", "operator")
	viewUser, viewPass := hq.user(t, "vic@acme", "acme", "viewer")
	globexUser, _ := hq.user(t, "gus@globex", "globex", "operator")

	done, code, err := hq.admin.CallFunction(ctx, d.path, "ping", json.RawMessage(`{"count":7}`), 10*time.Second)
	if err != nil || string(done.State) != "succeeded" {
		t.Fatalf("call: %d %+v %v", code, done, err)
	}
	queued, _, err := hq.admin.CallFunction(ctx, gone.path, "reboot", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := hq.admin.CallFunction(ctx, other.path, "reboot", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	jobRow := func(id string) string { return fmt.Sprintf(`[data-test=jobs] tr[data-job=%q]`, id) }

	t.Run("JobsListAndHistory", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, opUser, opPass)
		run(t, tab, "open the jobs list",
			chromedp.Click(chromedp.CSS(`[data-test=nav-jobs]`)),
			chromedp.WaitVisible(chromedp.CSS(jobRow(done.ID))),
			chromedp.WaitVisible(chromedp.CSS(jobRow(queued.ID))),
		)
		shot(t, tab, "jobs")
		// Filtered on the server: only the succeeded one is left.
		run(t, tab, "filter by state",
			chromedp.SetValue(chromedp.CSS(`select[name=state]`), "succeeded"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("select[name=state]").dispatchEvent(new Event("change", {bubbles: true}))`),
			chromedp.Click(chromedp.CSS(`[data-test=job-filters] button[type=submit]`)),
		)
		tstest.WaitFor(t, 5*time.Second, "filtered list", func() bool {
			return exists(t, tab, jobRow(done.ID)) && !exists(t, tab, jobRow(queued.ID))
		})
		run(t, tab, "open the job",
			chromedp.Click(chromedp.CSS(jobRow(done.ID)+` a.mono`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=job-history]`)),
		)
		waitText(t, tab, `[data-test=job-state]`, 5*time.Second, func(s string) bool { return s == "succeeded" })
		waitText(t, tab, `[data-test=job-result]`, 5*time.Second, func(s string) bool { return strings.Contains(s, `"pong": 7`) })
		hist := waitText(t, tab, `[data-test=job-history] tbody`, 5*time.Second, func(s string) bool {
			return strings.HasPrefix(s, "queued") && strings.Contains(s, "succeeded")
		})
		t.Logf("history: %s", hist)
		shot(t, tab, "job")
		// Another tenant's job is not listed.
		run(t, tab, "all jobs", chromedp.Navigate(hq.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(jobRow(done.ID))))
		if exists(t, tab, jobRow(foreign.ID)) {
			t.Fatal("an acme operator sees a globex job")
		}
	})

	t.Run("ViewerSeesNoButtons", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, viewUser, viewPass)
		run(t, tab, "open a queued job",
			chromedp.Navigate(hq.url+"/jobs/"+queued.ID),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=job-history]`)),
		)
		waitText(t, tab, `[data-test=job-state]`, 5*time.Second, func(s string) bool { return s == "queued" })
		if exists(t, tab, `[data-test=cancel-job]`) {
			t.Fatal("a viewer sees the cancel button")
		}
		if exists(t, tab, `[data-test=nav-audit]`) || exists(t, tab, `[data-test=tab-users]`) {
			t.Fatal("a viewer has the audit or users entry")
		}
		run(t, tab, "open links", chromedp.Navigate(hq.url+"/links"), chromedp.WaitVisible(chromedp.CSS(`[data-test=peer]`)))
		if exists(t, tab, `[data-test=verify]`) {
			t.Fatal("a viewer sees verify")
		}
		// Typed addresses: the node refuses, and no create/revoke appears.
		for _, p := range []string{"/users", "/enrollment"} {
			run(t, tab, "open "+p, chromedp.Navigate(hq.url+p), chromedp.WaitVisible(chromedp.CSS(`[data-test=action-error]`)))
			waitText(t, tab, `[data-test=action-error]`, 5*time.Second, func(s string) bool { return s != "" })
			for _, sel := range []string{`[data-test=create-user]`, `[data-test=delete-user]`, `[data-test=create-enroll-token]`, `[data-test=revoke-enroll-token]`} {
				if exists(t, tab, sel) {
					t.Fatalf("a viewer sees %s on %s", sel, p)
				}
			}
		}
	})

	t.Run("OperatorCancelsAndManagesEnrollment", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, opUser, opPass)
		run(t, tab, "cancel the queued job",
			chromedp.Navigate(hq.url+"/jobs/"+queued.ID),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=cancel-job]`)),
			chromedp.Click(chromedp.CSS(`[data-test=cancel-job]`)),
		)
		waitText(t, tab, `[data-test=job-state]`, 5*time.Second, func(s string) bool { return s == "cancelled" })
		if j, err := hq.admin.GetJob(ctx, queued.ID); err != nil || string(j.State) != "cancelled" {
			t.Fatalf("job at the node: %+v %v", j, err)
		}
		run(t, tab, "create an enrollment token",
			chromedp.Navigate(hq.url+"/enrollment"),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=new-enroll-token]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=group]`), "pumps"),
			chromedp.Click(chromedp.CSS(`[data-test=create-enroll-token]`)),
		)
		secret := waitText(t, tab, `[data-test=secret-value]`, 5*time.Second, func(s string) bool { return strings.HasPrefix(s, "se_") })
		// The secret enrolls a device: it is the node's.
		if _, err := hq.admin.Enroll(ctx, client.EnrollRequest{Token: secret, HardwareID: "hw-ops-4"}); err != nil {
			t.Fatalf("enroll with the shown secret: %v", err)
		}
		id := eval[string](t, tab, `document.querySelector("[data-test=secret]").dataset.id`)
		row := fmt.Sprintf(`[data-test=enroll-tokens] tr[data-token=%q]`, id)
		run(t, tab, "revoke it",
			chromedp.WaitVisible(chromedp.CSS(row+` [data-test=revoke-enroll-token]`)),
			chromedp.Click(chromedp.CSS(row+` [data-test=revoke-enroll-token]`)),
		)
		waitText(t, tab, row+` td:last-child`, 5*time.Second, func(s string) bool { return s == "revoked" })
		shot(t, tab, "enrollment")
		if _, err := hq.admin.Enroll(ctx, client.EnrollRequest{Token: secret, HardwareID: "hw-ops-5"}); !isUnauthorized(err) {
			t.Fatalf("enroll with a revoked token: %v", err)
		}
	})

	t.Run("TenantAdminSeesOnlyItsTenant", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, admUser, admPass)
		run(t, tab, "open users", chromedp.Navigate(hq.url+"/users"), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-user=%q]`, viewUser))))
		names := eval[[]string](t, tab, `[...document.querySelectorAll("[data-test=users] tbody tr")].map(r => r.dataset.user)`)
		for _, n := range names {
			if !strings.HasSuffix(n, "@acme") {
				t.Fatalf("an acme administrator sees user %q (all: %v)", n, names)
			}
		}
		if len(names) != 3 {
			t.Fatalf("users shown: %v", names)
		}
		// Create a user from the form: the node names it in the tenant.
		run(t, tab, "create a user",
			chromedp.SendKeys(chromedp.CSS(`[data-test=new-user] input[name=name]`), "carl"),
			chromedp.SendKeys(chromedp.CSS(`[data-test=new-user] input[name=password]`), "pw-carl-0123456789"),
			chromedp.Click(chromedp.CSS(`[data-test=create-user]`)),
			chromedp.WaitVisible(chromedp.CSS(`tr[data-user="carl@acme"]`)),
		)
		shot(t, tab, "users")
		// The tree of /devices lists acme's devices, not globex's.
		run(t, tab, "browse devices",
			chromedp.Navigate(hq.url+"/tree/devices"),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`li[data-path=%q]`, d.path))),
		)
		if exists(t, tab, fmt.Sprintf(`li[data-path=%q]`, other.path)) {
			t.Fatal("an acme administrator sees a globex device in the tree")
		}
		run(t, tab, "open the audit log", chromedp.Click(chromedp.CSS(`[data-test=nav-audit]`)), chromedp.WaitVisible(chromedp.CSS(`tr[data-op="user.create"]`)))
		whos := eval[string](t, tab, `document.querySelector("[data-test=audit] tbody").textContent`)
		if strings.Contains(whos, globexUser) || strings.Contains(whos, sysUser) {
			t.Fatalf("an acme administrator's audit shows another tenant or a system user: %s", whos)
		}
		// API tokens: one's own, this tab's session among them.
		_, sid := sessionToken(t, tab)
		run(t, tab, "open API tokens",
			chromedp.Navigate(hq.url+"/tokens"),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`[data-test=tokens] tr[data-token=%q]`, sid))),
		)
		shot(t, tab, "tokens")
	})

	t.Run("LinksShowThePeerAndVerify", func(t *testing.T) {
		tstest.WaitForErr(t, 20*time.Second, "probe linked and caught up", func() (bool, error) {
			ps, err := hq.admin.Peers(ctx)
			for _, p := range ps {
				if p.Name == "probe" && p.State == "connected" && p.LagEntries == 0 {
					return true, nil
				}
			}
			return false, fmt.Errorf("peers %+v: %v", ps, err)
		})
		tab := b.tab(t)
		login(t, tab, hq.url, sysUser, sysPass)
		sel := `[data-test=peer][data-peer=probe][data-direction=provider]`
		run(t, tab, "open links", chromedp.Click(chromedp.CSS(`[data-test=nav-links]`)), chromedp.WaitVisible(chromedp.CSS(sel)))
		waitText(t, tab, sel+` [data-test=peer-state]`, 5*time.Second, func(s string) bool { return s == "connected" })
		waitText(t, tab, sel+` [data-test=lag]`, 5*time.Second, func(s string) bool { return strings.HasPrefix(s, "0 entries") })
		run(t, tab, "verify", chromedp.Click(chromedp.CSS(`[data-test=verify]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=verify-result] tr[data-peer=probe]`)))
		waitText(t, tab, `[data-test=verify-result] tr[data-peer=probe] [data-test=match]`, 5*time.Second, func(s string) bool { return s == "match" })
		shot(t, tab, "links")
	})

	t.Run("AuditShowsTheCall", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, sysUser, sysPass)
		run(t, tab, "open the audit log", chromedp.Click(chromedp.CSS(`[data-test=nav-audit]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=audit] tr[data-op=call]`)))
		text := eval[string](t, tab, fmt.Sprintf(`[...document.querySelectorAll("[data-test=audit] tr[data-op=call][data-outcome=succeeded]")].map(r => r.textContent).find(s => s.includes(%q)) ?? ""`, done.ID))
		if !strings.Contains(text, d.path) || !strings.Contains(text, "ping") || !strings.Contains(text, "admin") {
			t.Fatalf("audit row: %s", text)
		}
		// Newest first: the cancel made later is above the call.
		order := eval[[]string](t, tab, `[...document.querySelectorAll("[data-test=audit] tbody tr")].map(r => r.dataset.op)`)
		ic, ij := -1, -1
		for i, op := range order {
			if op == "job.cancel" && ic < 0 {
				ic = i
			}
			if op == "call" && ij < 0 {
				ij = i
			}
		}
		if ic < 0 || ij < 0 || ic > ij {
			t.Fatalf("audit order: %v", order)
		}
		shot(t, tab, "audit")
	})
}
