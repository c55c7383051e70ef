package auth

import (
	"slices"

	"github.com/strata-dm/strata/model"
)

// Role is what a grant allows on its subtree. Roles are ordered:
// viewer < operator < admin, and a higher role includes the lower ones.
type Role string

// Roles, from least to most powerful.
const (
	RoleViewer   Role = "viewer"   // reads
	RoleOperator Role = "operator" // also writes contexts, records events, calls functions
	RoleAdmin    Role = "admin"    // also manages users and tokens (of its tenant, when on "/")
)

// rank orders roles; an unknown role ranks 0 and so satisfies nothing.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// Grant gives a role on the subtree rooted at Subtree (a model path; "/" is
// the whole tree). Grants stored by this package are canonical: a valid role
// and a subtree as returned by model.ParsePath.
type Grant struct {
	Role    Role   `json:"role"`
	Subtree string `json:"subtree"`
}

// covers reports whether holding g lets one do everything want allows:
// g's role is at least want's and want's subtree lies within g's. Both
// subtrees must parse; anything else covers nothing (fail closed).
func (g Grant) covers(want Grant) bool {
	if !g.Role.Valid() || g.Role.rank() < want.Role.rank() || !want.Role.Valid() {
		return false
	}
	have, err := model.ParsePath(g.Subtree)
	if err != nil {
		return false
	}
	p, err := model.ParsePath(want.Subtree)
	if err != nil {
		return false
	}
	return p.Within(have)
}

// Principal is an authenticated caller, as Authenticate returns it. It is a
// snapshot: changes to the user after authentication do not alter it.
//
// Authorization is two independent checks that callers must both make:
// Can (role on a path) and SeesTenant (tenant isolation). A grant on "/" of
// a tenant user still only reaches that tenant's data and shared folders.
type Principal struct {
	User    string
	Tenant  string // "" only for system users
	TokenID string
	System  bool // administrator across all tenants; bypasses grants
	Grants  []Grant
}

// Can reports whether p may act with role need on path: always for a system
// principal, otherwise when some grant has a role at least need and a
// subtree containing path. A nil principal, an unknown role, the zero path
// and malformed grants allow nothing.
func (p *Principal) Can(need Role, path model.Path) bool {
	if p == nil {
		return false
	}
	if p.System {
		return true
	}
	if !need.Valid() || path == "" {
		return false
	}
	for _, g := range p.Grants {
		if g.Role.rank() < need.rank() {
			continue
		}
		sub, err := model.ParsePath(g.Subtree)
		if err != nil {
			continue
		}
		if path.Within(sub) {
			return true
		}
	}
	return false
}

// SeesTenant reports whether p may see data of tenant: a system principal
// sees every tenant; others see their own and "" (shared structural
// folders).
func (p *Principal) SeesTenant(tenant string) bool {
	if p == nil {
		return false
	}
	return p.System || tenant == "" || tenant == p.Tenant
}

// managesUsers reports whether p may manage other users and their tokens:
// system principals everywhere, tenant admins (admin on "/", non-empty
// tenant) within their tenant. An admin scoped to a subtree manages only
// its own tokens.
func (p *Principal) managesUsers() bool {
	if p == nil {
		return false
	}
	return p.System || (p.Tenant != "" && p.Can(RoleAdmin, model.Root))
}

// sees reports whether p may see (and, if it manages users, manage) the
// stored user u. Another tenant's users and system users are invisible to a
// tenant admin; callers answer "not found" for them.
func (p *Principal) sees(u *User) bool {
	if p.System {
		return true
	}
	return !u.System && p.Tenant != "" && u.Tenant == p.Tenant
}

// mayGive reports whether p may hand out every grant in gs: system
// principals may give anything, others only grants covered by one of their
// own (no escalation).
func (p *Principal) mayGive(gs []Grant) bool {
	if p.System {
		return true
	}
	for _, want := range gs {
		if !slices.ContainsFunc(p.Grants, func(have Grant) bool { return have.covers(want) }) {
			return false
		}
	}
	return true
}

func (p *Principal) clone() *Principal {
	c := *p
	c.Grants = slices.Clone(p.Grants)
	return &c
}
