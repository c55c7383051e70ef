package auth

import (
	"context"
	"sync"
	"time"
)

// maxCachedTokens bounds the token cache. Only verified tokens enter it, so
// its size follows legitimate use; past the bound an arbitrary entry goes.
const maxCachedTokens = 10000

// tokenCache remembers verified tokens so Authenticate, on every request,
// needs neither record reads nor decoding.
//
// Correctness rests on one rule: every write that can make a token invalid
// (revoke, user update or delete) calls forgetToken or forgetUser after the
// write is durable. Each forget bumps gen, and an Authenticate that read the
// records before the bump does not cache what it read (put checks gen), so a
// stale principal never re-enters the cache after a change.
type tokenCache struct {
	ttl time.Duration
	max int

	mu  sync.Mutex
	gen uint64
	m   map[string]*cachedToken // by token id
	// changed is done at the next forget; it is replaced by a fresh one
	// then, so that watchers (open change streams) learn of every
	// revocation at once instead of polling.
	changed       context.Context
	cancelChanged context.CancelFunc
}

// cachedToken is one verified token. It is never modified once cached.
type cachedToken struct {
	hash      string    // as stored: hex SHA-256 of the token string
	expires   time.Time // zero: never
	verified  time.Time // when read from the records
	principal *Principal
}

func newTokenCache(ttl time.Duration, max int) *tokenCache {
	c := &tokenCache{ttl: ttl, max: max, m: make(map[string]*cachedToken)}
	c.changed, c.cancelChanged = context.WithCancel(context.Background())
	return c
}

// bump starts a new generation and wakes the watchers of the old one.
// c.mu is held.
func (c *tokenCache) bump() {
	c.gen++
	c.cancelChanged()
	c.changed, c.cancelChanged = context.WithCancel(context.Background())
}

// watch returns a context that is done at the next forget.
func (c *tokenCache) watch() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// get returns the entry for id if it was verified less than ttl before now,
// and the generation to pass to put after a miss.
func (c *tokenCache) get(id string, now time.Time) (*cachedToken, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[id]
	if e != nil {
		if age := now.Sub(e.verified); age < 0 || age >= c.ttl {
			delete(c.m, id)
			e = nil
		}
	}
	return e, c.gen
}

// put caches e unless something was forgotten since get returned gen.
func (c *tokenCache) put(id string, e *cachedToken, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.ttl == 0 {
		return
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = e
}

func (c *tokenCache) forgetToken(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump()
	delete(c.m, id)
}

func (c *tokenCache) forgetUser(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump()
	for id, e := range c.m {
		if e.principal.User == name {
			delete(c.m, id)
		}
	}
}

// forgetAll drops every entry.
func (c *tokenCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump()
	clear(c.m)
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
