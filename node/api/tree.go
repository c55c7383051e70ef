package api

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Bounds of a tree listing.
const (
	maxTreeDepth     = 8
	defaultTreeLimit = 1000
	maxTreeLimit     = 10000
	// maxTreeNodes bounds the nodes of one answer, over all levels.
	maxTreeNodes = 10000
	// maxTreeScan bounds the child index entries one listing reads,
	// visible or not, so that a tenant with few contexts among very many
	// of other tenants cannot make a request arbitrarily expensive.
	maxTreeScan = 200_000
)

// treeNode is a context in a tree listing. Children is present (maybe
// empty) for the levels that were listed; Next when more children follow
// than were listed; Truncated, on the top node only, when a bound of the
// listing cut it short.
type treeNode struct {
	Name      string      `json:"name,omitempty"`
	Path      model.Path  `json:"path"`
	Type      string      `json:"type"`
	Tenant    string      `json:"tenant"`
	Children  []*treeNode `json:"children,omitzero"`
	Next      string      `json:"next,omitempty"`
	Truncated bool        `json:"truncated,omitempty"`
}

// reach tells how far p may browse path: full when a viewer grant covers
// it, toward when it only leads to a subtree p may view (an ancestor of a
// grant's subtree), so that callers can navigate down to their grants.
func reach(p *auth.Principal, path model.Path) (full, toward bool) {
	if p.Can(auth.RoleViewer, path) {
		return true, false
	}
	for _, g := range p.Grants {
		if !g.Role.Valid() {
			continue
		}
		sub, err := model.ParsePath(g.Subtree)
		if err != nil {
			continue
		}
		if sub != path && sub.Within(path) {
			return false, true
		}
	}
	return false, false
}

type treeQuery struct {
	path  model.Path
	depth int
	limit int
	after string
}

func parseTreeQuery(q url.Values) (treeQuery, error) {
	t := treeQuery{path: model.Root, depth: 1, limit: defaultTreeLimit}
	var err error
	if v := q.Get("path"); v != "" {
		if t.path, err = model.ParsePath(v); err != nil {
			return t, err
		}
	}
	if v := q.Get("depth"); v != "" {
		if t.depth, err = strconv.Atoi(v); err != nil || t.depth < 0 || t.depth > maxTreeDepth {
			return t, invalidf("depth must be 0 to %d", maxTreeDepth)
		}
	}
	if v := q.Get("limit"); v != "" {
		if t.limit, err = strconv.Atoi(v); err != nil || t.limit < 1 || t.limit > maxTreeLimit {
			return t, invalidf("limit must be 1 to %d", maxTreeLimit)
		}
	}
	if t.after = q.Get("after"); t.after != "" {
		if err := model.ValidateName(t.after); err != nil {
			return t, invalidf("after: %v", err)
		}
	}
	return t, nil
}

func (s *Server) tree(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q, err := parseTreeQuery(r.URL.Query())
	if err != nil {
		return err
	}
	full, toward := reach(p, q.path)
	if !full && !toward {
		return forbidden("listing", auth.RoleViewer, q.path)
	}
	c, err := s.visibleContext(p, q.path)
	if err != nil {
		return err
	}
	top := &treeNode{Name: q.path.Name(), Path: q.path, Type: c.Type, Tenant: c.Tenant}
	l := &lister{s: s, p: p, limit: q.limit}
	// Breadth first, so that the node budget is spread over the levels
	// rather than spent on the first child's subtree.
	type pending struct {
		node  *treeNode
		full  bool
		depth int
		after string
	}
	queue := []pending{{top, full, 0, q.after}}
	for len(queue) > 0 && !l.truncated {
		it := queue[0]
		queue = queue[1:]
		if it.depth >= q.depth {
			continue
		}
		if l.returned >= maxTreeNodes {
			l.truncated = true
			break
		}
		kids, next, err := l.list(it.node.Path, it.after, it.full)
		if err != nil {
			return err
		}
		it.node.Children, it.node.Next = kids, next
		for _, k := range kids {
			f, _ := reach(p, k.Path)
			queue = append(queue, pending{node: k, full: it.full || f, depth: it.depth + 1})
		}
	}
	top.Truncated = l.truncated
	writeJSON(w, http.StatusOK, top)
	return nil
}

// lister lists children for one tree request, within its budgets.
type lister struct {
	s         *Server
	p         *auth.Principal
	limit     int
	returned  int // nodes listed so far
	scanned   int // child index entries read so far
	truncated bool
}

// list returns up to limit children of parent after the name after that
// the caller may see, and the name to continue after when more follow.
// When full is false the caller only navigates through parent, and sees
// only the children that lead to its grants.
func (l *lister) list(parent model.Path, after string, full bool) ([]*treeNode, string, error) {
	limit := min(l.limit, maxTreeNodes-l.returned)
	out := []*treeNode{}
	if limit <= 0 {
		l.truncated = true
		return out, "", nil
	}
	page := min(max(limit+1, 64), 1024)
	cursor := after
	for {
		kids, err := l.s.model.Children(parent, cursor, page)
		if errors.Is(err, model.ErrNotFound) {
			return out, "", nil // deleted meanwhile
		}
		if err != nil {
			return nil, "", err
		}
		for _, k := range kids {
			l.scanned++
			cursor = k.Name
			cp, err := parent.Child(k.Name)
			if err != nil || !l.p.SeesTenant(k.Tenant) {
				continue
			}
			if !full {
				if f, t := reach(l.p, cp); !f && !t {
					continue
				}
			}
			if len(out) == limit {
				// One more visible child exists: say where to go on.
				if limit < l.limit {
					l.truncated = true
				}
				return out, out[len(out)-1].Name, nil
			}
			out = append(out, &treeNode{Name: k.Name, Path: cp, Type: k.Type, Tenant: k.Tenant})
			l.returned++
		}
		if len(kids) < page {
			return out, "", nil
		}
		if l.scanned >= maxTreeScan {
			l.truncated = true
			next := ""
			if len(out) > 0 {
				next = out[len(out)-1].Name
			}
			return out, next, nil
		}
	}
}
