package model

import "sync"

// recCache holds the latest value of recently written records of the
// kinds that have an updater (RegisterUpdater), so that the state
// machine decides an update without reading the store: a job's record
// is usually changed shortly after it was written. It is filled only by
// publish, with every batch in log order (own or applied by replication),
// so a cached value is the record as of the last published batch; a
// record not cached is read from the store. Eviction is random (map
// order); large values are not kept.
type recCache struct {
	mu   sync.RWMutex
	vals map[[2]string][]byte
	max  int
}

const (
	recCacheSize     = 8192
	recCacheMaxValue = 64 << 10
)

func newRecCache(max int) *recCache {
	return &recCache{vals: make(map[[2]string][]byte), max: max}
}

func (c *recCache) get(k [2]string) ([]byte, bool) {
	c.mu.RLock()
	v, ok := c.vals[k]
	c.mu.RUnlock()
	return v, ok
}

// commit applies a published batch's records of the kinds in kinds.
func (c *recCache) commit(b *Batch, kinds map[string]RecordUpdater) {
	if len(kinds) == 0 || (len(b.Records) == 0 && len(b.Dropped) == 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range b.Dropped {
		delete(c.vals, [2]string{r.Kind, r.Key})
	}
	for _, r := range b.Records {
		if kinds[r.Kind] == nil {
			continue
		}
		k := [2]string{r.Kind, r.Key}
		if len(r.Value) > recCacheMaxValue {
			delete(c.vals, k)
			continue
		}
		if _, ok := c.vals[k]; !ok && len(c.vals) >= c.max {
			for old := range c.vals { // evict one at random
				delete(c.vals, old)
				break
			}
		}
		c.vals[k] = r.Value
	}
}

// reset forgets everything (the store was replaced).
func (c *recCache) reset() {
	c.mu.Lock()
	c.vals = make(map[[2]string][]byte)
	c.mu.Unlock()
}
