// Package auth holds a node's users, passwords, API tokens, roles and
// tenants, and turns a bearer token into a Principal.
//
// Invariants the package keeps (and its tests try to break):
//
//   - Tenant isolation: a non-system principal never sees, changes or learns
//     the existence of another tenant's users or tokens through Service;
//     such users answer with exactly the not-found error of a missing user.
//     User names are one namespace per node, so a tenant administrator's
//     new users are named "local@tenant" (CreateUser qualifies them): their
//     names can only collide with its own tenant's users.
//   - Only system users create or change system users or place a user in
//     another tenant; system users have tenant "", everyone else a
//     non-empty tenant.
//   - No escalation: a non-system principal only hands out grants covered by
//     its own.
//   - Nobody deletes, disables or changes the grants of itself, so the
//     caller always remains able to act.
//   - Secrets are never stored: tokens as SHA-256 of the token string,
//     passwords as argon2id in PHC form with a per-user salt. Neither a
//     hash nor a secret appears in User, Token, logs or errors.
//   - A token is bound to its user's random uid, so a token that outlived
//     its user (a crash between deletes) never authenticates a later user
//     of the same name.
//   - Changes made through a Service take effect on its Authenticate at
//     once; changes made by another Service over the same records (another
//     cluster replica) within Config.CacheTTL, or at once after
//     InvalidateRecord.
//
// Storage is node-local records (kinds "auth.user" and "auth.token", JSON
// values) behind Records; the node passes its *model.Model. Writes are
// serialised by one mutex per Service: a cluster must send auth writes
// through one replica (the leader) for name uniqueness to hold.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/strata-dm/strata/model"
)

// Errors callers branch on with errors.Is, next to model.ErrNotFound,
// model.ErrInvalid and model.ErrConflict. A refused login returns a
// *RateLimitError, which wraps ErrRateLimited.
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrRateLimited  = errors.New("rate limited")
)

// Record kinds used in Records.
const (
	KindUser  = "auth.user"  // key: user name
	KindToken = "auth.token" // key: token id
)

// Records is node-local durable storage; *model.Model implements it.
type Records interface {
	// Record returns a value, or an error wrapping model.ErrNotFound.
	Record(kind, key string) ([]byte, error)
	// Records calls fn for every record of kind in key order.
	Records(kind string, fn func(key string, value []byte) error) error
	// PutRecord stores a value; it is durable when PutRecord returns.
	PutRecord(ctx context.Context, kind, key string, value []byte) error
	// DeleteRecord removes a record; a missing record is not an error.
	DeleteRecord(ctx context.Context, kind, key string) error
}

// Interface guard: the node hands its model to New.
var _ Records = (*model.Model)(nil)

// Defaults and limits.
const (
	DefaultLoginFailures       = 5
	DefaultLoginWindow         = time.Minute
	DefaultSessionTTL          = 12 * time.Hour
	DefaultTokenTTL            = 90 * 24 * time.Hour
	MaxTokenTTL                = 10 * 365 * 24 * time.Hour
	DefaultCacheTTL            = 10 * time.Second
	DefaultPasswordMemoryKiB   = 64 * 1024
	DefaultPasswordConcurrency = 4
)

// Config is what New needs. Zero fields take the defaults above.
type Config struct {
	Records Records
	Logger  *slog.Logger     // nil: discard
	Now     func() time.Time // nil: time.Now

	// LoginFailures failed logins within LoginWindow, per user name and per
	// client address, block further attempts until the window slides.
	LoginFailures int
	LoginWindow   time.Duration
	// SessionTTL is the lifetime of tokens issued by Login, and the most a
	// login may ask for.
	SessionTTL time.Duration
	// CacheTTL bounds how long a verified token is trusted from memory
	// without rereading its records; it only matters for changes made by
	// another Service (another replica), see InvalidateRecord.
	CacheTTL time.Duration
	// PasswordMemoryKiB is argon2id's memory for new password hashes
	// (minimum 16). Existing hashes keep their parameters until the user
	// next logs in. Tests use a tiny value.
	PasswordMemoryKiB uint32
	// PasswordConcurrency bounds concurrent password hashes, and so the
	// memory logins can take (PasswordConcurrency × PasswordMemoryKiB).
	PasswordConcurrency int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LoginFailures == 0 {
		c.LoginFailures = DefaultLoginFailures
	}
	if c.LoginWindow == 0 {
		c.LoginWindow = DefaultLoginWindow
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.PasswordMemoryKiB == 0 {
		c.PasswordMemoryKiB = DefaultPasswordMemoryKiB
	}
	if c.PasswordConcurrency == 0 {
		c.PasswordConcurrency = DefaultPasswordConcurrency
	}
}

// Validate checks c as New would use it: zero fields count as their
// defaults.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Records == nil:
		return errors.New("auth: Records is required")
	case c.LoginFailures < 1:
		return errors.New("auth: LoginFailures must be at least 1")
	case c.LoginWindow <= 0:
		return errors.New("auth: LoginWindow must be positive")
	case c.SessionTTL <= 0 || c.SessionTTL > MaxTokenTTL:
		return fmt.Errorf("auth: SessionTTL must be in (0, %v]", MaxTokenTTL)
	case c.CacheTTL < 0:
		return errors.New("auth: CacheTTL must not be negative")
	case c.PasswordMemoryKiB < minMemoryKiB || c.PasswordMemoryKiB > maxMemoryKiB:
		return fmt.Errorf("auth: PasswordMemoryKiB must be in [%d, %d]", minMemoryKiB, maxMemoryKiB)
	case c.PasswordConcurrency < 1:
		return errors.New("auth: PasswordConcurrency must be at least 1")
	}
	return nil
}

// Service is a node's authentication and user management. It is safe for
// concurrent use. Every method taking a *Principal authorizes it; a nil
// principal is ErrUnauthorized.
type Service struct {
	rec        Records
	log        *slog.Logger
	now        func() time.Time
	sessionTTL time.Duration
	hasher     *hasher
	limiter    *loginLimiter
	cache      *tokenCache

	// mu serialises writes, so that each read-check-write of records is
	// atomic with respect to the others made through this Service.
	mu sync.Mutex
}

// New returns a Service over cfg.Records. It holds no goroutines or files,
// so there is nothing to close.
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{
		rec:        cfg.Records,
		log:        cfg.Logger.With("component", "auth"),
		now:        cfg.Now,
		sessionTTL: cfg.SessionTTL,
		hasher:     newHasher(argonParams{memory: cfg.PasswordMemoryKiB, time: argonTime, threads: argonThreads}, cfg.PasswordConcurrency),
		limiter:    newLoginLimiter(cfg.LoginFailures, cfg.LoginWindow, maxLimiterKeys),
		cache:      newTokenCache(cfg.CacheTTL, maxCachedTokens),
	}, nil
}

// clock is the current time in UTC without a monotonic reading, as stored.
func (s *Service) clock() time.Time { return s.now().UTC().Round(0) }

// Bootstrap makes a fresh node administrable: when no user exists it
// creates the system user "admin" (tenant "", admin on "/", no password)
// and stores adminToken, a string from NewTokenSecret, as its token "admin"
// that never expires. When any user exists it does nothing and returns
// false, so it is safe to call at every start.
func (s *Service) Bootstrap(ctx context.Context, adminToken string) (created bool, err error) {
	id, err := parseToken(adminToken)
	if err != nil {
		return false, fmt.Errorf("%w: admin token: %v", model.ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	empty := true
	errStop := errors.New("stop")
	err = s.rec.Records(KindUser, func(string, []byte) error {
		empty = false
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, fmt.Errorf("auth: bootstrap: %w", err)
	}
	if !empty {
		return false, nil
	}
	now := s.clock()
	u := &userRecord{
		User: User{
			Name:    bootstrapUser,
			System:  true,
			Grants:  []Grant{{Role: RoleAdmin, Subtree: string(model.Root)}},
			Created: now,
		},
		UID: randomHex(16),
	}
	t := &tokenRecord{
		Token:   Token{ID: id, User: u.Name, Name: bootstrapUser, Created: now},
		UserUID: u.UID,
		Hash:    tokenHash(adminToken),
	}
	// Token first: a crash in between leaves no user, so the next
	// Bootstrap redoes both (overwriting the token with the new uid).
	if err := s.putToken(ctx, t); err != nil {
		return false, fmt.Errorf("auth: bootstrap: %w", err)
	}
	if err := s.putUser(ctx, u); err != nil {
		return false, fmt.Errorf("auth: bootstrap: %w", err)
	}
	s.cache.forgetToken(id)
	s.log.Info("bootstrapped system user", "user", u.Name, "token_id", id)
	return true, nil
}

const bootstrapUser = "admin"

// InvalidateRecord drops what the token cache derived from one record. A
// node whose records change behind this Service's back (a cluster follower
// applying the leader's log) calls it for each applied auth.* record to make
// those changes effective at once instead of within CacheTTL. Other kinds
// are ignored.
func (s *Service) InvalidateRecord(kind, key string) {
	switch kind {
	case KindToken:
		s.cache.forgetToken(key)
	case KindUser:
		s.cache.forgetUser(key)
	}
}

// InvalidateAll drops the whole token cache, as InvalidateRecord does one
// record's part of it: for a replica whose records were replaced at once
// (a snapshot installed), whose changes no commit hook saw.
func (s *Service) InvalidateAll() { s.cache.forgetAll() }

// Changed returns a context that is done as soon as a token or user
// changes after the call, through this Service or InvalidateRecord: a
// token revoked, a user deleted, disabled or given other grants. Holders
// of a long-lived request (a change stream) authenticate again when it is
// done, and call Changed again for the next change; nothing polls.
func (s *Service) Changed() context.Context { return s.cache.watch() }

// userRecord is a user as stored. The password hash lives only here, never
// in User.
type userRecord struct {
	User
	UID          string `json:"uid"`
	PasswordHash string `json:"password_hash,omitempty"`
}

// tokenRecord is a token as stored.
type tokenRecord struct {
	Token
	UserUID   string    `json:"user_uid"`
	Hash      string    `json:"hash"` // hex SHA-256 of the whole token string
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// loadUser reads a user. A malformed name is simply not found, so no odd
// string reaches the store as a key.
func (s *Service) loadUser(name string) (*userRecord, error) {
	if validUserName(name) != nil {
		return nil, userNotFound(name)
	}
	b, err := s.rec.Record(KindUser, name)
	if errors.Is(err, model.ErrNotFound) {
		return nil, userNotFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read user: %w", err)
	}
	u := new(userRecord)
	if err := json.Unmarshal(b, u); err != nil || u.Name != name {
		return nil, fmt.Errorf("auth: corrupt user record %q", name)
	}
	return u, nil
}

func (s *Service) putUser(ctx context.Context, u *userRecord) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return s.rec.PutRecord(ctx, KindUser, u.Name, b)
}

// loadToken reads a token by id; malformed ids are not found.
func (s *Service) loadToken(id string) (*tokenRecord, error) {
	if !validTokenID(id) {
		return nil, tokenNotFound(id)
	}
	b, err := s.rec.Record(KindToken, id)
	if errors.Is(err, model.ErrNotFound) {
		return nil, tokenNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read token: %w", err)
	}
	t := new(tokenRecord)
	if err := json.Unmarshal(b, t); err != nil || t.ID != id {
		return nil, fmt.Errorf("auth: corrupt token record %q", id)
	}
	return t, nil
}

func (s *Service) putToken(ctx context.Context, t *tokenRecord) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.rec.PutRecord(ctx, KindToken, t.ID, b)
}

// eachToken calls fn for every stored token in id order; undecodable
// records are skipped with a log line rather than failing every listing.
func (s *Service) eachToken(fn func(*tokenRecord) error) error {
	return s.rec.Records(KindToken, func(key string, value []byte) error {
		t := new(tokenRecord)
		if err := json.Unmarshal(value, t); err != nil || t.ID != key {
			s.log.Error("corrupt token record skipped", "token_id", key)
			return nil
		}
		return fn(t)
	})
}

// userNotFound is the one error for a missing user and for a user the
// caller may not see: identical text, so existence is never revealed.
func userNotFound(name string) error {
	return fmt.Errorf("%w: user %q", model.ErrNotFound, name)
}

func tokenNotFound(id string) error {
	return fmt.Errorf("%w: token %q", model.ErrNotFound, id)
}

func forbidden(what string) error { return fmt.Errorf("%w: %s", ErrForbidden, what) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{model.ErrInvalid}, args...)...)
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{model.ErrConflict}, args...)...)
}

var errNoPrincipal = fmt.Errorf("%w: no principal", ErrUnauthorized)
