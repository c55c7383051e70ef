package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Sorted and counted searches (docs/api.md, "Search").
//
// A search in path order is answered a page at a time by the backend's
// index. Sorting by anything else, or counting the matches, needs every
// match: the API walks the backend's pages in path order (maxSearchLimit
// at a time) and keeps the page that sorts first after the cursor, so
// both stores and every scope of the caller's grants give one order. The
// walk is bounded by maxSortedMatches: a sorted search over more matches
// is refused (narrow it), and a count stops there and says so.

// maxSortedMatches bounds the matches a sorted or counted search walks.
const maxSortedMatches = 200_000

// sortSpec is a parsed sort parameter: by what, and which way.
type sortSpec struct {
	field string // "name", "type", "tenant", "label.<key>" or "var.<name>"
	desc  bool
}

// parseSort reads the sort parameter: path (the default, "" here) or one
// of the fields of sortSpec, with a leading "-" for descending.
func parseSort(v string) (sortSpec, error) {
	s := sortSpec{}
	if rest, ok := strings.CutPrefix(v, "-"); ok {
		s.desc, v = true, rest
	}
	switch {
	case v == "path" && !s.desc:
		return sortSpec{}, nil
	case v == "path", v == "name", v == "type", v == "tenant":
	case strings.HasPrefix(v, "label."):
		if err := model.ValidText("sort label key", strings.TrimPrefix(v, "label."), model.MaxLabelLen); err != nil {
			return s, err
		}
	case strings.HasPrefix(v, "var."):
		if err := model.ValidateName(strings.TrimPrefix(v, "var.")); err != nil {
			return s, invalidf("sort variable %q: %v", strings.TrimPrefix(v, "var."), err)
		}
	default:
		return s, invalidf("sort %q: want path, name, type, tenant, label.<key> or var.<name>, with - for descending", v)
	}
	s.field = v
	return s, nil
}

// sortKey is where a context sorts: its value for the sort field (absent
// ones last, whichever the direction), ties broken by path.
type sortKey struct {
	present bool
	rank    int     // null, false, true, number, string, other JSON
	num     float64 // rank 3
	text    string  // rank 4: the string; rank 5: the compact JSON
	path    model.Path
}

// JSON value ranks in sort order.
const (
	rankNull = iota
	rankFalse
	rankTrue
	rankNumber
	rankString
	rankOther
)

// keyOf returns where c sorts under s.
func (s sortSpec) keyOf(c *model.Context) sortKey {
	k := sortKey{path: c.Path}
	switch {
	case s.field == "path":
		k.present, k.rank, k.text = true, rankString, string(c.Path)
	case s.field == "name":
		k.present, k.rank, k.text = true, rankString, c.Path.Name()
	case s.field == "type":
		k.present, k.rank, k.text = true, rankString, c.Type
	case s.field == "tenant":
		k.present, k.rank, k.text = true, rankString, c.Tenant
	case strings.HasPrefix(s.field, "label."):
		v, ok := c.Labels[strings.TrimPrefix(s.field, "label.")]
		k.present, k.rank, k.text = ok, rankString, v
	default:
		v, ok := c.Variables[strings.TrimPrefix(s.field, "var.")]
		if ok {
			k.present = true
			k.rank, k.num, k.text = valueRank(v.Value)
		}
	}
	return k
}

// valueRank places a JSON value in the sort order.
func valueRank(raw json.RawMessage) (rank int, num float64, text string) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return rankNull, 0, ""
	case string(raw) == "false":
		return rankFalse, 0, ""
	case string(raw) == "true":
		return rankTrue, 0, ""
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return rankString, 0, s
		}
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
			return rankNumber, f, ""
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return rankOther, 0, string(raw)
	}
	return rankOther, 0, b.String()
}

// compare orders a and b under s: present values first, by value (the
// other way round when descending), then by path.
func (s sortSpec) compare(a, b *sortKey) int {
	if a.present != b.present {
		if a.present {
			return -1
		}
		return 1
	}
	c := 0
	if a.present {
		c = compareValues(a, b)
		if s.desc {
			c = -c
		}
	}
	if c != 0 {
		return c
	}
	return strings.Compare(string(a.path), string(b.path))
}

func compareValues(a, b *sortKey) int {
	if a.rank != b.rank {
		return a.rank - b.rank
	}
	switch a.rank {
	case rankNumber:
		switch {
		case a.num < b.num:
			return -1
		case a.num > b.num:
			return 1
		}
		return 0
	case rankString, rankOther:
		return strings.Compare(a.text, b.text)
	}
	return 0
}

// sortCursor is the after parameter of a sorted search: the key of the
// last context of the previous page, opaque to the caller.
type sortCursor struct {
	Present bool    `json:"s"`
	Rank    int     `json:"r,omitempty"`
	Num     float64 `json:"n,omitempty"`
	Text    string  `json:"t,omitempty"`
	Path    string  `json:"p"`
}

func encodeCursor(k *sortKey) string {
	b, _ := json.Marshal(sortCursor{Present: k.present, Rank: k.rank, Num: k.num, Text: k.text, Path: string(k.path)})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*sortKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, invalidf("after: not a cursor of this sort (pass the next of the previous page)")
	}
	var c sortCursor
	if err := json.Unmarshal(b, &c); err != nil || c.Rank < rankNull || c.Rank > rankOther {
		return nil, invalidf("after: not a cursor of this sort (pass the next of the previous page)")
	}
	p, err := model.ParsePath(c.Path)
	if err != nil {
		return nil, invalidf("after: %v", err)
	}
	return &sortKey{present: c.Present, rank: c.Rank, num: c.Num, text: c.Text, path: p}, nil
}

// Counter is what a search backend may add: counting a query's matches
// (After and Limit aside) up to limit without reading every page; capped
// says it stopped there. Without it, a count walks the pages.
type Counter interface {
	CountSearch(ctx context.Context, q SearchQuery, limit int) (n int, capped bool, err error)
}

// countSearch counts q's matches over every scope, through the backend's
// Counter.
func countSearch(ctx context.Context, c Counter, q SearchQuery, scopes []model.Path) (walked, error) {
	var w walked
	for _, scope := range scopes {
		sq := q
		sq.Prefix = scope
		n, capped, err := c.CountSearch(ctx, sq, maxSortedMatches-w.total)
		if err != nil {
			return w, fmt.Errorf("count %s: %w", scope, err)
		}
		if w.total += n; capped || w.total >= maxSortedMatches {
			w.total, w.capped = min(w.total, maxSortedMatches), true
			return w, nil
		}
	}
	return w, nil
}

// walked is what a sorted or counted search found: the page and the
// number of matches.
type walked struct {
	page   []*model.Context
	next   string // cursor of the following page, "" when none
	total  int
	capped bool // total stopped at maxSortedMatches
}

// walkSearch runs q over every scope to the end, keeping what p may see:
// with sorting, the first q.Limit matches after the cursor in that order;
// without, only the count. A sorted walk over more than maxSortedMatches
// is refused; a count stops there.
func (s *Server) walkSearch(ctx context.Context, p *auth.Principal, q SearchQuery, scopes []model.Path, sort *sortSpec, after *sortKey) (walked, error) {
	if c, ok := s.cfg.Search.(Counter); ok && sort == nil {
		return countSearch(ctx, c, q, scopes) // q.Tenants holds p's tenants
	}
	var (
		w    walked
		keep []sortKey
		ctxs = map[model.Path]*model.Context{}
	)
	cut := func() {
		slices.SortFunc(keep, func(a, b sortKey) int { return sort.compare(&a, &b) })
		for _, k := range keep[min(len(keep), q.Limit+1):] {
			delete(ctxs, k.path)
		}
		keep = keep[:min(len(keep), q.Limit+1)]
	}
	for _, scope := range scopes {
		sq := q
		sq.Prefix, sq.After, sq.Limit = scope, "", maxSearchLimit
		for {
			page, err := s.cfg.Search.Search(ctx, sq)
			if err != nil {
				return w, fmt.Errorf("search %s: %w", scope, err)
			}
			for _, c := range page.Contexts {
				if !p.SeesTenant(c.Tenant) {
					continue
				}
				if w.total++; w.total > maxSortedMatches {
					if sort != nil {
						return w, invalidf("sorting is limited to %d matches: narrow the search (by path, type, label or variable)", maxSortedMatches)
					}
					w.total, w.capped = maxSortedMatches, true
					return w, nil
				}
				if sort == nil {
					continue
				}
				k := sort.keyOf(c)
				if after != nil && sort.compare(&k, after) <= 0 {
					continue
				}
				keep = append(keep, k)
				ctxs[c.Path] = c
				if len(keep) >= 4*(q.Limit+1) {
					cut()
				}
			}
			if page.Next == "" {
				break
			}
			sq.After = page.Next
		}
	}
	if sort != nil {
		cut()
		if len(keep) > q.Limit {
			keep = keep[:q.Limit]
			w.next = encodeCursor(&keep[len(keep)-1])
		}
		for _, k := range keep {
			w.page = append(w.page, ctxs[k.path])
		}
	}
	return w, nil
}
