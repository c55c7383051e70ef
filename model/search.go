package model

import "encoding/json"

// Inventory search: the contexts of a subtree that match a type, labels
// and variable values, in path order, a page at a time. The query belongs
// to the model's vocabulary so that its producers (the API) and its
// answerers (the stores) share one definition.

// Bounds of a search page.
const (
	DefaultSearchLimit = 100
	MaxSearchLimit     = 1000
	// MaxSearchFilters bounds the label and variable filters of a query.
	MaxSearchFilters = 64
)

// SearchQuery selects contexts. Every filter given must hold (AND).
type SearchQuery struct {
	// Prefix is the subtree searched: the context at Prefix and those
	// below it. "" or "/" is the whole tree.
	Prefix Path
	// Type, when set, is the context type wanted.
	Type string
	// Labels each label must be present with exactly this value.
	Labels map[string]string
	// Vars each variable must be present with a value equal to this JSON
	// value: strings, booleans and null by value, numbers numerically (4
	// equals 4.0), objects and arrays member by member.
	Vars map[string]json.RawMessage
	// Tenants, when non-nil, are the tenants whose contexts may be
	// returned ("" names shared contexts); nil allows every tenant, and an
	// empty non-nil list none.
	Tenants []string
	// After is the keyset cursor: only paths after it (byte order).
	After Path
	// Limit is the page size, 1..MaxSearchLimit (0: DefaultSearchLimit).
	Limit int
}

// SearchPage is one page of results, in path (byte) order. Next is the
// cursor for the following page (pass it as After), "" when no more
// contexts match.
type SearchPage struct {
	Contexts []*Context
	Next     Path
}
