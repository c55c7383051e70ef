package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/store"
)

// storeSearch serves the API's searches from the env's Badger store, as
// the node wires it.
type storeSearch struct{ s *store.Badger }

func (b storeSearch) Search(ctx context.Context, q SearchQuery) (SearchPage, error) {
	p, err := b.s.Search(ctx, store.SearchQuery(q))
	return SearchPage(p), err
}

// storeCount adds the store's count, as the node's Badger store has it.
type storeCount struct{ storeSearch }

func (b storeCount) CountSearch(ctx context.Context, q SearchQuery, limit int) (int, bool, error) {
	return b.s.CountSearch(ctx, store.SearchQuery(q), limit)
}

func withSearch() envOption {
	return func(c *Config, _ *auth.Config, mc *model.Config) {
		c.Search = storeCount{storeSearch{mc.Store.(*store.Badger)}}
	}
}

// withPagedSearch is a backend without its own count (PostgreSQL): a
// count walks the pages.
func withPagedSearch() envOption {
	return func(c *Config, _ *auth.Config, mc *model.Config) {
		c.Search = storeSearch{mc.Store.(*store.Badger)}
	}
}

// searchFleet writes devices of acme and globex with inventory variables.
func searchFleet(e *env, c cast) {
	e.sharedFolders("/lab")
	e.t.Helper()
	for i := range 6 {
		os, arch := "linux", "arm64"
		if i%3 == 2 {
			arch = "amd64"
		}
		body := fmt.Sprintf(`{"type":"device","labels":{"site":"plant-%d"},"variables":{"os":%q,"arch":%q,"cpus":%d,"ok":true}}`,
			i%2, os, arch, 2+2*(i%2))
		e.want(e.do("PUT", fmt.Sprintf("/api/v1/contexts/devices/a%d", i), c.alice, body), 201, "")
		e.want(e.do("PUT", fmt.Sprintf("/api/v1/contexts/devices/g%d", i), c.bob, body), 201, "")
	}
	e.want(e.do("PUT", "/api/v1/contexts/lab/a9", c.alice, `{"type":"device","variables":{"os":"linux"}}`), 201, "")
}

func (e *env) search(token, query string) ([]string, string) {
	e.t.Helper()
	r := e.do("GET", "/api/v1/search?"+query, token, nil)
	e.want(r, 200, "")
	var ans struct {
		Contexts []struct {
			Path      string                     `json:"path"`
			Tenant    string                     `json:"tenant"`
			Labels    map[string]string          `json:"labels"`
			Variables map[string]json.RawMessage `json:"variables"`
			Functions []json.RawMessage          `json:"functions"`
		} `json:"contexts"`
		Next *string `json:"next"`
	}
	r.json(e.t, &ans)
	if ans.Contexts == nil || ans.Next == nil {
		e.t.Fatalf("answer without contexts or next: %s", r.body)
	}
	paths := []string{}
	for _, c := range ans.Contexts {
		if c.Labels == nil || c.Variables == nil || c.Functions == nil {
			e.t.Fatalf("context not rendered as GET renders it: %s", r.body)
		}
		paths = append(paths, c.Path)
	}
	return paths, *ans.Next
}

func (e *env) wantSearch(token, query string, want ...string) {
	e.t.Helper()
	got, next := e.search(token, query)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) || next != "" {
		e.t.Fatalf("search %s:\n got %q (next %q)\nwant %q", query, got, next, want)
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t, withSearch())
	c := e.tenants()
	searchFleet(e, c)

	e.wantSearch(e.admin, "path=/devices&type=device&var.os=linux&var.arch=arm64&label.site=plant-1",
		"/devices/a1", "/devices/a3", "/devices/g1", "/devices/g3")
	// Values parse as JSON when they do: 4 is a number, "4" a string.
	e.wantSearch(e.admin, "path=/devices&var.cpus=4&tenant=acme", "/devices/a1", "/devices/a3", "/devices/a5")
	e.wantSearch(e.admin, "path=/devices&var.cpus=4.0&tenant=acme", "/devices/a1", "/devices/a3", "/devices/a5")
	e.wantSearch(e.admin, "path=/devices&"+url.Values{"var.cpus": {`"4"`}}.Encode())
	e.wantSearch(e.admin, "path=/devices&"+url.Values{"var.os": {`"linux"`}, "var.arch": {"amd64"}}.Encode(), "/devices/a2", "/devices/a5", "/devices/g2", "/devices/g5")
	e.wantSearch(e.admin, "var.ok=true&tenant=globex&label.site=plant-0", "/devices/g0", "/devices/g2", "/devices/g4")
	// The whole tree by default; the path itself is in its subtree.
	e.wantSearch(e.admin, "var.os=linux&tenant=acme&limit=1000",
		"/devices/a0", "/devices/a1", "/devices/a2", "/devices/a3", "/devices/a4", "/devices/a5", "/lab/a9")
	e.wantSearch(e.admin, "path=/devices/a1", "/devices/a1")
	e.wantSearch(e.admin, "path=/nowhere")

	// Keyset pages.
	var all []string
	q := url.Values{"path": {"/devices"}, "var.os": {"linux"}, "limit": {"5"}}
	for {
		got, next := e.search(e.admin, q.Encode())
		all = append(all, got...)
		if next == "" {
			break
		}
		if next != got[len(got)-1] {
			t.Fatalf("next %q after %q", next, got)
		}
		q.Set("after", next)
	}
	if len(all) != 12 || !slices.IsSorted(all) {
		t.Fatalf("pages gave %q", all)
	}
}

// TestSearchTenants: a tenant user finds only its tenant's contexts (and
// shared ones), with or without naming it, and never another's.
func TestSearchTenants(t *testing.T) {
	e := newEnv(t, withSearch())
	c := e.tenants()
	searchFleet(e, c)
	e.wantSearch(c.bob, "type=device&label.site=plant-1", "/devices/g1", "/devices/g3", "/devices/g5")
	e.wantSearch(c.bob, "type=device&label.site=plant-1&tenant=globex", "/devices/g1", "/devices/g3", "/devices/g5")
	e.wantSearch(c.alice, "var.os=linux&var.cpus=2", "/devices/a0", "/devices/a2", "/devices/a4")
	// Shared folders are visible, as in the tree.
	e.wantSearch(c.bob, "path=/devices&type=folder", "/devices")
	e.want(e.do("GET", "/api/v1/search?tenant=acme", c.bob, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/search?tenant=nobody", c.bob, nil), 403, codeForbidden)
	// A system user narrows to any tenant.
	e.wantSearch(e.admin, "type=device&label.site=plant-1&tenant=globex", "/devices/g1", "/devices/g3", "/devices/g5")
}

// TestSearchGrants: subtree grants restrict the search to their subtrees.
func TestSearchGrants(t *testing.T) {
	e := newEnv(t, withSearch())
	c := e.tenants()
	searchFleet(e, c)
	// vera views /devices only: a search of / covers /devices alone.
	e.wantSearch(c.vera, "var.os=linux&limit=1000",
		"/devices/a0", "/devices/a1", "/devices/a2", "/devices/a3", "/devices/a4", "/devices/a5")
	e.want(e.do("GET", "/api/v1/search?path=/lab", c.vera, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/search?path=/nowhere", c.vera, nil), 403, codeForbidden)

	// Several grants below the path: merged in path order, paged across.
	e.sharedFolders("/devices-b")
	e.want(e.do("PUT", "/api/v1/contexts/devices-b/a1", c.alice, `{"type":"device","variables":{"os":"linux"}}`), 201, "")
	multi := e.user(auth.UserSpec{Name: "mia", Tenant: "acme", Grants: []auth.Grant{
		{Role: auth.RoleViewer, Subtree: "/devices/a3"}, {Role: auth.RoleViewer, Subtree: "/lab"},
		{Role: auth.RoleViewer, Subtree: "/devices-b"}, {Role: auth.RoleViewer, Subtree: "/devices/a1"},
		{Role: auth.RoleOperator, Subtree: "/lab/a9"}, // inside /lab: searched once
	}})
	want := []string{"/devices-b", "/devices-b/a1", "/devices/a1", "/devices/a3", "/lab", "/lab/a9"}
	e.wantSearch(multi, "limit=1000", want...)
	for _, limit := range []int{1, 2, 4, 6} {
		var all []string
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		for pages := 0; ; pages++ {
			got, next := e.search(multi, q.Encode())
			all = append(all, got...)
			if next == "" || pages > 10 {
				break
			}
			q.Set("after", next)
		}
		if !slices.Equal(all, want) {
			t.Fatalf("limit %d: pages gave %q, want %q", limit, all, want)
		}
	}
}

func TestSearchBadRequests(t *testing.T) {
	e := newEnv(t, withSearch())
	for _, q := range []string{
		"limit=0", "limit=1001", "limit=x", "path=a//b", "after=/a/../b", "typo=1", "lable.site=x",
		"var.a/b=1", "var.=1", "label.=x", "label.site=", "type=", "tenant=", "tenant=ACME",
		"path=/a&path=/b", "var.os=a&var.os=b", "var.s=%22a%5Cu0000b%22",
	} {
		r := e.do("GET", "/api/v1/search?"+q, e.admin, nil)
		if r.status != 400 || r.errCode(t) != codeInvalid {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
	e.want(e.do("GET", "/api/v1/search", "", nil), 401, codeUnauthorized)
	// Without a backend, 501.
	e2 := newEnv(t)
	e2.want(e2.do("GET", "/api/v1/search", e2.admin, nil), 501, codeNotImplemented)
}

func TestClientSearch(t *testing.T) {
	e := newEnv(t, withSearch())
	c := e.tenants()
	searchFleet(e, c)
	cl := tlsClient(t, e.api.Handler(), c.alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	page, err := cl.Search(ctx, client.SearchQuery{Path: "/devices", Type: "device",
		Labels: map[string]string{"site": "plant-1"}, Vars: map[string]any{"os": "linux", "cpus": 4}, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Contexts) != 2 || page.Contexts[0].Path != "/devices/a1" || page.Next != "/devices/a3" ||
		string(page.Contexts[0].Variables["os"].Value) != `"linux"` {
		t.Fatalf("page = %+v", page)
	}
	page, err = cl.Search(ctx, client.SearchQuery{Path: "/devices", Type: "device",
		Labels: map[string]string{"site": "plant-1"}, Vars: map[string]any{"os": "linux", "cpus": 4}, Limit: 2, After: page.Next})
	if err != nil || len(page.Contexts) != 1 || page.Contexts[0].Path != "/devices/a5" || page.Next != "" {
		t.Fatalf("page 2 = %+v, %v", page, err)
	}
	page, err = cl.Search(ctx, client.SearchQuery{Path: "/devices", Type: "device", Sort: "-var.cpus", Count: true, Limit: 1})
	if err != nil || len(page.Contexts) != 1 || page.Contexts[0].Path != "/devices/a1" || page.Total != 6 || page.Next == "" {
		t.Fatalf("sorted = %+v, %v", page, err)
	}
	page, err = cl.Search(ctx, client.SearchQuery{Path: "/devices", Type: "device", Sort: "-var.cpus", Limit: 1, After: page.Next})
	if err != nil || len(page.Contexts) != 1 || page.Contexts[0].Path != "/devices/a3" {
		t.Fatalf("sorted page 2 = %+v, %v", page, err)
	}
	if _, err := cl.Search(ctx, client.SearchQuery{Tenant: "globex"}); !client.IsCode(err, client.CodeForbidden) {
		t.Fatalf("another tenant: %v", err)
	}
}

// FuzzParseSearch: any query string either is refused as invalid or gives
// a query within bounds.
func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{"path=/devices&type=device&label.site=a&var.os=linux&limit=5&after=/devices/x",
		"var.n=4.0", "var.o=%7B%22a%22%3A1%7D", "limit=0", "x=1", "var.=1",
		"sort=-var.cpus&count=true&after=eyJzIjp0cnVlLCJyIjozLCJuIjo0LCJwIjoiL2RldmljZXMvYTEifQ", "sort=label.site&limit=3", "consistent=true&path=/devices"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		sp, err := parseSearch(v)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrInvalidPath) {
				t.Fatalf("%q: error %v is not invalid", raw, err)
			}
			return
		}
		q := sp.q
		if q.Limit < 1 || q.Limit > maxSearchLimit || len(q.Labels)+len(q.Vars) > maxSearchFilters {
			t.Fatalf("%q: out of bounds: %+v", raw, q)
		}
		for name, val := range q.Vars {
			if model.ValidateName(name) != nil || !json.Valid(val) {
				t.Fatalf("%q: bad variable filter %q=%s", raw, name, val)
			}
		}
	})
}
