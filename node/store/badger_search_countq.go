package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// CountSearch counts the contexts q matches (q.After and q.Limit aside),
// stopping at limit: n is then limit and capped true. It walks the
// rarest list of q's filters like a search, without reading contexts: a
// candidate that passes the signatures of the other filters (which may
// be a false positive) has its posting in each other list read, or,
// when the query holds a hashed term (which may collide), the context is
// read and matched. A query without a filter the index holds is counted
// by reading its pages. Results are those of counting every page of
// Search.
func (s *Badger) CountSearch(ctx context.Context, q SearchQuery, limit int) (n int, capped bool, err error) {
	q.After, q.Limit = "", 1
	if err := normalizeSearch(&q); err != nil {
		return 0, false, fmt.Errorf("store: count: %w", err)
	}
	m, err := newMatcher(&q)
	if err != nil {
		return 0, false, fmt.Errorf("store: count: %w", err)
	}
	lists, ok := queryTerms(&q)
	if !ok {
		return 0, false, nil
	}
	if len(lists) == 0 {
		return s.countByPages(ctx, q, limit)
	}
	from, to, start := startAfter(&q)
	txn, over := s.view(from, start)
	defer txn.Discard()
	count := func() bool { n++; return n < limit }
	if !q.Prefix.IsRoot() {
		c, err := s.Context(q.Prefix)
		switch {
		case errors.Is(err, model.ErrNotFound):
		case err != nil:
			return 0, false, err
		case m.match(c) && !count():
			return n, true, nil
		}
	}
	inOverlay := make(map[model.Path]bool, len(over))
	for _, it := range over {
		inOverlay[it.path] = true
		if it.c != nil && m.match(it.c) && !count() {
			return n, true, nil
		}
	}
	plan, err := planSearch(txn, lists)
	if err != nil || plan.lead == nil {
		return n, false, err
	}
	hashed := false
	for _, l := range append(plan.check, plan.lead) {
		for _, t := range l {
			hashed = hashed || t[2] == tagHashed
		}
	}
	lead := newPostings(txn, plan.lead)
	defer lead.close()
	full := false
	steps := 0
	err = lead.walk(start, to, func(path string, sig []byte) (bool, error) {
		if steps++; steps%4096 == 0 && ctx.Err() != nil {
			return false, ctx.Err()
		}
		p := model.Path(path)
		if inOverlay[p] {
			return true, nil
		}
		for _, l := range plan.check {
			if !sigHoldsAny(sig, l) {
				return true, nil
			}
		}
		if !hashed {
			// The postings are exact: confirm what the signatures passed
			// with one small read per other filter.
			for _, l := range plan.check {
				if held, err := holds(txn, l, p); err != nil || !held {
					return err == nil, err
				}
			}
		} else {
			c, err := readIndexed(txn, p)
			if err != nil || c == nil || !m.match(c) {
				return err == nil, err
			}
		}
		full = !count()
		return !full, nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: count %s: %w", q.Prefix, err)
	}
	return n, full, nil
}

// countByPages counts by reading every page of the search.
func (s *Badger) countByPages(ctx context.Context, q SearchQuery, limit int) (n int, capped bool, err error) {
	q.Limit = MaxSearchLimit
	for {
		page, err := s.Search(ctx, q)
		if err != nil {
			return 0, false, err
		}
		n += len(page.Contexts)
		if n >= limit {
			return limit, true, nil
		}
		if page.Next == "" {
			return n, false, nil
		}
		q.After = page.Next
	}
}

// holds says whether p has a posting for one of terms in txn.
func holds(txn *badger.Txn, terms [][]byte, p model.Path) (bool, error) {
	for _, t := range terms {
		_, err := txn.Get(postingKey(t, p))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return false, err
		}
	}
	return false, nil
}

// readIndexed reads the context of p's c key in txn (nil when none).
func readIndexed(txn *badger.Txn, p model.Path) (*model.Context, error) {
	item, err := txn.Get(contextKey(p))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c := new(model.Context)
	if err := item.Value(func(v []byte) error { return model.Unmarshal(v, c) }); err != nil {
		return nil, fmt.Errorf("decode context %s: %w", p, err)
	}
	return c, nil
}
