package federation_test

import (
	"context"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// A provider's role labels its mount, and a regional node publishes its
// own mounts upward: HQ sees every node below it with its role, and the
// warnings raised two tiers down are in HQ's own store, so its event
// feed over /peers lists them.
func TestRolesLabelMountsAndEventsReachTheFeed(t *testing.T) {
	hq := newTNode(t, "hq", true)
	eu := newTNode(t, "eu", true)
	probe := newTNode(t, "probe", false)
	for n, role := range map[*tnode]string{eu: "regional", probe: "probe"} {
		n.stop()
		n.configure = func(c *federation.Config) { c.Role = role }
		n.start()
	}
	hq.join(eu, federation.GrantOperate)
	eu.join(probe, federation.GrantOperate)
	probe.put("/devices/d1", nil)
	labelled := func(n *tnode, p model.Path, role string) func() bool {
		return func() bool {
			c, err := n.model.Get(p)
			return err == nil && c.Type == federation.PeerType && c.Labels[federation.RoleLabel] == role
		}
	}
	tstest.WaitFor(t, 20*time.Second, "eu's mount labelled regional on hq", labelled(hq, "/peers/eu", "regional"))
	tstest.WaitFor(t, 20*time.Second, "probe's mount labelled probe on hq", labelled(hq, "/peers/eu/peers/probe", "probe"))
	if r := hq.peer("eu", "provider").Role; r != "regional" {
		t.Errorf("hq's status of eu: role %q", r)
	}

	probe.event("/devices/d1", "overheat")
	want := model.Path("/peers/eu/peers/probe/devices/d1")
	tstest.WaitForErr(t, 20*time.Second, "the alert in hq's feed", func() (bool, error) {
		page, err := hq.store.Feed(context.Background(), model.FeedQuery{Prefix: "/peers/eu", Tenants: []string{"acme"}})
		if err != nil {
			return false, err
		}
		return len(page.Events) == 1 && page.Events[0].Path == want && page.Events[0].Name == "overheat" &&
			page.Events[0].Level == model.LevelAlert, nil
	})
}
