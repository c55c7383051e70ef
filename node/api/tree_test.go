package api

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

func names(n *treeNode) []string {
	var out []string
	for _, c := range n.Children {
		out = append(out, c.Name)
	}
	return out
}

func (e *env) tree(token, query string) *treeNode {
	e.t.Helper()
	r := e.do("GET", "/api/v1/tree"+query, token, nil)
	e.want(r, 200, "")
	var n treeNode
	r.json(e.t, &n)
	return &n
}

func TestTree(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	for _, p := range []string{"/devices/a1", "/devices/a2", "/devices/a3", "/devices/a1/s1", "/sites/north"} {
		e.want(e.do("PUT", "/api/v1/contexts"+p, c.alice, `{"type":"device"}`), 201, "")
	}
	for _, p := range []string{"/devices/b1", "/devices/b2"} {
		e.want(e.do("PUT", "/api/v1/contexts"+p, c.bob, `{"type":"device"}`), 201, "")
	}

	// Depth 1 by default, from the root.
	n := e.tree(c.alice, "")
	if n.Path != "/" || n.Type != model.FolderType || !slices.Equal(names(n), []string{"devices", "sites"}) || n.Children[0].Children != nil {
		t.Fatalf("root: %+v", n)
	}
	// Tenants see their own children of a shared folder, never others'.
	n = e.tree(c.alice, "?path=/devices")
	if !slices.Equal(names(n), []string{"a1", "a2", "a3"}) || n.Next != "" || n.Tenant != "" {
		t.Fatalf("alice: %+v", n)
	}
	if n.Children[0].Tenant != "acme" || n.Children[0].Path != "/devices/a1" || n.Children[0].Type != "device" {
		t.Fatalf("child %+v", n.Children[0])
	}
	n = e.tree(c.bob, "?path=/devices&depth=8")
	if !slices.Equal(names(n), []string{"b1", "b2"}) {
		t.Fatalf("bob: %+v", n)
	}
	n = e.tree(e.admin, "?path=/devices")
	if !slices.Equal(names(n), []string{"a1", "a2", "a3", "b1", "b2"}) {
		t.Fatalf("admin: %+v", n)
	}
	// Another tenant's context is not found, like a missing one.
	e.want(e.do("GET", "/api/v1/tree?path=/devices/a1", c.bob, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/tree?path=/devices/zz", c.bob, nil), 404, codeNotFound)

	// Paging: limit and after/next, filtered pages are full.
	n = e.tree(c.alice, "?path=/devices&limit=2")
	if !slices.Equal(names(n), []string{"a1", "a2"}) || n.Next != "a2" {
		t.Fatalf("page 1: %+v", n)
	}
	n = e.tree(c.alice, "?path=/devices&limit=2&after=a2")
	if !slices.Equal(names(n), []string{"a3"}) || n.Next != "" {
		t.Fatalf("page 2: %+v", n)
	}
	n = e.tree(c.bob, "?path=/devices&limit=1")
	if !slices.Equal(names(n), []string{"b1"}) || n.Next != "b1" {
		t.Fatalf("bob page 1: %+v", n)
	}

	// Depth 0 is the node alone; depth 2 lists grandchildren; listed
	// nodes without children have an empty list.
	n = e.tree(c.alice, "?path=/devices&depth=0")
	if n.Children != nil {
		t.Fatalf("depth 0: %+v", n)
	}
	n = e.tree(c.alice, "?path=/devices&depth=2")
	if !slices.Equal(names(n.Children[0]), []string{"s1"}) || n.Children[1].Children == nil || len(n.Children[1].Children) != 0 {
		t.Fatalf("depth 2: %+v", n.Children)
	}

	// Viewer on /devices: may list there, and navigate to it from the
	// root, seeing only the way to her grant.
	n = e.tree(c.vera, "?path=/devices")
	if !slices.Equal(names(n), []string{"a1", "a2", "a3"}) {
		t.Fatalf("vera: %+v", n)
	}
	n = e.tree(c.vera, "?depth=2")
	if !slices.Equal(names(n), []string{"devices"}) || !slices.Equal(names(n.Children[0]), []string{"a1", "a2", "a3"}) {
		t.Fatalf("vera from the root: %+v", n)
	}
	e.want(e.do("GET", "/api/v1/tree?path=/sites", c.vera, nil), 403, codeForbidden)

	for _, q := range []string{"?depth=9", "?depth=-1", "?depth=x", "?limit=0", "?limit=10001", "?path=/a/../b", "?path=//", "?after=a/b"} {
		e.want(e.do("GET", "/api/v1/tree"+q, c.alice, nil), 400, codeInvalid)
	}
}

func TestTreeBudget(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// 120 folders of 100 children: 12 120 nodes below the root.
	var muts []model.Mutation
	for i := range 120 {
		for j := range 100 {
			muts = append(muts, model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/f%03d/c%03d", i, j))})
		}
	}
	if _, err := e.model.Apply(ctx, muts...); err != nil {
		t.Fatal(err)
	}
	n := e.tree(e.admin, "?depth=2&limit=10000")
	count := 0
	var walk func(*treeNode)
	walk = func(n *treeNode) {
		for _, c := range n.Children {
			count++
			walk(c)
		}
	}
	walk(n)
	if !n.Truncated || count != maxTreeNodes {
		t.Fatalf("truncated=%v, %d nodes", n.Truncated, count)
	}
	n = e.tree(e.admin, "?depth=1&limit=10000")
	if n.Truncated || len(n.Children) != 120 {
		t.Fatalf("depth 1: truncated=%v, %d", n.Truncated, len(n.Children))
	}
}

func TestReach(t *testing.T) {
	p := &auth.Principal{User: "u", Tenant: "t", Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/a/b"}}}
	for path, want := range map[model.Path][2]bool{
		"/":      {false, true},
		"/a":     {false, true},
		"/a/b":   {true, false},
		"/a/b/c": {true, false},
		"/a/c":   {false, false},
		"/ab":    {false, false},
	} {
		full, toward := reach(p, path)
		if full != want[0] || toward != want[1] {
			t.Errorf("%s: full %v toward %v, want %v", path, full, toward, want)
		}
	}
}
