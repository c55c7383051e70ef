package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"

	"github.com/strata-dm/strata/model"
)

// Inventory search: the contexts of a subtree that match a type, labels and
// variable values, in path order, a page at a time (keyset pagination on
// the path). Device inventory arrives as variables of /devices/<id>, so an
// inventory filter is a variable filter.
//
// Both stores answer the same query the same way (storetest.RunSearch).
// Badger intersects the posting lists of its search index, walking them in
// path order (badger_search.go), and scans the subtree for a query without
// filters (ScanSearch); PostgreSQL uses the
// path index and one GIN index on labels and variable values together, and
// reads from a read replica when one fits (postgres_search.go).

// The query and its bounds are the model's (model/search.go).
type (
	SearchQuery = model.SearchQuery
	SearchPage  = model.SearchPage
)

// Bounds of a search page.
const (
	DefaultSearchLimit = model.DefaultSearchLimit
	MaxSearchLimit     = model.MaxSearchLimit
	MaxSearchFilters   = model.MaxSearchFilters
)

// normalizeSearch validates q and fills its defaults. Errors wrap
// model.ErrInvalid (or model.ErrInvalidPath).
func normalizeSearch(q *SearchQuery) error {
	if q.Prefix == "" {
		q.Prefix = model.Root
	}
	p, err := model.ParsePath(string(q.Prefix))
	if err != nil {
		return err
	}
	q.Prefix = p
	if q.After != "" {
		if q.After, err = model.ParsePath(string(q.After)); err != nil {
			return err
		}
	}
	switch {
	case q.Limit == 0:
		q.Limit = DefaultSearchLimit
	case q.Limit < 0 || q.Limit > MaxSearchLimit:
		return fmt.Errorf("%w: search limit %d not in 1..%d", model.ErrInvalid, q.Limit, MaxSearchLimit)
	}
	if len(q.Labels)+len(q.Vars) > MaxSearchFilters {
		return fmt.Errorf("%w: more than %d search filters", model.ErrInvalid, MaxSearchFilters)
	}
	for name, v := range q.Vars {
		if err := model.ValidateName(name); err != nil {
			return fmt.Errorf("%w: variable filter %q: %v", model.ErrInvalid, name, err)
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: variable filter %q: value is not JSON", model.ErrInvalid, name)
		}
		if !jsonbSafe(v) {
			return fmt.Errorf("%w: variable filter %q: value has a NUL character or a number beyond range", model.ErrInvalid, name)
		}
	}
	return nil
}

// belowRange returns the bounds [from, to) in byte order of the paths
// strictly below prefix. With the root excepted, the subtree of /a is /a
// itself and [/a/, /a0): '0' is the byte after '/', so no sibling such as
// /a-b falls inside.
func belowRange(prefix model.Path) (from, to string) {
	if prefix.IsRoot() {
		return "/", "0" // '0' is the byte after '/'
	}
	return string(prefix) + "/", string(prefix) + "0"
}

// matcher checks contexts against a query in Go (Badger, and tests).
type matcher struct {
	q    *SearchQuery
	vars map[string]jsonValue
}

func newMatcher(q *SearchQuery) (*matcher, error) {
	m := &matcher{q: q, vars: make(map[string]jsonValue, len(q.Vars))}
	for name, raw := range q.Vars {
		v, err := model.DecodeValue(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: variable filter %q: %v", model.ErrInvalid, name, err)
		}
		m.vars[name] = v
	}
	return m, nil
}

func (m *matcher) match(c *model.Context) bool {
	q := m.q
	if q.Type != "" && c.Type != q.Type {
		return false
	}
	if q.Tenants != nil && !slices.Contains(q.Tenants, c.Tenant) {
		return false
	}
	if !c.Path.Within(q.Prefix) {
		return false
	}
	for k, want := range q.Labels {
		if got, ok := c.Labels[k]; !ok || got != want {
			return false
		}
	}
	for name, want := range m.vars {
		got, ok := c.Variables[name]
		if !ok {
			return false
		}
		raw := got.Value
		if len(raw) == 0 {
			raw = json.RawMessage("null")
		}
		if bytes.Equal(raw, q.Vars[name]) {
			continue
		}
		v, err := model.DecodeValue(raw)
		if err != nil || !model.EqualDecoded(v, want) {
			return false
		}
	}
	return true
}

// jsonValue is a decoded JSON value whose numbers are exact (json.Number).
type jsonValue = any

// jsonbSafe reports whether PostgreSQL's jsonb can hold the JSON value
// raw: no NUL character in a string or key, and every number within the
// range of numeric. A variable value that is not jsonb-safe is left out of
// the PostgreSQL search column (it stays in the context), so only Badger
// finds it; queries with such a filter value are refused by both stores.
func jsonbSafe(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case string:
			if strings.IndexByte(t, 0) >= 0 {
				return false
			}
		case json.Number:
			if !numericSafe(string(t)) {
				return false
			}
		}
	}
}

// numericSafe bounds a JSON number to what PostgreSQL's numeric accepts
// (up to 131072 digits before the decimal point and 16383 after), with a
// margin: the decimal exponent must stay within ±16000.
func numericSafe(n string) bool {
	mant, exp, hasExp := strings.Cut(strings.ToLower(n), "e")
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(mant, "-"), ".")
	e := 0
	if hasExp {
		x, ok := new(big.Int).SetString(exp, 10)
		if !ok || !x.IsInt64() || x.Int64() > 16000 || x.Int64() < -16000 {
			return false
		}
		e = int(x.Int64())
	}
	return len(intPart)+e <= 16000 && len(frac)-e <= 16000
}

// ScanSearch answers q by scanning the subtree in key order, decoding
// every context below the prefix after the cursor until a page is full:
// linear in the size of the subtree for selective filters. It is what
// Search does for a query without filters, and the reference the search
// index is checked against (tests, tests/bench/search). It stops early
// when ctx ends.
func (s *Badger) ScanSearch(ctx context.Context, q SearchQuery) (SearchPage, error) {
	if err := normalizeSearch(&q); err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	m, err := newMatcher(&q)
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	return s.scanSearch(ctx, &q, m)
}

// pageBuilder fills a page of q.Limit matches and finds its cursor.
type pageBuilder struct {
	page  SearchPage
	limit int
}

// add appends c and reports whether the page is complete (c is the one
// match past a full page, which only sets the cursor).
func (b *pageBuilder) add(c *model.Context) bool {
	if len(b.page.Contexts) == b.limit {
		b.page.Next = b.page.Contexts[b.limit-1].Path
		return true
	}
	b.page.Contexts = append(b.page.Contexts, c)
	return false
}

// startAfter returns the subtree's key range start and the first path a
// page may hold (after q.After).
func startAfter(q *SearchQuery) (from, to, start string) {
	from, to = belowRange(q.Prefix)
	start = from
	if string(q.After) >= from {
		start = string(q.After) + "\x00" // first path strictly after
	}
	return from, to, start
}

// addPrefixContext adds the context at q.Prefix itself when the page
// starts before it (it sorts before its subtree).
func (s *Badger) addPrefixContext(q *SearchQuery, m *matcher, b *pageBuilder) error {
	if q.Prefix.IsRoot() || q.After >= q.Prefix {
		return nil
	}
	c, err := s.Context(q.Prefix)
	switch {
	case errors.Is(err, model.ErrNotFound):
	case err != nil:
		return err
	case m.match(c):
		b.add(c)
	}
	return nil
}

func (s *Badger) scanSearch(ctx context.Context, q *SearchQuery, m *matcher) (SearchPage, error) {
	b := &pageBuilder{limit: q.Limit}
	from, _, start := startAfter(q)
	txn, over := s.view(from, start)
	defer txn.Discard()
	err := func() error {
		if err := s.addPrefixContext(q, m, b); err != nil {
			return err
		}
		n := 0
		prefix := append([]byte{pContext}, from...)
		return scanContexts(txn, over, prefix, contextKey(model.Path(start)), func(c *model.Context) (bool, error) {
			if n++; n%1024 == 0 && ctx.Err() != nil {
				return false, ctx.Err()
			}
			return !(m.match(c) && b.add(c)), nil
		})
	}()
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search %s: %w", q.Prefix, err)
	}
	return b.page, nil
}
