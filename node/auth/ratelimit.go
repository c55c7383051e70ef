package auth

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// RateLimitError refuses a login after too many failures. It wraps
// ErrRateLimited; RetryAfter is when the next attempt may pass (the API
// rounds it up to whole seconds for Retry-After).
type RateLimitError struct {
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	secs := (e.RetryAfter + time.Second - 1) / time.Second
	return fmt.Sprintf("%v: too many failed logins, retry in %ds", ErrRateLimited, secs)
}

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// maxLimiterKeys bounds each of the limiter's maps. Only an attacker with
// very many addresses reaches it; then expired entries are swept and, if
// that is not enough, arbitrary entries are forgotten (memory wins over
// perfect counting).
const maxLimiterKeys = 100_000

// loginLimiter counts failed logins per user name and per client address
// in a sliding window. An attempt is counted as a failure when it begins
// (so concurrent guesses cannot overrun the limit) and forgiven if it
// succeeds or is abandoned before the password was checked.
//
// Invariant: each slice holds at most max times, oldest first, all within
// the window as of the last time its key was touched.
type loginLimiter struct {
	max     int
	window  time.Duration
	maxKeys int

	mu        sync.Mutex
	users     map[string][]time.Time
	addrs     map[string][]time.Time
	nextSweep time.Time
}

func newLoginLimiter(max int, window time.Duration, maxKeys int) *loginLimiter {
	return &loginLimiter{
		max: max, window: window, maxKeys: maxKeys,
		users: map[string][]time.Time{},
		addrs: map[string][]time.Time{},
	}
}

// begin admits an attempt at now, recording it as a failure of both keys,
// or refuses it and says how long until it would be admitted.
func (l *loginLimiter) begin(user, addr string, now time.Time) (retry time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	uf := l.live(l.users, user, now)
	af := l.live(l.addrs, addr, now)
	for _, f := range [][]time.Time{uf, af} {
		if len(f) >= l.max {
			retry = max(retry, f[len(f)-l.max].Add(l.window).Sub(now))
		}
	}
	if retry > 0 {
		return retry, false
	}
	l.users[user] = append(uf, now)
	l.addrs[addr] = append(af, now)
	l.sweep(now)
	return 0, true
}

// succeeded forgives the attempt begun at `at` and clears the user's
// failures; the address keeps its earlier failures, so one valid account
// does not let an address keep guessing others.
func (l *loginLimiter) succeeded(user, addr string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.users, user)
	l.forgive(l.addrs, addr, at)
}

// abandoned forgives the attempt begun at `at` on both keys: it ended
// before the password was checked (a cancelled request, a storage error).
func (l *loginLimiter) abandoned(user, addr string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgive(l.users, user, at)
	l.forgive(l.addrs, addr, at)
}

func (l *loginLimiter) forgive(m map[string][]time.Time, key string, at time.Time) {
	f := m[key]
	if i := slices.IndexFunc(f, at.Equal); i >= 0 {
		f = slices.Delete(f, i, i+1)
	}
	if len(f) == 0 {
		delete(m, key)
	} else {
		m[key] = f
	}
}

// live drops key's failures that left the window and returns the rest.
func (l *loginLimiter) live(m map[string][]time.Time, key string, now time.Time) []time.Time {
	f, ok := m[key]
	if !ok {
		return nil
	}
	i := 0
	for i < len(f) && !f[i].Add(l.window).After(now) {
		i++
	}
	f = f[i:]
	if len(f) == 0 {
		delete(m, key)
		return nil
	}
	m[key] = f
	return f
}

// sweep keeps the maps within maxKeys (see maxLimiterKeys).
func (l *loginLimiter) sweep(now time.Time) {
	for _, m := range []map[string][]time.Time{l.users, l.addrs} {
		if len(m) <= l.maxKeys {
			continue
		}
		if !now.Before(l.nextSweep) {
			for k := range m {
				l.live(m, k, now)
			}
		}
		for k := range m {
			if len(m) <= l.maxKeys {
				break
			}
			delete(m, k)
		}
	}
	if !now.Before(l.nextSweep) {
		l.nextSweep = now.Add(l.window / 8)
	}
}

// clientKey is the rate-limiting key of a remote address ("host:port" or a
// bare host): the IP without port or zone; IPv4-mapped IPv6 as IPv4; other
// IPv6 addresses by their /64, since one client commonly holds a whole /64.
// Anything unparsable is keyed by its first 64 bytes.
func clientKey(remoteAddr string) string {
	host := remoteAddr
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if len(host) > 64 {
			host = host[:64]
		}
		return "?" + host
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// FailureLimiter limits failed attempts of one kind (device
// authentications, or enrollments: each has its own limiter) in a sliding
// window, per identity (device id, enrollment token id) and client
// address together, so that one identity failing again and again (a
// revoked device retrying) blocks only itself, not the other devices
// behind the same address (a site behind NAT). An address is also
// blocked once its failures of all identities reach AddrFactor times the
// limit, which bounds guessing across identities.
//
// Unlike logins, an attempt counts only once it has failed, so many
// concurrent good attempts from one address (a NAT in front of a fleet)
// are never refused; concurrent bad ones may overrun the limit by the
// concurrency, which is acceptable for secrets of 256 bits.
type FailureLimiter struct {
	pairs *loginLimiter // keys: identity and address
	addrs *loginLimiter // keys: address
	now   func() time.Time
}

// AddrFactor is how many times an identity's failure limit one address
// may fail, across identities, before all of it is blocked.
const AddrFactor = 10

// maxIdentityKey bounds the identity part of a limiter key.
const maxIdentityKey = 128

// NewFailureLimiter allows max failures per identity and address, and
// AddrFactor*max per address, within window.
func NewFailureLimiter(max int, window time.Duration) *FailureLimiter {
	return &FailureLimiter{
		pairs: newLoginLimiter(max, window, maxLimiterKeys),
		addrs: newLoginLimiter(AddrFactor*max, window, maxLimiterKeys),
		now:   time.Now,
	}
}

// Limit names what refused an attempt: the identity at its address, or
// the whole address.
type Limit string

// Limits Check reports.
const (
	LimitIdentity Limit = "identity"
	LimitAddress  Limit = "address"
)

func pairKey(identity, remoteAddr string) string {
	if len(identity) > maxIdentityKey {
		identity = identity[:maxIdentityKey]
	}
	return identity + "\x00" + clientKey(remoteAddr)
}

// Check refuses an attempt of identity from remoteAddr with a
// *RateLimitError when the pair, or the address, has failed too often,
// and says which limit refused it.
func (f *FailureLimiter) Check(identity, remoteAddr string) (Limit, error) {
	now := f.now()
	if retry, ok := f.pairs.blocked(pairKey(identity, remoteAddr), now); ok {
		return LimitIdentity, &RateLimitError{RetryAfter: retry}
	}
	if retry, ok := f.addrs.blocked(clientKey(remoteAddr), now); ok {
		return LimitAddress, &RateLimitError{RetryAfter: retry}
	}
	return "", nil
}

// Fail records a failed attempt of identity from remoteAddr.
func (f *FailureLimiter) Fail(identity, remoteAddr string) {
	now := f.now()
	f.pairs.failed(pairKey(identity, remoteAddr), now)
	f.addrs.failed(clientKey(remoteAddr), now)
}

// blocked reports whether key (of l.addrs) reached the limit, and until when.
func (l *loginLimiter) blocked(key string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.live(l.addrs, key, now); len(a) >= l.max {
		return a[len(a)-l.max].Add(l.window).Sub(now), true
	}
	return 0, false
}

// failed records a failure of key (of l.addrs).
func (l *loginLimiter) failed(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs[key] = append(l.live(l.addrs, key, now), now)
	l.sweep(now)
}
