package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// The event feed: GET /api/v1/events?path=&level=&limit=&before=
// (docs/api.md, "Event feed"): the warnings and alerts of a subtree,
// newest first. As search, the API hands the store plain filters (the
// subtrees the caller's grants allow under the asked path, the tenants it
// sees); the store's index never yields another tenant's events, so
// neither the page, its length nor its cursor depend on them. Then each
// event passes the rules of the per-context history (seesEvent, and its
// context visible to the caller now).

// EventFeed is the feed backend (the node's store). Errors wrapping
// model.ErrInvalid are answered 400.
type EventFeed = model.EventFeed

// feedRounds bounds the store calls that fill one page when events the
// caller may not see (a shared device's job events, history of a context
// since given to another tenant) were left out, or the store stopped at
// its scan bound: a request reads at most feedRounds*model.MaxFeedScan
// index entries.
const feedRounds = 4

// parseFeed reads the query string strictly, as search does: unknown and
// repeated parameters are 400.
func parseFeed(v url.Values) (model.FeedQuery, error) {
	q := model.FeedQuery{Prefix: model.Root, Level: model.LevelWarning, Limit: model.DefaultFeedLimit}
	for key, vals := range v {
		if len(vals) != 1 {
			return q, invalidf("parameter %q given %d times", key, len(vals))
		}
		val := vals[0]
		var err error
		switch key {
		case "path":
			if q.Prefix, err = model.ParsePath(val); err != nil {
				return q, err
			}
		case "level":
			switch l := model.Level(val); l {
			case model.LevelWarning, model.LevelAlert:
				q.Level = l
			default:
				return q, invalidf("level must be warning or alert, not %q", val)
			}
		case "limit":
			if q.Limit, err = strconv.Atoi(val); err != nil || q.Limit < 1 || q.Limit > model.MaxFeedLimit {
				return q, invalidf("limit must be 1 to %d", model.MaxFeedLimit)
			}
		case "before":
			if q.Before, err = strconv.ParseUint(val, 10, 64); err != nil || q.Before == 0 {
				return q, invalidf("before must be a positive sequence number")
			}
		case "consistent": // checked before the handler (consistent.go)
		default:
			return q, invalidf("unknown parameter %q (path, level, limit, before, consistent)", key)
		}
	}
	return q, nil
}

func (s *Server) feed(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Feed == nil {
		return apiError(http.StatusNotImplemented, codeNotImplemented, "the event feed is not enabled on this node")
	}
	q, err := parseFeed(r.URL.Query())
	if err != nil {
		return err
	}
	// Forbidden depends on the caller only; then a missing or hidden
	// subtree is the same 404.
	scopes, err := searchScopes(p, q.Prefix)
	if err != nil {
		return err
	}
	if _, err := s.visibleContext(p, q.Prefix); err != nil {
		return err
	}
	if q.Tenants, err = searchTenants(p, ""); err != nil {
		return err
	}
	limit := q.Limit
	page := eventPage{Events: []model.Event{}}
	for range feedRounds {
		q.Limit = limit - len(page.Events)
		evs, next, err := s.feedScopes(r.Context(), q, scopes)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if s.seesFeedEvent(p, &ev) {
				page.Events = append(page.Events, ev)
			}
		}
		page.Next = next
		if len(page.Events) == limit || next == 0 {
			break
		}
		q.Before = next
	}
	if len(page.Events) == limit {
		page.Next = page.Events[limit-1].Seq
	} else if page.Next != 0 {
		s.metrics.feedShort.Inc()
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// seesFeedEvent applies the per-context history's rules to ev.
func (s *Server) seesFeedEvent(p *auth.Principal, ev *model.Event) bool {
	if !seesEvent(p, ev.Tenant, ev.Name) {
		return false
	}
	c, err := s.model.Get(ev.Path)
	return err == nil && p.SeesTenant(c.Tenant)
}

// feedScopes reads one page of q over every scope, merged newest first.
// It returns only events every scope has been read past (each scope's
// store page covers the sequence numbers from its cursor up), so the
// cursor returned, when not 0, loses nothing.
func (s *Server) feedScopes(ctx context.Context, q model.FeedQuery, scopes []model.Path) ([]model.Event, uint64, error) {
	var (
		evs     []model.Event
		covered uint64 // every scope has been read down to here
	)
	for _, scope := range scopes {
		sq := q
		sq.Prefix = scope
		page, err := s.cfg.Feed.Feed(ctx, sq)
		if err != nil {
			return nil, 0, fmt.Errorf("event feed of %s: %w", scope, err)
		}
		evs = append(evs, page.Events...)
		covered = max(covered, page.Next)
	}
	if len(scopes) > 1 {
		slices.SortFunc(evs, func(a, b model.Event) int {
			switch {
			case a.Seq > b.Seq:
				return -1
			case a.Seq < b.Seq:
				return 1
			}
			return 0
		})
		evs = slices.DeleteFunc(evs, func(ev model.Event) bool { return ev.Seq < covered })
	}
	if len(evs) > q.Limit {
		evs, covered = evs[:q.Limit], evs[q.Limit-1].Seq
	}
	return evs, covered, nil
}
