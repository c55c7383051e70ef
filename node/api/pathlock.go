package api

import (
	"sync"

	"github.com/strata-dm/strata/model"
)

// pathLocks serialises the API's writes per path, so that a write's checks
// (does the context exist, whose is it, whose are its ancestors) and the
// write itself are one step with respect to other API writes.
//
// A write of p holds p exclusively and each ancestor of p shared: writes to
// siblings run concurrently, while a write of /a waits for the writes below
// it and the other way round. Locks are always taken from the root down,
// one per depth, so two writers can never wait for each other in a cycle.
//
// Entries live only while someone holds or waits for them.
type pathLocks struct {
	mu sync.Mutex
	m  map[model.Path]*pathLock
}

type pathLock struct {
	mu   sync.RWMutex
	refs int // holders and waiters; guarded by pathLocks.mu
}

// lock locks p for writing and its ancestors for reading, and returns the
// function that releases them all.
func (l *pathLocks) lock(p model.Path) (unlock func()) {
	chain := append(p.Ancestors(), p)
	held := make([]*pathLock, len(chain))
	l.mu.Lock()
	for i, q := range chain {
		pl := l.m[q]
		if pl == nil {
			pl = &pathLock{}
			l.m[q] = pl
		}
		pl.refs++
		held[i] = pl
	}
	l.mu.Unlock()
	last := len(held) - 1
	for _, pl := range held[:last] {
		pl.mu.RLock()
	}
	held[last].mu.Lock()
	return func() {
		held[last].mu.Unlock()
		for _, pl := range held[:last] {
			pl.mu.RUnlock()
		}
		l.mu.Lock()
		for i, q := range chain {
			held[i].refs--
			if held[i].refs == 0 {
				delete(l.m, q)
			}
		}
		l.mu.Unlock()
	}
}
