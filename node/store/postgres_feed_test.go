package store

import (
	"context"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// TestPostgresFeedBackfill: notable events written before the tenant
// column existed (migration 0004) get their tenant at the next open, so
// a tenant's feed finds them; info events are left as they are.
func TestPostgresFeedBackfill(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	s := openTestPostgres(t, dsn)
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []string{"/a", "/b"} {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: model.MustPath(p), Type: "device", Tenant: "t" + p[1:]}); err != nil {
			t.Fatal(err)
		}
	}
	muts := make([]model.Mutation, 0, backfillBatch+5)
	for i := range backfillBatch + 5 {
		p, l := model.Path("/a"), model.LevelWarning
		if i%2 == 1 {
			p = "/b"
		}
		if i%5 == 0 {
			l = model.LevelInfo
		}
		muts = append(muts, model.Mutation{Op: model.OpEvent, Path: p, Event: &model.Event{Level: l}})
	}
	if _, err := m.Apply(ctx, muts...); err != nil {
		t.Fatal(err)
	}
	m.Close()
	want := map[string]int{}
	for _, tenant := range []string{"ta", "tb"} {
		page, err := s.Feed(ctx, model.FeedQuery{Tenants: []string{tenant}, Limit: model.MaxFeedLimit})
		if err != nil {
			t.Fatal(err)
		}
		want[tenant] = len(page.Events)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE events SET tenant = NULL`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTestPostgres(t, dsn)
	defer s.Close()
	var missing, info int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE level <> 'info'), count(*) FILTER (WHERE level = 'info')
		FROM events WHERE tenant IS NULL`).Scan(&missing, &info); err != nil || missing != 0 || info == 0 {
		t.Fatalf("after open: %d notable events without tenant (want 0), %d info (want some), %v", missing, info, err)
	}
	for tenant, n := range want {
		page, err := s.Feed(ctx, model.FeedQuery{Tenants: []string{tenant}, Limit: model.MaxFeedLimit})
		if err != nil || len(page.Events) != n || n == 0 {
			t.Fatalf("feed of %s after backfill: %d events, want %d (%v)", tenant, len(page.Events), n, err)
		}
		for _, ev := range page.Events {
			if ev.Tenant != tenant {
				t.Fatalf("feed of %s holds an event of %q", tenant, ev.Tenant)
			}
		}
	}
}
