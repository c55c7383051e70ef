package store

import (
	"context"
	"fmt"
	"log/slog"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dm/strata/model"
)

// The event feed on PostgreSQL (model.EventFeed), through the partial
// indexes of migration 0004: a window of the notable events of q's
// tenants is read newest first by index, and the subtree and level are
// filtered in the database, so only matching documents come back. At most
// model.MaxFeedScan rows are read per call, as on Badger.

// Interface guard.
var _ model.EventFeed = (*Postgres)(nil)

// feedWindow is how many index rows one feed query reads at most.
const feedWindow = 1000

const (
	feedQueryAll = `SELECT seq, CASE WHEN (path = $3 OR $3 = '/' OR starts_with(path, $3 || '/'))
			AND ($4 = 'warning' OR level = 'alert') THEN doc END
		FROM events WHERE level IN ('warning', 'alert') AND seq < $1
		ORDER BY seq DESC LIMIT $2`
	feedQueryTenants = `SELECT seq, CASE WHEN (path = $3 OR $3 = '/' OR starts_with(path, $3 || '/'))
			AND ($4 = 'warning' OR level = 'alert') THEN doc END
		FROM events WHERE level IN ('warning', 'alert') AND seq < $1 AND tenant = ANY($5::text[])
		ORDER BY seq DESC LIMIT $2`
)

// Feed answers q, on a read replica when one fits (see ReadStale).
func (s *Postgres) Feed(ctx context.Context, q model.FeedQuery) (model.FeedPage, error) {
	if err := normalizeFeed(&q); err != nil {
		return model.FeedPage{}, fmt.Errorf("store: feed: %w", err)
	}
	if q.Tenants != nil && len(q.Tenants) == 0 {
		return model.FeedPage{}, nil
	}
	first := q.Before
	if first == 0 || first > math.MaxInt64 {
		first = math.MaxInt64
	}
	var page model.FeedPage
	err := s.ReadStale(ctx, func(ctx context.Context, pool *pgxpool.Pool) error {
		page = model.FeedPage{}
		before := int64(first)
		scanned := 0
		for {
			want := min(feedWindow, model.MaxFeedScan-scanned)
			if want == 0 {
				page.Next = uint64(before)
				return nil
			}
			args := []any{before, want, string(q.Prefix), string(q.Level)}
			sql := feedQueryAll
			if q.Tenants != nil {
				sql, args = feedQueryTenants, append(args, q.Tenants)
			}
			rows, err := pool.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			var (
				seq  int64
				doc  []byte
				read int
				full bool
			)
			_, err = pgx.ForEachRow(rows, []any{&seq, &doc}, func() error {
				read++
				if full {
					return nil
				}
				before = seq
				if doc == nil {
					return nil
				}
				var ev model.Event
				if err := model.Unmarshal(doc, &ev); err != nil {
					return fmt.Errorf("decode event %d: %w", seq, err)
				}
				page.Events = append(page.Events, ev)
				if len(page.Events) == q.Limit {
					full = true
					page.Next = uint64(seq)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if full || read < want {
				return nil // a full page, or no more notable events
			}
			scanned += read
		}
	})
	if err != nil {
		return model.FeedPage{}, fmt.Errorf("store: feed: %w", err)
	}
	return page, nil
}

// backfillFeed fills the tenant column of notable events written before
// it existed (migration 0004), from their CBOR docs, a batch at a time.
// It is idempotent, so processes that open the database at once may all
// run it.
func backfillFeed(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	total := 0
	for {
		rows, err := pool.Query(ctx, `SELECT path, seq, doc FROM events
			WHERE tenant IS NULL AND level IN ('warning', 'alert') LIMIT $1`, backfillBatch)
		if err != nil {
			return err
		}
		var (
			paths, tenants []string
			seqs           []int64
			path           string
			seq            int64
			doc            []byte
		)
		_, err = pgx.ForEachRow(rows, []any{&path, &seq, &doc}, func() error {
			var ev model.Event
			if err := model.Unmarshal(doc, &ev); err != nil {
				return fmt.Errorf("decode event %d of %s: %w", seq, path, err)
			}
			paths, seqs, tenants = append(paths, path), append(seqs, seq), append(tenants, ev.Tenant)
			return nil
		})
		if err != nil {
			return fmt.Errorf("backfill event tenants: %w", err)
		}
		if len(paths) == 0 {
			if total > 0 {
				log.Info("filled the tenant of existing notable events", "events", total)
			}
			return nil
		}
		if _, err := pool.Exec(ctx, `UPDATE events e SET tenant = u.t
			FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(p, s, t)
			WHERE e.path = u.p AND e.seq = u.s AND e.tenant IS NULL`, paths, seqs, tenants); err != nil {
			return fmt.Errorf("backfill event tenants: %w", err)
		}
		total += len(paths)
	}
}
