package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/strata-dm/strata/model"
)

// Limits on user input.
const (
	MaxUserNameLen   = 64
	MaxTenantNameLen = 64
	MaxGrants        = 32
)

// User is a user as the API shows it. It has no password field at all, so
// no hash can leak through it.
type User struct {
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant"`
	System   bool      `json:"system"`
	Grants   []Grant   `json:"grants"`
	Disabled bool      `json:"disabled"`
	Created  time.Time `json:"created"`
}

// UserSpec is a user to create. Name: 1..64 of [a-z0-9._-] starting with a
// letter or digit. Password: 8..256 bytes. Tenant: 1..64 of [a-z0-9-],
// "" meaning the creator's own; system users have none. Grants: at most 32,
// none meaning viewer on "/".
type UserSpec struct {
	Name     string  `json:"name"`
	Password string  `json:"password"`
	Tenant   string  `json:"tenant"`
	System   bool    `json:"system"`
	Grants   []Grant `json:"grants"`
}

// UserUpdate changes the non-nil fields of a user. Grants replace the old
// ones (an empty list means viewer on "/", as at creation).
type UserUpdate struct {
	Password *string  `json:"password,omitempty"`
	Grants   *[]Grant `json:"grants,omitempty"`
	Disabled *bool    `json:"disabled,omitempty"`
}

// CreateUser creates a user. System users may create anyone; tenant admins
// only non-system users of their own tenant with grants they hold
// themselves; everyone else is forbidden. An existing name is a conflict
// (names are unique on the node).
//
// A name "local@tenant" belongs to that tenant's users only, and the
// users a tenant administrator creates are always named so ("carol"
// becomes "carol@acme"): the only names it can collide with are its own
// tenant's, so creating a user never reveals another tenant's (see
// qualifyUserName).
func (s *Service) CreateUser(ctx context.Context, by *Principal, spec UserSpec) (User, error) {
	if by == nil {
		return User{}, errNoPrincipal
	}
	if !by.managesUsers() {
		return User{}, forbidden("only administrators create users")
	}
	if err := validUserName(spec.Name); err != nil {
		return User{}, err
	}
	if err := validPassword(spec.Password); err != nil {
		return User{}, err
	}
	grants, err := normalizeGrants(spec.Grants)
	if err != nil {
		return User{}, err
	}
	if spec.System {
		if !by.System {
			return User{}, forbidden("only system users create system users")
		}
		if spec.Tenant != "" {
			return User{}, invalid("system users have no tenant")
		}
	} else {
		if spec.Tenant == "" {
			spec.Tenant = by.Tenant
		}
		if err := ValidTenant(spec.Tenant); err != nil {
			return User{}, err
		}
		if !by.System && spec.Tenant != by.Tenant {
			return User{}, forbidden("users can only be created in your own tenant")
		}
	}
	if spec.Name, err = qualifyUserName(by, spec); err != nil {
		return User{}, err
	}
	if !by.mayGive(grants) {
		return User{}, forbidden("grants beyond your own")
	}
	hash, err := s.hasher.hash(ctx, spec.Password)
	if err != nil {
		return User{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.loadUser(spec.Name); err == nil {
		return User{}, conflict("user %q already exists", spec.Name)
	} else if !errors.Is(err, model.ErrNotFound) {
		return User{}, err
	}
	u := &userRecord{
		User: User{
			Name:    spec.Name,
			Tenant:  spec.Tenant,
			System:  spec.System,
			Grants:  grants,
			Created: s.clock(),
		},
		UID:          randomHex(16),
		PasswordHash: hash,
	}
	if err := s.putUser(ctx, u); err != nil {
		return User{}, fmt.Errorf("auth: create user: %w", err)
	}
	// A previous user of this name may have left cached tokens behind
	// (they fail the uid check anyway); forget them.
	s.cache.forgetUser(u.Name)
	s.log.Info("user created", "by", by.User, "user", u.Name, "tenant", u.Tenant, "system", u.System, "grants", grantsAttr(grants))
	return u.public(), nil
}

// GetUser returns a user. Anyone may read itself; administrators the users
// they see; others are forbidden.
func (s *Service) GetUser(ctx context.Context, by *Principal, name string) (User, error) {
	if by == nil {
		return User{}, errNoPrincipal
	}
	u, err := s.visibleUser(by, name)
	if err != nil {
		return User{}, err
	}
	return u.public(), nil
}

// ListUsers returns the users by sees, in name order: all for system
// users, their tenant's for tenant admins; others are forbidden.
func (s *Service) ListUsers(ctx context.Context, by *Principal) ([]User, error) {
	if by == nil {
		return nil, errNoPrincipal
	}
	if !by.managesUsers() {
		return nil, forbidden("only administrators list users")
	}
	out := []User{}
	err := s.rec.Records(KindUser, func(key string, value []byte) error {
		u := new(userRecord)
		if err := json.Unmarshal(value, u); err != nil || u.Name != key {
			return fmt.Errorf("corrupt user record %q", key)
		}
		if by.sees(&u.User) {
			out = append(out, u.public())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: list users: %w", err)
	}
	return out, nil
}

// UpdateUser changes a user. A user may change its own password but not
// disable itself or change its own grants (conflict: it would lock itself
// out). Administrators change the users they see, within the same limits
// as CreateUser. Changes apply to the user's tokens at once.
func (s *Service) UpdateUser(ctx context.Context, by *Principal, name string, upd UserUpdate) (User, error) {
	if by == nil {
		return User{}, errNoPrincipal
	}
	self := name == by.User
	if !self && !by.managesUsers() {
		return User{}, forbidden("only administrators change other users")
	}
	var grants []Grant
	if upd.Grants != nil {
		var err error
		if grants, err = normalizeGrants(*upd.Grants); err != nil {
			return User{}, err
		}
	}
	if self && upd.Disabled != nil && *upd.Disabled {
		return User{}, conflict("you cannot disable yourself")
	}
	var hash string
	if upd.Password != nil {
		if err := validPassword(*upd.Password); err != nil {
			return User{}, err
		}
		// Only hash for callers that may change this user: check first so
		// an unauthorized caller cannot make the node hash for it.
		if _, err := s.visibleUser(by, name); err != nil {
			return User{}, err
		}
		var err error
		if hash, err = s.hasher.hash(ctx, *upd.Password); err != nil {
			return User{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.visibleUser(by, name)
	if err != nil {
		return User{}, err
	}
	var changed []string
	if upd.Grants != nil && !slices.Equal(grants, u.Grants) {
		if self {
			return User{}, conflict("you cannot change your own grants")
		}
		if !by.mayGive(grants) {
			return User{}, forbidden("grants beyond your own")
		}
		u.Grants = grants
		changed = append(changed, "grants")
	}
	if upd.Disabled != nil && *upd.Disabled != u.Disabled {
		u.Disabled = *upd.Disabled
		changed = append(changed, "disabled")
	}
	if upd.Password != nil {
		u.PasswordHash = hash
		changed = append(changed, "password")
	}
	if len(changed) == 0 {
		return u.public(), nil
	}
	if err := s.putUser(ctx, u); err != nil {
		return User{}, fmt.Errorf("auth: update user: %w", err)
	}
	s.cache.forgetUser(u.Name)
	s.log.Info("user updated", "by", by.User, "user", u.Name, "changed", changed,
		"grants", grantsAttr(u.Grants), "disabled", u.Disabled)
	return u.public(), nil
}

// DeleteUser deletes a user and its tokens (which stop working at once).
// Administrators delete the users they see; nobody deletes itself
// (conflict).
func (s *Service) DeleteUser(ctx context.Context, by *Principal, name string) error {
	if by == nil {
		return errNoPrincipal
	}
	if !by.managesUsers() {
		return forbidden("only administrators delete users")
	}
	if name == by.User {
		return conflict("you cannot delete yourself")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.visibleUser(by, name)
	if err != nil {
		return err
	}
	var ids []string
	err = s.eachToken(func(t *tokenRecord) error {
		if t.User == u.Name {
			ids = append(ids, t.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth: delete user: %w", err)
	}
	// Tokens first: a crash in between leaves a user with fewer tokens,
	// never tokens without their user (and the uid check covers even that).
	for _, id := range ids {
		if err := s.rec.DeleteRecord(ctx, KindToken, id); err != nil {
			return fmt.Errorf("auth: delete user: %w", err)
		}
	}
	if err := s.rec.DeleteRecord(ctx, KindUser, u.Name); err != nil {
		return fmt.Errorf("auth: delete user: %w", err)
	}
	s.cache.forgetUser(u.Name)
	s.log.Info("user deleted", "by", by.User, "user", u.Name, "tokens", len(ids))
	return nil
}

// visibleUser loads name for by: itself always; another user only when by
// manages users (else ErrForbidden) and sees it (else not found, exactly as
// for a missing user).
func (s *Service) visibleUser(by *Principal, name string) (*userRecord, error) {
	if name != by.User && !by.managesUsers() {
		return nil, forbidden("only administrators see other users")
	}
	u, err := s.loadUser(name)
	if err != nil {
		return nil, err
	}
	if name != by.User && !by.sees(&u.User) {
		return nil, userNotFound(name)
	}
	return u, nil
}

// public is the API view of a stored user, sharing nothing mutable with it.
func (u *userRecord) public() User {
	p := u.User
	p.Grants = slices.Clone(u.Grants)
	if p.Grants == nil {
		p.Grants = []Grant{}
	}
	return p
}

// qualifyUserName returns the name spec's user is created under. A name
// "local@tenant" must name spec's tenant (system users have none, so no
// '@'). A tenant administrator's new user without '@' is qualified with
// its tenant: names are one namespace per node, and were a tenant
// administrator to pick an unqualified name, a conflict with another
// tenant's user (which it cannot see: 404) would reveal that user.
// System users see every tenant and may pick unqualified names.
func qualifyUserName(by *Principal, spec UserSpec) (string, error) {
	local, tenant, qualified := strings.Cut(spec.Name, "@")
	switch {
	case qualified && spec.System:
		return "", invalid("user name %q: system users have no tenant, so no '@'", spec.Name)
	case qualified && tenant != spec.Tenant:
		return "", invalid("user name %q: a name ending in @%s belongs to tenant %q (the user's tenant is %q)", spec.Name, tenant, tenant, spec.Tenant)
	case qualified, spec.System, by.System:
		return spec.Name, nil
	}
	name := local + "@" + spec.Tenant
	return name, validUserName(name)
}

// validUserName: 1..64 of [a-z0-9._-], starting with a letter or digit,
// optionally qualified with "@tenant".
func validUserName(name string) error {
	if local, tenant, ok := strings.Cut(name, "@"); ok {
		if err := validUserName(local); err != nil {
			return err
		}
		if err := ValidTenant(tenant); err != nil {
			return invalid("user name %q: after '@' comes a tenant: %v", name, err)
		}
		return nil
	}
	if name == "" || len(name) > MaxUserNameLen {
		return invalid("user name must be 1 to %d characters", MaxUserNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return invalid("user name %q: use a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
		}
	}
	return nil
}

// ValidTenant accepts a tenant's name: 1 to 64 of [a-z0-9-]. Its error
// wraps model.ErrInvalid.
func ValidTenant(t string) error {
	if t == "" || len(t) > MaxTenantNameLen {
		return invalid("tenant must be 1 to %d characters", MaxTenantNameLen)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return invalid("tenant %q: use a-z, 0-9 and '-'", t)
		}
	}
	return nil
}

// normalizeGrants validates grants and returns their canonical form: known
// roles, subtrees as model.ParsePath returns them ("" is "/"), and viewer
// on "/" when there are none.
func normalizeGrants(in []Grant) ([]Grant, error) {
	if len(in) == 0 {
		return []Grant{{Role: RoleViewer, Subtree: string(model.Root)}}, nil
	}
	if len(in) > MaxGrants {
		return nil, invalid("at most %d grants", MaxGrants)
	}
	out := make([]Grant, len(in))
	for i, g := range in {
		if !g.Role.Valid() {
			return nil, invalid("grant %d: unknown role %q (viewer, operator or admin)", i, g.Role)
		}
		p, err := model.ParsePath(g.Subtree)
		if err != nil {
			return nil, fmt.Errorf("%w: grant %d: subtree: %v", model.ErrInvalid, i, err)
		}
		out[i] = Grant{Role: g.Role, Subtree: string(p)}
	}
	return out, nil
}

// grantsAttr renders grants compactly for logs: "admin:/,viewer:/devices".
func grantsAttr(gs []Grant) string {
	var b []byte
	for i, g := range gs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, g.Role...)
		b = append(b, ':')
		b = append(b, g.Subtree...)
	}
	return string(b)
}
