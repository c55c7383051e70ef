package browser

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/console"
)

// TestOverviewTiersAndWarnings drives HQ's Overview over `strata demo`
// (probe-a and probe-b → eu → hq): devices by tier (probe, regional, this
// node) and by node, the link to eu healthy, and the warnings and alerts
// devices raise on probe-a, two tiers down, in the recent events; a
// tenant user's Overview lists its tenant's warnings only.
func TestOverviewTiersAndWarnings(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	if !console.New().Built() {
		missing(t, "the console is not built: run make console")
	}
	dm := startDemo(t)
	ctx := context.Background()
	acme := enrollDevice(t, dm.probeA, dm.probeAMQTT, "acme", "overview-acme-1")
	globex := enrollDevice(t, dm.probeA, dm.probeAMQTT, "globex", "overview-globex-1")
	acme.publish(t, "events", map[string]any{"name": "acme-overheat", "level": "warning", "payload": map[string]any{"temp": 91.5}})
	globex.publish(t, "events", map[string]any{"name": "globex-door", "level": "alert"})
	acmePath := "/peers/eu/peers/probe-a" + acme.path
	globexPath := "/peers/eu/peers/probe-a" + globex.path
	tstest.WaitForErr(t, 30*time.Second, "both events in HQ's feed", func() (bool, error) {
		p, err := dm.hq.Feed(ctx, client.FeedQuery{Path: "/peers"})
		if err != nil {
			return false, err
		}
		var paths []string
		for _, ev := range p.Events {
			paths = append(paths, ev.Path)
		}
		return slices.Contains(paths, acmePath) && slices.Contains(paths, globexPath), fmt.Errorf("feed paths %v", paths)
	})
	const alicePassword = "alice-overview-password"
	if _, err := dm.hq.CreateUser(ctx, client.NewUser{Name: "alice", Password: alicePassword, Tenant: "acme",
		Grants: []client.Grant{{Role: "viewer", Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}

	// The system administrator: every node below, by tier and by node,
	// and both events.
	tab := b.tab(t)
	login(t, tab, dm.console, dm.user, dm.password)
	counted := func(s string) bool { return s != "…" && s != "0" && s != "?" }
	waitText(t, tab, `tr[data-tier="probe"] [data-test=online]`, 15*time.Second, counted)
	waitText(t, tab, `tr[data-tier="probe"] td:nth-child(2)`, time.Second, func(s string) bool { return s == "2" })
	waitText(t, tab, `tr[data-tier="regional"] td:nth-child(2)`, time.Second, func(s string) bool { return s == "1" })
	waitText(t, tab, `tr[data-tier="this node"] td:nth-child(2)`, time.Second, func(s string) bool { return s == "1" })
	waitText(t, tab, `tr[data-node="probe-a"] [data-test=online]`, 10*time.Second, counted)
	waitText(t, tab, `tr[data-node="probe-a"] [data-test=node-link]`, time.Second, func(s string) bool { return s == "via eu: connected" })
	waitText(t, tab, `tr[data-peer="eu"] [data-test=link-health]`, 10*time.Second, func(s string) bool { return s == "ok" })
	acmeRow := fmt.Sprintf(`[data-test=recent-events] tr[data-path=%q]`, acmePath)
	globexRow := fmt.Sprintf(`[data-test=recent-events] tr[data-path=%q]`, globexPath)
	waitText(t, tab, acmeRow+` [data-test=level]`, 10*time.Second, func(s string) bool { return s == "warning" })
	waitText(t, tab, globexRow+` [data-test=level]`, time.Second, func(s string) bool { return s == "alert" })
	if text := waitText(t, tab, acmeRow, time.Second, func(string) bool { return true }); !strings.Contains(text, "acme-overheat") || !strings.Contains(text, "91.5") {
		t.Errorf("acme's row: %q", text)
	}
	shot(t, tab, "overview")

	// Alice, a viewer of tenant acme: her warning, not globex's alert.
	atab := b.tab(t)
	login(t, atab, dm.console, "alice", alicePassword)
	waitText(t, atab, acmeRow+` [data-test=level]`, 15*time.Second, func(s string) bool { return s == "warning" })
	if exists(t, atab, globexRow) || exists(t, atab, `[data-test=recent-events] tr[data-event="globex-door"]`) {
		t.Error("alice's Overview lists globex's alert")
	}
	paths := eval[[]string](t, atab, `[...document.querySelectorAll("[data-test=recent-events] tbody tr")].map(r => r.dataset.path)`)
	for _, p := range paths {
		if p != acmePath && strings.HasPrefix(p, "/peers/eu/peers/probe-a/devices/") {
			t.Errorf("alice's Overview lists an event of %s, not hers", p)
		}
	}
}
