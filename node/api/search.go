package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Inventory search: GET /api/v1/search (docs/api.md, "Search").
//
// The API decides what a caller may see and hands the backend (the node's
// store) plain filters: the subtrees its grants allow under the asked
// path, and the tenants it sees. The backend never sees a principal.

// The query is the model's (model/search.go); the node hands it to its
// store as it is.
type (
	SearchQuery = model.SearchQuery
	SearchPage  = model.SearchPage
)

// Bounds of a search.
const (
	defaultSearchLimit = model.DefaultSearchLimit
	maxSearchLimit     = model.MaxSearchLimit
	maxSearchFilters   = model.MaxSearchFilters
)

// Searcher is the search backend. Errors wrapping model.ErrInvalid are
// answered 400.
type Searcher interface {
	Search(ctx context.Context, q SearchQuery) (SearchPage, error)
}

// searchAnswer is the body of a search answer.
type searchAnswer struct {
	Contexts []contextJSON `json:"contexts"`
	// Next is the after of the following page: a path in path order, an
	// opaque cursor when sorted; "" when no more match.
	Next string `json:"next"`
	// Total is the number of matches (count=true), at most
	// maxSortedMatches; TotalCapped says the count stopped there.
	Total       *int `json:"total,omitempty"`
	TotalCapped bool `json:"total_capped,omitempty"`
}

// searchParams is a parsed search request.
type searchParams struct {
	q      SearchQuery // Prefix is the asked path; Tenants unset
	tenant string      // the tenant parameter, "" when absent
	sort   *sortSpec   // nil: path order
	after  *sortKey    // the cursor of a sorted search
	count  bool        // count=true: count every match
}

// parseSearch reads the query string strictly: unknown parameters and
// repeated ones are 400, so that a misspelt filter does not widen a
// search silently.
func parseSearch(v url.Values) (searchParams, error) {
	sp := searchParams{q: SearchQuery{Prefix: model.Root, Limit: defaultSearchLimit}}
	filters := 0
	after := ""
	for key, vals := range v {
		if len(vals) != 1 {
			return sp, invalidf("parameter %q given %d times", key, len(vals))
		}
		val := vals[0]
		var err error
		switch {
		case key == "path":
			if sp.q.Prefix, err = model.ParsePath(val); err != nil {
				return sp, err
			}
		case key == "type":
			if err := model.ValidText("type", val, model.MaxTypeLen); err != nil {
				return sp, err
			}
			sp.q.Type = val
		case key == "tenant":
			if err := auth.ValidTenant(val); err != nil {
				return sp, err
			}
			sp.tenant = val
		case key == "after":
			after = val
		case key == "consistent": // checked before the handler (consistent.go)
		case key == "sort":
			s, err := parseSort(val)
			if err != nil {
				return sp, err
			}
			if s.field != "" {
				sp.sort = &s
			}
		case key == "count":
			if sp.count, err = strconv.ParseBool(val); err != nil {
				return sp, invalidf("count must be true or false")
			}
		case key == "limit":
			if sp.q.Limit, err = strconv.Atoi(val); err != nil || sp.q.Limit < 1 || sp.q.Limit > maxSearchLimit {
				return sp, invalidf("limit must be 1 to %d", maxSearchLimit)
			}
		case strings.HasPrefix(key, "label."):
			k := strings.TrimPrefix(key, "label.")
			if err := model.ValidText("label key", k, model.MaxLabelLen); err != nil {
				return sp, err
			}
			if err := model.ValidText("label value", val, model.MaxLabelLen); err != nil {
				return sp, err
			}
			if sp.q.Labels == nil {
				sp.q.Labels = map[string]string{}
			}
			sp.q.Labels[k] = val
			filters++
		case strings.HasPrefix(key, "var."):
			name := strings.TrimPrefix(key, "var.")
			if err := model.ValidateName(name); err != nil {
				return sp, invalidf("variable name %q: %v", name, err)
			}
			if sp.q.Vars == nil {
				sp.q.Vars = map[string]json.RawMessage{}
			}
			sp.q.Vars[name] = model.SearchVarValue(val)
			filters++
		default:
			return sp, invalidf("unknown parameter %q (path, type, tenant, after, limit, sort, count, consistent, label.<key>, var.<name>)", key)
		}
	}
	if filters > maxSearchFilters {
		return sp, invalidf("more than %d label and variable filters", maxSearchFilters)
	}
	var err error
	switch {
	case after == "":
	case sp.sort != nil:
		sp.after, err = decodeCursor(after)
	default:
		if sp.q.After, err = model.ParsePath(after); err != nil {
			err = invalidf("after: %v", err)
		}
	}
	return sp, err
}

// searchScopes returns the subtrees under prefix that p may search, none
// inside another: prefix itself when a viewer grant covers it, else the
// subtrees of p's grants that lie below it (forbidden when there are none,
// which depends only on the caller, never on what exists).
func searchScopes(p *auth.Principal, prefix model.Path) ([]model.Path, error) {
	if p.Can(auth.RoleViewer, prefix) {
		return []model.Path{prefix}, nil
	}
	var subs []model.Path
	for _, g := range p.Grants {
		sub, err := model.ParsePath(g.Subtree)
		if err != nil || sub == prefix || !sub.Within(prefix) || !p.Can(auth.RoleViewer, sub) {
			continue
		}
		subs = append(subs, sub)
	}
	slices.SortFunc(subs, func(a, b model.Path) int { return len(a) - len(b) })
	var out []model.Path
	for _, sub := range subs {
		if !slices.ContainsFunc(out, func(o model.Path) bool { return sub.Within(o) }) {
			out = append(out, sub)
		}
	}
	if len(out) == 0 {
		return nil, forbidden("searching", auth.RoleViewer, prefix)
	}
	return out, nil
}

// searchTenants returns the tenants p may search, narrowed to the tenant
// parameter when given: a system user any (nil: all), others their own
// and shared contexts, and only their own by name.
func searchTenants(p *auth.Principal, tenant string) ([]string, error) {
	switch {
	case p.System && tenant == "":
		return nil, nil
	case p.System:
		return []string{tenant}, nil
	case tenant == "":
		return []string{p.Tenant, ""}, nil
	case tenant == p.Tenant:
		return []string{tenant}, nil
	}
	return nil, fmt.Errorf("%w: only system administrators search another tenant", auth.ErrForbidden)
}

func (s *Server) search(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Search == nil {
		return apiError(http.StatusNotImplemented, codeNotImplemented, "search is not enabled on this node")
	}
	sp, err := parseSearch(r.URL.Query())
	if err != nil {
		return err
	}
	scopes, err := searchScopes(p, sp.q.Prefix)
	if err != nil {
		return err
	}
	q := sp.q
	if q.Tenants, err = searchTenants(p, sp.tenant); err != nil {
		return err
	}
	if sp.sort != nil {
		res, err := s.walkSearch(r.Context(), p, q, scopes, sp.sort, sp.after)
		if err != nil {
			return err
		}
		ans := searchAnswer{Contexts: make([]contextJSON, 0, len(res.page)), Next: res.next}
		for _, c := range res.page {
			ans.Contexts = append(ans.Contexts, renderContext(c))
		}
		if sp.count {
			ans.Total, ans.TotalCapped = &res.total, res.capped
		}
		writeJSON(w, http.StatusOK, ans)
		return nil
	}
	// One search per scope, merged in path order: each gives at most a
	// page, and whatever one did not give sorts after its last path, so
	// the first page of the merge is the first page of the union.
	var (
		found []*model.Context
		more  bool
	)
	for _, scope := range scopes {
		sq := q
		sq.Prefix = scope
		page, err := s.cfg.Search.Search(r.Context(), sq)
		if err != nil {
			return fmt.Errorf("search %s: %w", scope, err)
		}
		found = append(found, page.Contexts...)
		more = more || page.Next != ""
	}
	if len(scopes) > 1 {
		slices.SortFunc(found, func(a, b *model.Context) int { return strings.Compare(string(a.Path), string(b.Path)) })
	}
	if len(found) > q.Limit {
		found, more = found[:q.Limit], true
	}
	ans := searchAnswer{Contexts: make([]contextJSON, 0, len(found))}
	if more && len(found) > 0 {
		ans.Next = string(found[len(found)-1].Path)
	}
	if sp.count {
		res, err := s.walkSearch(r.Context(), p, q, scopes, nil, nil)
		if err != nil {
			return err
		}
		ans.Total, ans.TotalCapped = &res.total, res.capped
	}
	for _, c := range found {
		// The backend filtered by tenant already; this keeps the
		// isolation a property of the API whatever the backend does.
		if p.SeesTenant(c.Tenant) {
			ans.Contexts = append(ans.Contexts, renderContext(c))
		}
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}
