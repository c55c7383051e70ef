package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Inventory search (docs/api.md, "Search").

// SearchQuery selects contexts of a subtree; every filter given must hold.
type SearchQuery struct {
	Path   string            // subtree, default "/"
	Type   string            // context type
	Labels map[string]string // label equality
	// Vars is variable equality: each value is sent as its JSON encoding
	// (json.Marshal), so "linux" finds the string "linux" and 4 the number
	// 4; a json.RawMessage is sent as it is.
	Vars   map[string]any
	Tenant string // only this tenant (another than one's own: system users only)
	After  string // a previous page's Next
	Limit  int    // 1..1000, 0 for the server's default (100)
	// Sort is the order: "" (path), "name", "type", "tenant",
	// "label.<key>" or "var.<name>", with a leading "-" for descending.
	Sort string
	// Count asks for Total, the number of matches.
	Count bool
}

// SearchPage is a page of matching contexts in path order; Next is set
// when more may follow (pass it as SearchQuery.After).
type SearchPage struct {
	Contexts []Context `json:"contexts"`
	Next     string    `json:"next"`
	// Total and TotalCapped answer SearchQuery.Count.
	Total       int  `json:"total"`
	TotalCapped bool `json:"total_capped"`
}

// Search returns a page of the contexts matching q that the caller sees.
func (c *Client) Search(ctx context.Context, q SearchQuery) (*SearchPage, error) {
	v := url.Values{}
	if q.Path != "" {
		v.Set("path", contextPath(q.Path))
	}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	for k, val := range q.Labels {
		v.Set("label."+k, val)
	}
	for name, val := range q.Vars {
		b, err := json.Marshal(val)
		if err != nil {
			return nil, fmt.Errorf("client: search variable %q: %w", name, err)
		}
		v.Set("var."+name, string(b))
	}
	if q.Tenant != "" {
		v.Set("tenant", q.Tenant)
	}
	if q.After != "" {
		v.Set("after", q.After)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Sort != "" {
		v.Set("sort", q.Sort)
	}
	if q.Count {
		v.Set("count", "true")
	}
	var p SearchPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/search", v, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
