package api

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/jobs"
)

// feedAll follows the feed's cursor from query to its end and returns the
// names of the events, and every cursor it was given.
func (e *env) feedAll(token, query string) (names []string, cursors []uint64) {
	e.t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		e.t.Fatal(err)
	}
	for range 1000 {
		r := e.do("GET", "/api/v1/events?"+q.Encode(), token, nil)
		e.want(r, 200, "")
		var page eventPage
		r.json(e.t, &page)
		for _, ev := range page.Events {
			names = append(names, ev.Name)
		}
		if page.Next == 0 {
			return names, cursors
		}
		cursors = append(cursors, page.Next)
		q.Set("before", fmt.Sprint(page.Next))
	}
	e.t.Fatal("the feed does not end")
	return nil, nil
}

// feedCast records, newest last: on acme's device a warning, an info and
// an alert; on globex's device many warnings; on a shared device a
// warning and a job event (as the jobs service records on a device);
// on a shared site an alert.
func feedCast(t *testing.T, e *env, c cast) {
	t.Helper()
	e.want(e.do("PUT", "/api/v1/contexts/devices/a1", c.alice, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/b1", c.bob, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/shared", e.admin, `{"type":"device"}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/a1", c.alice, `{"level":"warning","name":"acme-w"}`), 201, "")
	for i := range 12 {
		e.want(e.do("POST", "/api/v1/events/devices/b1", c.bob, fmt.Sprintf(`{"level":"warning","name":"globex-%d"}`, i)), 201, "")
	}
	e.want(e.do("POST", "/api/v1/events/devices/a1", c.alice, `{"level":"info","name":"acme-info"}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/shared", e.admin, `{"level":"warning","name":"shared-w"}`), 201, "")
	if _, err := e.model.Apply(e.ctx, model.Mutation{Op: model.OpEvent, Path: "/devices/shared",
		Event: &model.Event{Name: jobs.EventName, Level: model.LevelWarning}}); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/events/devices/a1", c.alice, `{"level":"alert","name":"acme-a"}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/sites", e.admin, `{"level":"alert","name":"site-a"}`), 201, "")
	for i := range 12 {
		e.want(e.do("POST", "/api/v1/events/devices/b1", c.bob, fmt.Sprintf(`{"level":"alert","name":"globex-a%d"}`, i)), 201, "")
	}
}

// TestEventFeed: the feed lists warnings and alerts of a subtree newest
// first; each tenant sees its own and shared events only (not a shared
// device's job events), and neither its pages, their length nor their
// cursors depend on another tenant's events.
func TestEventFeed(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	feedCast(t, e, c)
	globex := make([]string, 0, 24)
	for i := range 12 {
		globex = append(globex, fmt.Sprintf("globex-%d", i))
	}
	var globexAlerts []string
	for i := range 12 {
		globexAlerts = append(globexAlerts, fmt.Sprintf("globex-a%d", i))
	}
	rev := func(xs ...[]string) []string {
		var out []string
		for _, x := range xs {
			out = append(out, x...)
		}
		slices.Reverse(out)
		return out
	}
	check := func(who, token, query string, want []string) []uint64 {
		t.Helper()
		got, cursors := e.feedAll(token, query)
		if !slices.Equal(got, want) {
			t.Errorf("%s %q:\n got %v\nwant %v", who, query, got, want)
		}
		return cursors
	}
	all := rev([]string{"acme-w"}, globex, []string{"shared-w", jobs.EventName, "acme-a", "site-a"}, globexAlerts)
	check("admin", e.admin, "", all)
	check("admin", e.admin, "limit=5", all)
	check("admin", e.admin, "level=alert&limit=3", rev([]string{"acme-a", "site-a"}, globexAlerts))
	check("admin", e.admin, "path=/devices/b1&limit=4", rev(globex, globexAlerts))

	acme := []string{"site-a", "acme-a", "shared-w", "acme-w"}
	check("alice", c.alice, "", acme)
	check("alice", c.alice, "path=/devices", []string{"acme-a", "shared-w", "acme-w"})
	check("alice", c.alice, "level=alert", []string{"site-a", "acme-a"})
	// Pages of one: every page full, every cursor the event just shown.
	cursors := check("alice", c.alice, "limit=1", acme)
	var seen []uint64
	r := e.do("GET", "/api/v1/events", c.alice, nil)
	var page eventPage
	r.json(t, &page)
	for _, ev := range page.Events {
		seen = append(seen, ev.Seq)
	}
	for _, cur := range cursors {
		if !slices.Contains(seen, cur) {
			t.Errorf("alice's cursor %d is none of her events %v", cur, seen)
		}
	}
	if len(cursors) != len(acme) {
		t.Errorf("alice's pages of one: %d cursors for %d events", len(cursors), len(acme))
	}
	// A viewer granted /devices only: the feed of / is that of /devices;
	// of /sites, forbidden.
	check("vera", c.vera, "", []string{"acme-a", "shared-w", "acme-w"})
	e.want(e.do("GET", "/api/v1/events?path=/sites", c.vera, nil), 403, codeForbidden)

	// Grants on two subtrees: their feeds merged newest first, in pages
	// of any size.
	two := e.user(auth.UserSpec{Name: "tess", Tenant: "acme", Grants: []auth.Grant{
		{Role: auth.RoleViewer, Subtree: "/devices/a1"}, {Role: auth.RoleViewer, Subtree: "/sites"}}})
	for _, limit := range []string{"1", "2", "50"} {
		check("tess", two, "limit="+limit, []string{"site-a", "acme-a", "acme-w"})
	}
	e.want(e.do("GET", "/api/v1/events?path=/devices/shared", two, nil), 403, codeForbidden)

	check("bob", c.bob, "limit=2", rev(globex, []string{"shared-w", "site-a"}, globexAlerts))
	check("bob", c.bob, "path=/devices/b1&level=alert", rev(globexAlerts))
	// Another tenant's device answers as a missing one.
	hit := e.do("GET", "/api/v1/events?path=/devices/a1", c.bob, nil)
	miss := e.do("GET", "/api/v1/events?path=/devices/a0", c.bob, nil)
	e.want(hit, 404, codeNotFound)
	e.want(miss, 404, codeNotFound)
	if strings.ReplaceAll(string(hit.body), "a1", "a0") != string(miss.body) {
		t.Errorf("bob: existing %s, missing %s", hit.body, miss.body)
	}

	// History of a device given to another tenant leaves the old
	// tenant's feed (as its per-context history does) and never reaches
	// the new one's.
	e.want(e.do("PUT", "/api/v1/contexts/devices/a1", e.admin, `{"tenant":"globex"}`), 200, "")
	check("alice after the move", c.alice, "", []string{"site-a", "shared-w"})
	check("bob after the move", c.bob, "path=/devices/a1", nil)
}

// TestEventFeedRefusals: bad parameters are 400 and name the problem;
// no token or a revoked one is 401; a node without a feed answers 501.
func TestEventFeedRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	for _, q := range []string{"level=info", "level=ALERT", "limit=0", "limit=1001", "limit=x", "before=0", "before=-1",
		"before=x", "path=/a//b", "path=/%00", "tenant=acme", "level=warning&level=alert"} {
		if r := e.do("GET", "/api/v1/events?"+q, c.alice, nil); r.status != 400 || r.errCode(t) != codeInvalid {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
	e.want(e.do("GET", "/api/v1/events", "", nil), 401, "")
	e.want(e.do("GET", "/api/v1/events", c.alice, nil), 200, "")
	p := e.principal(c.alice)
	if err := e.auth.RevokeToken(e.ctx, p, p.TokenID); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("GET", "/api/v1/events", c.alice, nil), 401, "")
	e.want(e.do("POST", "/api/v1/events", e.admin, `{}`), 405, codeMethodNotAllowed)

	off := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Feed = nil })
	off.want(off.do("GET", "/api/v1/events", off.admin, nil), 501, codeNotImplemented)
}

// TestClientFeed drives the feed with node/client, as ctl events
// --subtree does.
func TestClientFeed(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	feedCast(t, e, c)
	alice := tlsClient(t, e.api.Handler(), c.alice)
	ctx := context.Background()
	p, err := alice.Feed(ctx, client.FeedQuery{Limit: 3})
	if err != nil || len(p.Events) != 3 || p.Events[0].Name != "site-a" || p.Events[2].Path != "/devices/shared" || p.Next != p.Events[2].Seq {
		t.Fatalf("first page: %+v, %v", p, err)
	}
	p, err = alice.Feed(ctx, client.FeedQuery{Path: "/devices/a1", Level: "warning", Before: p.Next})
	if err != nil || len(p.Events) != 1 || p.Events[0].Name != "acme-w" || p.Next != 0 {
		t.Fatalf("next page: %+v, %v", p, err)
	}
	if _, err := alice.Feed(ctx, client.FeedQuery{Level: "info"}); !client.IsCode(err, client.CodeInvalid) {
		t.Fatalf("level info: %v", err)
	}
}

// TestEventFeedShortPage: a feed of one context among more warnings
// elsewhere than the store reads per request answers short pages with a
// cursor, counted in /metrics, and the cursor reaches the alert.
func TestEventFeedShortPage(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("PUT", "/api/v1/contexts/devices/rare", e.admin, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/busy", e.admin, `{"type":"device"}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/rare", e.admin, `{"level":"alert","name":"rare"}`), 201, "")
	muts := make([]model.Mutation, 0, 1000)
	for range feedRounds*model.MaxFeedScan/1000 + 1 {
		muts = muts[:0]
		for range 1000 {
			muts = append(muts, model.Mutation{Op: model.OpEvent, Path: "/devices/busy", Event: &model.Event{Level: model.LevelWarning}})
		}
		if _, err := e.model.Apply(e.ctx, muts...); err != nil {
			t.Fatal(err)
		}
	}
	names, cursors := e.feedAll(e.admin, "path=/devices/rare")
	if !slices.Equal(names, []string{"rare"}) || len(cursors) != 1 {
		t.Fatalf("feed of /devices/rare: %v after cursors %v", names, cursors)
	}
	m := e.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(m.body), "\nstrata_api_event_feed_short_pages_total 1\n") {
		t.Fatal("strata_api_event_feed_short_pages_total is not 1")
	}
}
