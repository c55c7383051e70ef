package store

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// The event feed's benchmark: the Overview's first page of recent
// warnings and alerts (50, newest first) over a node of feedDevices
// devices with feedEvents events each, one in ten a warning or alert,
// read from the feed index, beside what the same page costs without it
// (every context's history read, as a subtree query had to), in one run:
//
//	go test ./node/store -run XXX -bench 'FeedFirstPage' -benchtime 20x
//
// BenchmarkFeedFirstPagePostgres is the same on a throwaway PostgreSQL
// cluster on loopback.
const (
	feedDevices = 10000
	feedEvents  = 20
)

// feedStore is what the benchmark reads.
type feedStore interface {
	model.Store
	model.EventFeed
}

func feedBenchBadger(b *testing.B) feedStore {
	b.Helper()
	s, err := OpenBadger(BadgerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// feedBenchLoad writes the benchmark's devices and events into s.
func feedBenchLoad(b *testing.B, s feedStore) {
	b.Helper()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	muts := make([]model.Mutation, 0, 1000)
	flush := func() {
		if _, err := m.Apply(ctx, muts...); err != nil {
			b.Fatal(err)
		}
		muts = muts[:0]
	}
	tenants := []string{"acme", "globex", "initech", "umbrella"}
	for d := range feedDevices {
		muts = append(muts, model.Mutation{Op: model.OpPut, Path: model.Path("/devices/d" + strconv.Itoa(d)), Type: "device", Tenant: tenants[d%len(tenants)]})
		if len(muts) == cap(muts) {
			flush()
		}
	}
	flush()
	levels := []model.Level{model.LevelWarning, model.LevelInfo, model.LevelInfo, model.LevelInfo, model.LevelInfo,
		model.LevelInfo, model.LevelInfo, model.LevelInfo, model.LevelInfo, model.LevelAlert}
	for e := range feedEvents {
		for d := range feedDevices {
			muts = append(muts, model.Mutation{Op: model.OpEvent, Path: model.Path("/devices/d" + strconv.Itoa(d)),
				Event: &model.Event{Name: "e", Level: levels[(d+e)%len(levels)]}})
			if len(muts) == cap(muts) {
				flush()
			}
		}
	}
	flush()
}

func BenchmarkFeedFirstPage(b *testing.B) {
	s := feedBenchBadger(b)
	feedBenchLoad(b, s)
	benchFeed(b, s)
}

func BenchmarkFeedFirstPagePostgres(b *testing.B) {
	c, err := pgtest.StartWith(pgtest.Options{})
	if err != nil {
		pgtest.Missing(b)
		b.Fatal(err)
	}
	b.Cleanup(c.Stop) // after the database is dropped
	s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: c.NewDatabase(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	feedBenchLoad(b, s)
	if _, err := s.Pool().Exec(context.Background(), `ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	benchFeed(b, s)
}

func benchFeed(b *testing.B, s feedStore) {
	ctx := context.Background()
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			p, err := s.Feed(ctx, model.FeedQuery{Limit: 50})
			if err != nil || len(p.Events) != 50 {
				b.Fatal(len(p.Events), err)
			}
		}
	})
	b.Run("index-one-tenant", func(b *testing.B) {
		for b.Loop() {
			p, err := s.Feed(ctx, model.FeedQuery{Limit: 50, Tenants: []string{"acme", ""}})
			if err != nil || len(p.Events) != 50 {
				b.Fatal(len(p.Events), err)
			}
		}
	})
	b.Run("scan-every-context", func(b *testing.B) {
		for b.Loop() {
			var all []model.Event
			_, err := s.Snapshot("/devices", func(c *model.Context) error {
				for _, l := range []model.Level{model.LevelWarning, model.LevelAlert} {
					evs, err := s.Events(c.Path, model.EventQuery{Level: l, Limit: 50})
					if err != nil {
						return err
					}
					all = append(all, evs...)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			slices.SortFunc(all, func(x, y model.Event) int { return int(int64(y.Seq) - int64(x.Seq)) })
			if len(all) < 50 {
				b.Fatal(len(all))
			}
		}
	})
}
