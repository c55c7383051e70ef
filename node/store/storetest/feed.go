package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// testFeed checks model.EventFeed: only notable events, newest first,
// within the subtree (not a sibling sharing its prefix bytes), of the
// tenants asked for, paged by cursor, and gone with their context or
// when pruned.
func testFeed(t *testing.T, m *model.Model, s model.Store) {
	f, ok := s.(model.EventFeed)
	if !ok {
		t.Skip("the store has no event feed")
	}
	ctx := context.Background()
	put(t, m, "/a", "folder", "", nil)
	put(t, m, "/a/d1", "device", "t1", nil)
	put(t, m, "/a/d2", "device", "t2", nil)
	put(t, m, "/a-b", "folder", "", nil)
	put(t, m, "/a-b/x", "device", "t1", nil)
	put(t, m, "/s", "device", "", nil)
	var all []model.Event // notable events, oldest first
	record := func(p model.Path, l model.Level, name string) {
		t.Helper()
		es, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: p, Event: &model.Event{Level: l, Name: name}})
		if err != nil {
			t.Fatal(err)
		}
		if model.Notable(l) {
			ev := *es[0].Mutation.Event
			ev.Seq = es[0].Seq
			all = append(all, ev)
		}
	}
	paths := []model.Path{"/a/d1", "/a/d2", "/a-b/x", "/s", "/a"}
	levels := []model.Level{model.LevelInfo, model.LevelWarning, model.LevelAlert, model.LevelWarning}
	for i := range 40 {
		record(paths[i%len(paths)], levels[i%len(levels)], fmt.Sprintf("e%d", i))
	}
	feed := func(q model.FeedQuery) model.FeedPage {
		t.Helper()
		page, err := f.Feed(ctx, q)
		if err != nil {
			t.Fatalf("feed %+v: %v", q, err)
		}
		return page
	}
	want := func(keep func(ev *model.Event) bool) []string {
		var out []string
		for i := len(all) - 1; i >= 0; i-- {
			if keep(&all[i]) {
				out = append(out, all[i].Name)
			}
		}
		return out
	}
	// Every page, following Next, limit at a time.
	pages := func(q model.FeedQuery) []string {
		t.Helper()
		var out []string
		for range 100 {
			p := feed(q)
			if len(p.Events) > q.Limit && q.Limit > 0 {
				t.Fatalf("page of %d for limit %d", len(p.Events), q.Limit)
			}
			for i, ev := range p.Events {
				if i > 0 && ev.Seq >= p.Events[i-1].Seq {
					t.Fatalf("not newest first: %d after %d", ev.Seq, p.Events[i-1].Seq)
				}
				out = append(out, ev.Name)
			}
			if p.Next == 0 {
				return out
			}
			q.Before = p.Next
		}
		t.Fatal("feed pages do not end")
		return nil
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
		}
	}
	check("whole tree", names(feed(model.FeedQuery{Limit: 1000}).Events), want(func(*model.Event) bool { return true }))
	check("whole tree, pages of 3", pages(model.FeedQuery{Limit: 3}), want(func(*model.Event) bool { return true }))
	check("alerts", pages(model.FeedQuery{Level: model.LevelAlert, Limit: 4}),
		want(func(ev *model.Event) bool { return ev.Level == model.LevelAlert }))
	check("subtree /a", pages(model.FeedQuery{Prefix: "/a", Limit: 5}),
		want(func(ev *model.Event) bool { return ev.Path.Within("/a") }))
	check("one context", pages(model.FeedQuery{Prefix: "/a/d2", Limit: 2}),
		want(func(ev *model.Event) bool { return ev.Path == "/a/d2" }))
	check("tenant t1 and shared", pages(model.FeedQuery{Tenants: []string{"t1", ""}, Limit: 3}),
		want(func(ev *model.Event) bool { return ev.Tenant == "t1" || ev.Tenant == "" }))
	check("tenant t2 under /a", pages(model.FeedQuery{Prefix: "/a", Tenants: []string{"t2"}, Limit: 2}),
		want(func(ev *model.Event) bool { return ev.Tenant == "t2" && ev.Path.Within("/a") }))
	if p := feed(model.FeedQuery{Tenants: []string{}}); len(p.Events) != 0 || p.Next != 0 {
		t.Fatalf("no tenant allowed, got %v next %d", names(p.Events), p.Next)
	}
	if p := feed(model.FeedQuery{Prefix: "/nowhere"}); len(p.Events) != 0 || p.Next != 0 {
		t.Fatalf("missing subtree, got %v", names(p.Events))
	}
	// The payload and every field come back as recorded.
	first := feed(model.FeedQuery{Limit: 1})
	if len(first.Events) != 1 || first.Events[0].Seq != all[len(all)-1].Seq || first.Events[0].Tenant != all[len(all)-1].Tenant ||
		first.Events[0].Time.IsZero() || first.Next != first.Events[0].Seq {
		t.Fatalf("first = %+v, want %+v", first, all[len(all)-1])
	}
	for _, bad := range []model.FeedQuery{{Level: model.LevelInfo}, {Level: "fatal"}, {Limit: -1}, {Limit: model.MaxFeedLimit + 1}} {
		if _, err := f.Feed(ctx, bad); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("feed %+v: %v, want ErrInvalid", bad, err)
		}
	}

	// A context's events leave the feed with it.
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/a/d2"}); err != nil {
		t.Fatal(err)
	}
	all = slices.DeleteFunc(all, func(ev model.Event) bool { return ev.Path == "/a/d2" })
	check("after delete", pages(model.FeedQuery{Limit: 7}), want(func(*model.Event) bool { return true }))
	check("t2 after delete", pages(model.FeedQuery{Tenants: []string{"t2"}, Limit: 7}), nil)

	// An event keeps the tenant of its context when it was recorded.
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/a-b/x", Tenant: "t2"}); err != nil {
		t.Fatal(err)
	}
	record("/a-b/x", model.LevelAlert, "moved")
	check("t2 after move", pages(model.FeedQuery{Tenants: []string{"t2"}, Limit: 7}), []string{"moved"})

	// Pruned events leave the feed.
	if p, ok := s.(interface {
		PruneEvents(int, time.Time) (int, error)
	}); ok {
		if _, err := p.PruneEvents(2, time.Time{}); err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, p := range []model.Path{"/a-b/x", "/s", "/a", "/a/d1"} {
			evs, err := s.Events(p, model.EventQuery{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if model.Notable(ev.Level) {
					left = append(left, fmt.Sprint(ev.Seq))
				}
			}
		}
		var got []string
		for _, ev := range feed(model.FeedQuery{Limit: 1000}).Events {
			got = append(got, fmt.Sprint(ev.Seq))
		}
		slices.Sort(left)
		slices.Sort(got)
		check("after prune", got, left)
		if _, err := p.PruneEvents(100, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		check("after prune all", names(feed(model.FeedQuery{}).Events), nil)
	}
}

// testFeedScanBound: a feed over a small subtree among many notable
// events elsewhere stops after model.MaxFeedScan index entries, with a
// cursor that goes on to the one event it wants.
func testFeedScanBound(t *testing.T, m *model.Model, s model.Store) {
	f, ok := s.(model.EventFeed)
	if !ok {
		t.Skip("the store has no event feed")
	}
	ctx := context.Background()
	put(t, m, "/rare", "device", "t1", nil)
	put(t, m, "/busy", "device", "t1", nil)
	es, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/rare", Event: &model.Event{Level: model.LevelAlert, Name: "rare"}})
	if err != nil {
		t.Fatal(err)
	}
	rare := es[0].Seq
	muts := make([]model.Mutation, 0, 1000)
	for range model.MaxFeedScan / 1000 * 2 {
		muts = muts[:0]
		for range 1000 {
			muts = append(muts, model.Mutation{Op: model.OpEvent, Path: "/busy", Event: &model.Event{Level: model.LevelWarning}})
		}
		if _, err := m.Apply(ctx, muts...); err != nil {
			t.Fatal(err)
		}
	}
	for _, tenants := range [][]string{nil, {"t1"}} {
		q := model.FeedQuery{Prefix: "/rare", Tenants: tenants}
		page, err := f.Feed(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != 0 || page.Next == 0 {
			t.Fatalf("first page = %d events, next %d; want a short page with a cursor", len(page.Events), page.Next)
		}
		for range 5 {
			q.Before = page.Next
			if page, err = f.Feed(ctx, q); err != nil {
				t.Fatal(err)
			}
			if len(page.Events) > 0 || page.Next == 0 {
				break
			}
		}
		if len(page.Events) != 1 || page.Events[0].Seq != rare || page.Next != 0 {
			t.Fatalf("last page = %+v, want the one alert and no cursor", page)
		}
	}
}
