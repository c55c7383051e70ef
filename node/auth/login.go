package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-dm/strata/model"
)

// errBadLogin is the one answer for a wrong user name, a wrong password, a
// user without a password and a disabled user.
var errBadLogin = fmt.Errorf("%w: wrong user name or password", ErrUnauthorized)

// Login checks a password and issues a session token named "login" valid
// for ttl (0: SessionTTL; longer than SessionTTL is cut to it). remoteAddr
// is the client's address ("ip:port" or "ip").
//
// Failed logins are limited per user name and per client address: after
// LoginFailures failures within LoginWindow on either, attempts fail with a
// *RateLimitError without the password being checked. A success clears the
// user name's failures but not the address's.
//
// Every failure wraps ErrUnauthorized with one and the same message, for a
// missing user, a wrong password, a user without a password or a disabled
// user, and costs one password hash either way, so neither the answer nor
// its timing reveals which user names exist. A negative ttl is
// model.ErrInvalid.
func (s *Service) Login(ctx context.Context, username, password, remoteAddr string, ttl time.Duration) (secret string, tok Token, u User, err error) {
	switch {
	case ttl < 0:
		return "", Token{}, User{}, invalid("session ttl must not be negative")
	case ttl == 0 || ttl > s.sessionTTL:
		ttl = s.sessionTTL
	}
	// Limiter keys are bounded whatever the input: an invalid name cannot
	// exist, so all of them share one key.
	ukey := username
	if validUserName(username) != nil {
		ukey = "\x00invalid"
	}
	akey := clientKey(remoteAddr)
	at := s.clock()
	logName := username
	if ukey != username {
		logName = "(invalid)"
	}
	log := s.log.With("user", logName, "addr", akey)
	if retry, ok := s.limiter.begin(ukey, akey, at); !ok {
		log.Warn("login refused: rate limited", "retry_after", retry)
		return "", Token{}, User{}, &RateLimitError{RetryAfter: retry}
	}

	rec, err := s.loadUser(username)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		s.limiter.abandoned(ukey, akey, at)
		return "", Token{}, User{}, err
	}
	var encoded string
	if rec != nil {
		encoded = rec.PasswordHash
	}
	pw := password
	if len(pw) > MaxPasswordLen {
		pw = "" // still hashed, against the dummy: no length oracle
		encoded = ""
	}
	ok, stale, err := s.hasher.verify(ctx, encoded, pw)
	switch {
	case errors.Is(err, errBadHash):
		log.Error("stored password hash is malformed")
	case err != nil:
		// Cancelled while waiting for a hashing slot: nothing was
		// checked, so nothing is counted. Once a hash ran, the attempt
		// counts even if the client has gone.
		s.limiter.abandoned(ukey, akey, at)
		return "", Token{}, User{}, err
	}
	if !ok || rec == nil || rec.Disabled {
		reason := "wrong password"
		switch {
		case rec == nil:
			reason = "no such user"
		case ok && rec.Disabled:
			reason = "user disabled"
		}
		log.Warn("login failed", "reason", reason)
		return "", Token{}, User{}, errBadLogin
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Reread under the lock: the user may have changed while we hashed.
	cur, err := s.loadUser(username)
	if err != nil || cur.UID != rec.UID || cur.PasswordHash != rec.PasswordHash || cur.Disabled {
		if err != nil && !errors.Is(err, model.ErrNotFound) {
			s.limiter.abandoned(ukey, akey, at)
			return "", Token{}, User{}, err
		}
		log.Warn("login failed", "reason", "user changed during login")
		return "", Token{}, User{}, errBadLogin
	}
	s.limiter.succeeded(ukey, akey, at)
	if stale {
		s.rehash(ctx, cur, password)
	}
	secret, tok, err = s.issueToken(ctx, cur, sessionTokenName, ttl)
	if err != nil {
		return "", Token{}, User{}, err
	}
	log.Info("login", "token_id", tok.ID, "expires", tok.Expires)
	return secret, tok, cur.public(), nil
}

// rehash stores password under the current parameters after a successful
// login with a hash made under older ones. Failure only costs the upgrade.
// Callers hold s.mu.
func (s *Service) rehash(ctx context.Context, u *userRecord, password string) {
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return
	}
	u.PasswordHash = hash
	if err := s.putUser(ctx, u); err != nil {
		s.log.Warn("password rehash failed", "user", u.Name, "err", err)
		return
	}
	s.log.Info("password rehashed with current parameters", "user", u.Name)
}
