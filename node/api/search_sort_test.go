package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// sortedPages follows a sorted search page by page and returns every
// path in order, and the total of its first answer (-1 when absent).
func (e *env) sortedPages(token string, q url.Values) ([]string, int) {
	e.t.Helper()
	var all []string
	total := -1
	for pages := 0; ; pages++ {
		r := e.do("GET", "/api/v1/search?"+q.Encode(), token, nil)
		e.want(r, 200, "")
		var ans struct {
			Contexts []struct {
				Path string `json:"path"`
			} `json:"contexts"`
			Next  string `json:"next"`
			Total *int   `json:"total"`
		}
		r.json(e.t, &ans)
		if pages == 0 && ans.Total != nil {
			total = *ans.Total
		}
		for _, c := range ans.Contexts {
			all = append(all, c.Path)
		}
		if ans.Next == "" {
			return all, total
		}
		if pages > 50 {
			e.t.Fatalf("%s: more than 50 pages", q.Encode())
		}
		q.Set("after", ans.Next)
	}
}

// TestSearchSort: a sorted search orders by the field's value (absent
// ones last, ties by path), either way, page by page through its
// cursor, over every scope of the caller's grants, and counts.
func TestSearchSort(t *testing.T) {
	t.Run("StoreCount", func(t *testing.T) { testSearchSort(t, withSearch()) })
	t.Run("PagedCount", func(t *testing.T) { testSearchSort(t, withPagedSearch()) })
}

func testSearchSort(t *testing.T, backend envOption) {
	e := newEnv(t, backend)
	c := e.tenants()
	searchFleet(e, c)
	// cpus: a* and g* are 2 (even i) or 4 (odd i); /lab/a9 has none.
	for _, limit := range []string{"1", "2", "100"} {
		q := url.Values{"var.os": {"linux"}, "tenant": {"acme"}, "sort": {"-var.cpus"}, "limit": {limit}, "count": {"true"}}
		got, total := e.sortedPages(e.admin, q)
		want := []string{"/devices/a1", "/devices/a3", "/devices/a5", "/devices/a0", "/devices/a2", "/devices/a4", "/lab/a9"}
		if !slices.Equal(got, want) || total != 7 {
			t.Fatalf("limit %s: sorted by -var.cpus: %q (total %d), want %q (7)", limit, got, total, want)
		}
	}
	got, _ := e.sortedPages(e.admin, url.Values{"path": {"/devices"}, "type": {"device"}, "sort": {"label.site"}, "var.arch": {"amd64"}, "limit": {"3"}})
	want := []string{"/devices/a2", "/devices/g2", "/devices/a5", "/devices/g5"}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted by label.site: %q, want %q", got, want)
	}
	got, _ = e.sortedPages(e.admin, url.Values{"path": {"/devices"}, "type": {"device"}, "sort": {"-path"}, "tenant": {"globex"}, "limit": {"4"}})
	if want := []string{"/devices/g5", "/devices/g4", "/devices/g3", "/devices/g2", "/devices/g1", "/devices/g0"}; !slices.Equal(got, want) {
		t.Fatalf("sorted by -path: %q, want %q", got, want)
	}

	// A tenant user sorts and counts its own tenant (and shared) only.
	got, total := e.sortedPages(c.bob, url.Values{"type": {"device"}, "sort": {"name"}, "count": {"true"}, "limit": {"2"}})
	if want := []string{"/devices/g0", "/devices/g1", "/devices/g2", "/devices/g3", "/devices/g4", "/devices/g5"}; !slices.Equal(got, want) || total != 6 {
		t.Fatalf("bob sorted by name: %q (total %d), want %q (6)", got, total, want)
	}
	// Several grants below the path: one order over all of them.
	multi := e.user(auth.UserSpec{Name: "mia", Tenant: "acme", Grants: []auth.Grant{
		{Role: auth.RoleViewer, Subtree: "/lab"}, {Role: auth.RoleViewer, Subtree: "/devices/a3"}, {Role: auth.RoleViewer, Subtree: "/devices/a0"},
	}})
	got, total = e.sortedPages(multi, url.Values{"sort": {"-var.cpus"}, "count": {"true"}, "limit": {"1"}})
	if want := []string{"/devices/a3", "/devices/a0", "/lab", "/lab/a9"}; !slices.Equal(got, want) || total != 4 {
		t.Fatalf("mia sorted by -var.cpus: %q (total %d), want %q (4)", got, total, want)
	}
	// Counting without sorting keeps path order and pages.
	r := e.do("GET", "/api/v1/search?type=device&count=true&limit=2", c.bob, nil)
	e.want(r, 200, "")
	var ans struct {
		Contexts []json.RawMessage `json:"contexts"`
		Next     string            `json:"next"`
		Total    int               `json:"total"`
	}
	r.json(t, &ans)
	if ans.Total != 6 || len(ans.Contexts) != 2 || ans.Next != "/devices/g1" {
		t.Fatalf("bob count: %s", r.body)
	}
}

func TestSearchSortBadRequests(t *testing.T) {
	e := newEnv(t, withSearch())
	for _, q := range []string{"sort=cpus", "sort=var.a/b", "sort=label.", "sort=--path", "count=maybe",
		"sort=name&after=/devices/a1", "sort=name&after=" + url.QueryEscape("eyJzIjp0cnVlLCJyIjo5LCJwIjoiLyJ9")} {
		r := e.do("GET", "/api/v1/search?"+q, e.admin, nil)
		if r.status != 400 || r.errCode(t) != codeInvalid {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
}

func TestSortKeyOrder(t *testing.T) {
	s := sortSpec{field: "var.v"}
	raws := []string{`null`, `false`, `true`, `-3`, `2`, `10`, `1e2`, `"10"`, `"9"`, `"a"`, `[1]`, `{"a":1}`}
	var keys []sortKey
	for i, raw := range raws {
		k := sortKey{present: true, path: "/x"}
		k.rank, k.num, k.text = valueRank(json.RawMessage(raw))
		k.path = model.Path("/x" + fmt.Sprint(i))
		keys = append(keys, k)
	}
	keys = append(keys, sortKey{path: "/absent"})
	for i := 1; i < len(keys); i++ {
		if s.compare(&keys[i-1], &keys[i]) >= 0 {
			t.Errorf("%v does not sort before %v", keys[i-1], keys[i])
		}
	}
	d := sortSpec{field: "var.v", desc: true}
	if d.compare(&keys[0], &keys[1]) <= 0 || d.compare(&keys[len(keys)-2], &keys[len(keys)-1]) >= 0 {
		t.Error("descending: values reversed, absent still last")
	}
}
