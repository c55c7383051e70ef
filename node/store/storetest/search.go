package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/strata-dm/strata/model"
)

// SearchQuery and SearchPage are the model's.
type (
	SearchQuery = model.SearchQuery
	SearchPage  = model.SearchPage
)

// SearchFunc runs a search on the store under test.
type SearchFunc func(ctx context.Context, q SearchQuery) (SearchPage, error)

// RunSearch runs the inventory search suite; open returns a new empty
// store (closed by the suite) and its search.
func RunSearch(t *testing.T, open func(t *testing.T) (model.Store, SearchFunc)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, m *model.Model, search SearchFunc)
	}{
		{"Filters", testSearchFilters},
		{"Values", testSearchValues},
		{"Tenants", testSearchTenants},
		{"Pages", testSearchPages},
		{"Changes", testSearchChanges},
		{"Invalid", testSearchInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, search := open(t)
			m, err := model.New(model.Config{Store: s})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				m.Close()
				s.Close()
			})
			tc.fn(t, m, search)
		})
	}
}

// putDevice writes a context with labels and variables (JSON texts).
func putDevice(t *testing.T, m *model.Model, path, typ, tenant string, labels, vars map[string]string) {
	t.Helper()
	mut := model.Mutation{Op: model.OpPut, Path: model.MustPath(path), Type: typ, Tenant: tenant, Labels: labels}
	if vars != nil {
		mut.Variables = map[string]model.Variable{}
		for k, js := range vars {
			mut.Variables[k] = v(t, js)
		}
	}
	if _, err := m.Apply(context.Background(), mut); err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
}

// searchPaths runs q and returns the paths found, failing on error.
func searchPaths(t *testing.T, search SearchFunc, q SearchQuery) ([]string, model.Path) {
	t.Helper()
	page, err := search(context.Background(), q)
	if err != nil {
		t.Fatalf("search %+v: %v", q, err)
	}
	out := []string{}
	for _, c := range page.Contexts {
		out = append(out, string(c.Path))
	}
	return out, page.Next
}

func wantPaths(t *testing.T, search SearchFunc, q SearchQuery, want ...string) {
	t.Helper()
	got, next := searchPaths(t, search, q)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) || next != "" {
		t.Fatalf("search %+v:\n got %q (next %q)\nwant %q", q, got, next, want)
	}
}

func vars(kv ...string) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	return m
}

// fleet writes a small inventory: six devices under /devices, a sensor
// below one of them, look-alikes outside the subtree.
func fleet(t *testing.T, m *model.Model) {
	inv := func(os, arch, cpus string) map[string]string {
		return map[string]string{"os": os, "arch": arch, "cpus": cpus, "temp": "21.5"}
	}
	putDevice(t, m, "/devices/d1", "device", "acme", map[string]string{"site": "north"}, inv(`"linux"`, `"arm64"`, "4"))
	putDevice(t, m, "/devices/d2", "device", "acme", map[string]string{"site": "south"}, inv(`"linux"`, `"amd64"`, "8"))
	putDevice(t, m, "/devices/d3", "device", "acme", map[string]string{"site": "north"}, inv(`"windows"`, `"amd64"`, "4.0"))
	putDevice(t, m, "/devices/d4", "device", "acme", map[string]string{"site": "north", "rack": "r1"}, inv(`"linux"`, `"arm64"`, `"4"`))
	putDevice(t, m, "/devices/d5", "gateway", "acme", map[string]string{"site": "north"}, inv(`"linux"`, `"arm64"`, "4"))
	putDevice(t, m, "/devices/d6", "device", "acme", nil, nil)
	putDevice(t, m, "/devices/d1/probe", "sensor", "acme", map[string]string{"site": "north"}, inv(`"linux"`, `"arm64"`, "4"))
	// Outside /devices: a sibling whose name extends it, and another tree.
	putDevice(t, m, "/devices-old/d1", "device", "acme", map[string]string{"site": "north"}, inv(`"linux"`, `"arm64"`, "4"))
	putDevice(t, m, "/spare/d1", "device", "acme", map[string]string{"site": "north"}, inv(`"linux"`, `"arm64"`, "4"))
}

func testSearchFilters(t *testing.T, m *model.Model, search SearchFunc) {
	fleet(t, m)
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device"},
		"/devices/d1", "/devices/d2", "/devices/d3", "/devices/d4", "/devices/d6")
	// The prefix itself is part of its subtree; siblings such as
	// /devices-old are not.
	wantPaths(t, search, SearchQuery{Prefix: "/devices"},
		"/devices", "/devices/d1", "/devices/d1/probe", "/devices/d2", "/devices/d3", "/devices/d4", "/devices/d5", "/devices/d6")
	wantPaths(t, search, SearchQuery{Prefix: "/devices/d1"}, "/devices/d1", "/devices/d1/probe")
	wantPaths(t, search, SearchQuery{Type: "device", Labels: map[string]string{"site": "north"}},
		"/devices-old/d1", "/devices/d1", "/devices/d3", "/devices/d4", "/spare/d1")
	wantPaths(t, search, SearchQuery{Prefix: "/", Type: "device", Vars: vars("os", `"linux"`, "arch", `"arm64"`)},
		"/devices-old/d1", "/devices/d1", "/devices/d4", "/spare/d1")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device",
		Labels: map[string]string{"site": "north"}, Vars: vars("os", `"linux"`, "arch", `"arm64"`)},
		"/devices/d1", "/devices/d4")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Labels: map[string]string{"site": "north", "rack": "r1"}}, "/devices/d4")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Labels: map[string]string{"site": "east"}})
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Vars: vars("nope", "1")})
	wantPaths(t, search, SearchQuery{Prefix: "/nothing"})
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "sensor"}, "/devices/d1/probe")
}

// testSearchValues: a variable filter compares JSON values, numbers
// numerically, never by containment or by text.
func testSearchValues(t *testing.T, m *model.Model, search SearchFunc) {
	fleet(t, m)
	// 4 matches 4 and 4.0, not the string "4".
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device", Vars: vars("cpus", "4")}, "/devices/d1", "/devices/d3")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device", Vars: vars("cpus", "4e0")}, "/devices/d1", "/devices/d3")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device", Vars: vars("cpus", `"4"`)}, "/devices/d4")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Vars: vars("temp", "21.50")},
		"/devices/d1", "/devices/d1/probe", "/devices/d2", "/devices/d3", "/devices/d4", "/devices/d5")

	putDevice(t, m, "/things/a", "thing", "", nil, map[string]string{"cfg": `{"a":1,"b":[1,2]}`, "tags": `["x","y"]`, "on": "true", "gone": "null"})
	putDevice(t, m, "/things/b", "thing", "", nil, map[string]string{"cfg": `{"a":1}`, "tags": `["x"]`, "on": "false"})
	putDevice(t, m, "/things/c", "thing", "", nil, map[string]string{"tags": `"x"`, "on": `"true"`})
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("cfg", `{"a":1}`)}, "/things/b")
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("cfg", `{"b":[1,2],"a":1.0}`)}, "/things/a")
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("tags", `["x"]`)}, "/things/b")
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("tags", `"x"`)}, "/things/c")
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("tags", `["y","x"]`)})
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("on", "true")}, "/things/a")
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("on", `"true"`)}, "/things/c")
	// null matches a variable holding null, not a missing one.
	wantPaths(t, search, SearchQuery{Prefix: "/things", Vars: vars("gone", "null")}, "/things/a")
}

func testSearchTenants(t *testing.T, m *model.Model, search SearchFunc) {
	putDevice(t, m, "/devices/a1", "device", "acme", nil, map[string]string{"os": `"linux"`})
	putDevice(t, m, "/devices/g1", "device", "globex", nil, map[string]string{"os": `"linux"`})
	putDevice(t, m, "/devices/a2", "device", "acme", nil, map[string]string{"os": `"linux"`})
	linux := vars("os", `"linux"`)
	wantPaths(t, search, SearchQuery{Vars: linux}, "/devices/a1", "/devices/a2", "/devices/g1")
	wantPaths(t, search, SearchQuery{Vars: linux, Tenants: []string{"acme"}}, "/devices/a1", "/devices/a2")
	wantPaths(t, search, SearchQuery{Vars: linux, Tenants: []string{"globex", "acme"}}, "/devices/a1", "/devices/a2", "/devices/g1")
	wantPaths(t, search, SearchQuery{Vars: linux, Tenants: []string{}})
	// "" names shared contexts (the /devices folder).
	wantPaths(t, search, SearchQuery{Tenants: []string{"", "globex"}}, "/devices", "/devices/g1")
	wantPaths(t, search, SearchQuery{Tenants: []string{""}}, "/devices")
	wantPaths(t, search, SearchQuery{Prefix: "/devices", Type: "device", Tenants: []string{"globex"}}, "/devices/g1")
	wantPaths(t, search, SearchQuery{Vars: vars("os", `"windows"`), Tenants: []string{"acme"}})
}

func testSearchPages(t *testing.T, m *model.Model, search SearchFunc) {
	var want []string
	for i := range 23 {
		os := `"linux"`
		if i%4 == 3 {
			os = `"windows"`
		}
		p := fmt.Sprintf("/fleet/d%02d", i)
		putDevice(t, m, p, "device", "acme", nil, map[string]string{"os": os})
		if os == `"linux"` {
			want = append(want, p)
		}
	}
	putDevice(t, m, "/fleet-b/d00", "device", "acme", nil, map[string]string{"os": `"linux"`})
	for _, limit := range []int{1, 5, 17, 18, 1000} {
		var got []string
		q := SearchQuery{Prefix: "/fleet", Vars: vars("os", `"linux"`), Limit: limit}
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("limit %d: more pages than results", limit)
			}
			paths, next := searchPaths(t, search, q)
			got = append(got, paths...)
			if next == "" {
				break
			}
			if len(paths) != limit || string(next) != paths[len(paths)-1] {
				t.Fatalf("limit %d: page %q with next %q", limit, paths, next)
			}
			q.After = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: pages gave %q, want %q", limit, got, want)
		}
	}
	// A full last page says nothing follows.
	if _, next := searchPaths(t, search, SearchQuery{Prefix: "/fleet", Vars: vars("os", `"linux"`), Limit: len(want)}); next != "" {
		t.Fatalf("exact page: next %q", next)
	}
	// A cursor before the subtree starts at its beginning; one beyond
	// it finds nothing.
	wantPaths(t, search, SearchQuery{Prefix: "/fleet/d01", After: "/a"}, "/fleet/d01")
	wantPaths(t, search, SearchQuery{Prefix: "/fleet/d01", After: "/fleet/d01"})
	wantPaths(t, search, SearchQuery{Prefix: "/fleet", Vars: vars("os", `"linux"`), After: "/fleet/d20"}, "/fleet/d21", "/fleet/d22")
	wantPaths(t, search, SearchQuery{Prefix: "/fleet", After: "/zzz"})
}

// testSearchChanges: a search sees the latest committed state.
func testSearchChanges(t *testing.T, m *model.Model, search SearchFunc) {
	putDevice(t, m, "/devices/a", "device", "acme", map[string]string{"site": "north"}, map[string]string{"os": `"linux"`, "cpus": "2"})
	putDevice(t, m, "/devices/b", "device", "acme", nil, map[string]string{"os": `"linux"`})
	linux := SearchQuery{Vars: vars("os", `"linux"`)}
	wantPaths(t, search, linux, "/devices/a", "/devices/b")
	putDevice(t, m, "/devices/a", "", "", map[string]string{"site": ""}, map[string]string{"os": `"windows"`})
	wantPaths(t, search, linux, "/devices/b")
	wantPaths(t, search, SearchQuery{Vars: vars("os", `"windows"`, "cpus", "2")}, "/devices/a")
	wantPaths(t, search, SearchQuery{Labels: map[string]string{"site": "north"}})
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/b"}); err != nil {
		t.Fatal(err)
	}
	wantPaths(t, search, linux)
}

func testSearchInvalid(t *testing.T, m *model.Model, search SearchFunc) {
	for _, q := range []SearchQuery{
		{Limit: 1001},
		{Limit: -1},
		{Prefix: "/a/../b"},
		{After: "//x"},
		{Vars: vars("os", "linux")},      // not JSON
		{Vars: vars("os", `"a\u0000b"`)}, // NUL: beyond PostgreSQL's jsonb
		{Vars: vars("n", "1e99999999")},  // beyond numeric
		{Vars: vars("bad/name", `"x"`)},  // not a variable name
	} {
		_, err := search(context.Background(), q)
		if !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrInvalidPath) {
			t.Errorf("search %+v: err = %v, want invalid", q, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := search(ctx, SearchQuery{}); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled search: %v", err)
	}
}
