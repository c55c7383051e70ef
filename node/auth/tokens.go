package auth

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/strata-dm/strata/model"
)

// Token describes an API token; the secret is shown once, at creation, and
// never stored. Expires is zero (and absent from JSON) for a token that
// never expires, which only Bootstrap creates.
type Token struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked bool      `json:"revoked"`
}

// expired reports whether t is expired at now.
func (t *Token) expired(now time.Time) bool { return !t.Expires.IsZero() && !now.Before(t.Expires) }

// MaxTokenNameLen bounds a token's name (bytes).
const MaxTokenNameLen = 64

// sessionTokenName names the tokens Login issues.
const sessionTokenName = "login"

// Authenticate returns the principal a token string stands for, or an error
// wrapping ErrUnauthorized when the string is malformed or unknown, the
// token expired or was revoked, or its user is disabled or gone. Other
// errors are storage failures.
//
// It runs on every request: a verified token is served from memory (still
// checking the secret's hash and the expiry each time) until a change
// through this Service invalidates it, or CacheTTL passes.
func (s *Service) Authenticate(ctx context.Context, secret string) (*Principal, error) {
	id, err := parseToken(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	hash := tokenHash(secret)
	now := s.clock()
	e, gen := s.cache.get(id, now)
	if e != nil {
		if subtle.ConstantTimeCompare([]byte(hash), []byte(e.hash)) != 1 {
			return nil, errUnknownToken
		}
		if !e.expires.IsZero() && !now.Before(e.expires) {
			return nil, fmt.Errorf("%w: token expired", ErrUnauthorized)
		}
		return e.principal.clone(), nil
	}
	t, err := s.loadToken(id)
	if errors.Is(err, model.ErrNotFound) {
		return nil, errUnknownToken
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(hash), []byte(t.Hash)) != 1 {
		return nil, errUnknownToken
	}
	switch {
	case t.Revoked:
		return nil, fmt.Errorf("%w: token revoked", ErrUnauthorized)
	case t.expired(now):
		return nil, fmt.Errorf("%w: token expired", ErrUnauthorized)
	}
	u, err := s.loadUser(t.User)
	if errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("%w: user no longer exists", ErrUnauthorized)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case u.UID != t.UserUID:
		return nil, fmt.Errorf("%w: user no longer exists", ErrUnauthorized)
	case u.Disabled:
		return nil, fmt.Errorf("%w: user disabled", ErrUnauthorized)
	}
	p := &Principal{User: u.Name, Tenant: u.Tenant, TokenID: id, System: u.System, Grants: slices.Clone(u.Grants)}
	s.cache.put(id, &cachedToken{hash: t.Hash, expires: t.Expires, verified: now, principal: p}, gen)
	return p.clone(), nil
}

// errUnknownToken is the answer for an unknown id and for a wrong secret
// alike.
var errUnknownToken = fmt.Errorf("%w: unknown token", ErrUnauthorized)

// CreateToken issues a token for user ("" or by.User: the caller itself)
// named name (1..64 bytes of printable text), valid for ttl (0: 90 days, at
// most 10 years), and returns its secret, shown only now. Anyone may create
// its own tokens; tenant admins for users of their tenant, system users for
// anyone. A disabled user gets none (conflict).
func (s *Service) CreateToken(ctx context.Context, by *Principal, user, name string, ttl time.Duration) (secret string, tok Token, err error) {
	if by == nil {
		return "", Token{}, errNoPrincipal
	}
	if err := validTokenName(name); err != nil {
		return "", Token{}, err
	}
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0 || ttl > MaxTokenTTL:
		return "", Token{}, invalid("token ttl must be in (0, %v]", MaxTokenTTL)
	}
	if user == "" {
		user = by.User
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.visibleUser(by, user)
	if err != nil {
		return "", Token{}, err
	}
	if u.Disabled {
		return "", Token{}, conflict("user %q is disabled", u.Name)
	}
	secret, t, err := s.issueToken(ctx, u, name, ttl)
	if err != nil {
		return "", Token{}, err
	}
	s.log.Info("token created", "by", by.User, "user", u.Name, "token_id", t.ID, "name", name, "expires", t.Expires)
	return secret, t, nil
}

// issueToken stores a new token for u. Callers hold s.mu.
func (s *Service) issueToken(ctx context.Context, u *userRecord, name string, ttl time.Duration) (string, Token, error) {
	secret, err := NewTokenSecret()
	if err != nil {
		return "", Token{}, err
	}
	id, _ := parseToken(secret)
	now := s.clock()
	t := &tokenRecord{
		Token:   Token{ID: id, User: u.Name, Name: name, Created: now, Expires: now.Add(ttl)},
		UserUID: u.UID,
		Hash:    tokenHash(secret),
	}
	if err := s.putToken(ctx, t); err != nil {
		return "", Token{}, fmt.Errorf("auth: store token: %w", err)
	}
	return secret, t.Token, nil
}

// ListTokens returns user's tokens ("" or by.User: the caller's own),
// revoked and expired ones included, oldest first. Others' tokens are
// listed for tenant admins (their tenant) and system users.
func (s *Service) ListTokens(ctx context.Context, by *Principal, user string) ([]Token, error) {
	if by == nil {
		return nil, errNoPrincipal
	}
	if user == "" {
		user = by.User
	}
	u, err := s.visibleUser(by, user)
	if err != nil {
		return nil, err
	}
	out := []Token{}
	err = s.eachToken(func(t *tokenRecord) error {
		if t.User == u.Name && t.UserUID == u.UID {
			out = append(out, t.Token)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: list tokens: %w", err)
	}
	slices.SortFunc(out, func(a, b Token) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RevokeToken revokes a token at once: no Authenticate through this Service
// accepts it after RevokeToken returns. Anyone may revoke its own tokens
// (logout included); tenant admins those of their tenant's users, system
// users any. A token the caller may not touch is not found, like a missing
// one (so is a malformed id). Revoking twice is not an error.
func (s *Service) RevokeToken(ctx context.Context, by *Principal, id string) error {
	if by == nil {
		return errNoPrincipal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.loadToken(id)
	if err != nil {
		return err
	}
	if t.User != by.User {
		if !by.managesUsers() {
			return tokenNotFound(id)
		}
		u, err := s.loadUser(t.User)
		if errors.Is(err, model.ErrNotFound) || (err == nil && !by.sees(&u.User)) {
			return tokenNotFound(id)
		}
		if err != nil {
			return err
		}
	}
	if t.Revoked {
		return nil
	}
	t.Revoked, t.RevokedAt = true, s.clock()
	if err := s.putToken(ctx, t); err != nil {
		return fmt.Errorf("auth: revoke token: %w", err)
	}
	s.cache.forgetToken(id)
	s.log.Info("token revoked", "by", by.User, "user", t.User, "token_id", id)
	return nil
}

// Prune deletes token records that can never authenticate again: expired or
// revoked longer than retention ago, and tokens whose user is gone. It is
// maintenance for the node to run now and then (Login adds a token per
// session); it needs no principal. It returns how many it deleted.
func (s *Service) Prune(ctx context.Context, retention time.Duration) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uids := map[string]string{}
	err := s.rec.Records(KindUser, func(key string, value []byte) error {
		var u userRecord
		if err := json.Unmarshal(value, &u); err != nil || u.Name != key {
			return fmt.Errorf("corrupt user record %q", key)
		}
		uids[key] = u.UID
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("auth: prune: %w", err)
	}
	cutoff := s.clock().Add(-retention)
	var dead []string
	err = s.eachToken(func(t *tokenRecord) error {
		uid, ok := uids[t.User]
		switch {
		case !ok || uid != t.UserUID,
			t.Revoked && t.RevokedAt.Before(cutoff),
			!t.Expires.IsZero() && t.Expires.Before(cutoff):
			dead = append(dead, t.ID)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("auth: prune: %w", err)
	}
	for i, id := range dead {
		if err := s.rec.DeleteRecord(ctx, KindToken, id); err != nil {
			return i, fmt.Errorf("auth: prune: %w", err)
		}
		s.cache.forgetToken(id)
	}
	if len(dead) > 0 {
		s.log.Info("pruned tokens", "count", len(dead))
	}
	return len(dead), nil
}

func validTokenName(name string) error {
	if name == "" || len(name) > MaxTokenNameLen || !utf8.ValidString(name) {
		return invalid("token name must be 1 to %d bytes of UTF-8", MaxTokenNameLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return invalid("token name contains a control character")
		}
	}
	return nil
}
