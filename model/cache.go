package model

import "sync"

// cache holds recently written or read contexts so that the state machine
// and readers skip the store for hot contexts. Only the applier side puts
// committed state into it, so a cached context always equals the stored
// one. Entries are immutable: callers clone before changing them.
//
// Eviction is random (Go map iteration order), which is cheap and good
// enough for a working set of hot devices.
type cache struct {
	mu  sync.RWMutex
	m   map[Path]*Context
	max int
	gen uint64 // bumped by every commit
	// ext is bumped by every batch the applier did not build (applied by
	// replication) and by reset.
	ext uint64
}

func newCache(max int) *cache { return &cache{m: make(map[Path]*Context, max), max: max} }

func (c *cache) get(p Path) (*Context, bool) {
	if c.max == 0 {
		return nil, false
	}
	c.mu.RLock()
	x, ok := c.m[p]
	c.mu.RUnlock()
	return x, ok
}

// generation is read before a store read whose result may fill the cache.
func (c *cache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// external is read by the applier before a batch whose store reads may
// fill the cache (fillApplier).
func (c *cache) external() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ext
}

// fillApplier adds a context the applier read from the store. The
// applier reads paths that no batch of its own in flight touches, so its
// own commits cannot make the read stale; a batch applied by replication
// can, so the fill is dropped when one was applied since ext was read.
func (c *cache) fillApplier(x *Context, ext uint64) {
	c.fill(x, ^uint64(0), ext)
}

// fill adds a context read from the store, provided no commit happened
// since gen was read (the read might then be stale); ^uint64(0) skips
// that check, and ext, unless ^uint64(0), must equal c.ext.
func (c *cache) fill(x *Context, gen, ext uint64) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	if (gen == ^uint64(0) || gen == c.gen) && (ext == ^uint64(0) || ext == c.ext) {
		if _, ok := c.m[x.Path]; !ok {
			c.evict(1)
			c.m[x.Path] = x
		}
	}
	c.mu.Unlock()
}

// commit records a batch's effect on contexts; foreign marks a batch
// the applier did not build.
func (c *cache) commit(b *Batch, foreign bool) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	c.gen++
	if foreign {
		c.ext++
	}
	for _, p := range b.Deleted {
		delete(c.m, p)
	}
	c.evict(len(b.Contexts))
	for _, w := range b.Contexts {
		c.m[w.Context.Path] = w.Context
	}
	c.mu.Unlock()
}

func (c *cache) evict(room int) {
	for over := len(c.m) + room - c.max; over > 0; over-- {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
}

// reset empties the cache (the store was replaced).
func (c *cache) reset() {
	c.mu.Lock()
	clear(c.m)
	c.gen++
	c.ext++
	c.mu.Unlock()
}
