package releases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/objects"
)

// The per-tier cache (docs/software.md): a release received from the
// tier above (its record's Source) names artifacts this node fetches
// from there, once, resumably, and keeps in its object store to serve
// its devices and the tiers below. Fetched objects count against a size
// budget; past it, the least recently used are removed, except those an
// active rollout or a staging needs (Config.Pinned, staged releases) and
// those a release uploaded here names (this node is their origin).
// Everything here is rebuildable: the records say what is wanted, and
// an evicted object is fetched again when asked for.

// ErrNotReady is an artifact this node is still fetching from the tier
// above (or cannot reach): the caller asks again later.
var ErrNotReady = errors.New("artifact not fetched yet")

// Fetcher reads artifact sum from offset from the tier named source:
// the bytes from offset to the end, and the artifact's whole size.
type Fetcher func(ctx context.Context, source, sum string, offset int64) (io.ReadCloser, int64, error)

// Fetch retry bounds.
const (
	fetchAttempts   = 6
	fetchBackoffMin = 500 * time.Millisecond
	fetchBackoffMax = 30 * time.Second
)

// flight is one fetch of an artifact from above, shared by every caller
// that needs it.
type flight struct {
	done chan struct{}
	err  error
}

// cache is the service's fetch and eviction state.
type cache struct {
	mu      sync.Mutex
	flights map[string]*flight
	used    map[string]time.Time // fetched objects' last use
	size    map[string]int64     // fetched objects' sizes
}

// startCache counts the objects a release from above names (the cached
// ones) and when each was last written, as the first least-recently-used
// order.
func (s *Service) startCache(ctx context.Context) error {
	s.cache = cache{flights: map[string]*flight{}, used: map[string]time.Time{}, size: map[string]int64{}}
	origin, fetched, err := s.namedBy()
	if err != nil {
		return err
	}
	return s.cfg.Objects.List(ctx, func(i objects.Info) error {
		if fetched[i.Key] && !origin[i.Key] {
			s.cache.used[i.Key], s.cache.size[i.Key] = i.Modified, i.Size
		}
		return nil
	})
}

// namedBy returns the artifacts named by releases stored here: by one
// uploaded here (origin), by one received from above (fetched), and
// by one staged here (staged).
func (s *Service) namedBy() (origin, fetched map[string]bool, err error) {
	origin, fetched = map[string]bool{}, map[string]bool{}
	err = s.eachRecord(func(key string, rec *record, m *apitypes.Manifest) bool {
		for _, a := range m.Artifacts {
			if rec.Source == "" {
				origin[a.SHA256] = true
			} else {
				fetched[a.SHA256] = true
			}
		}
		return true
	})
	return origin, fetched, err
}

// eachRecord calls fn with every readable release record until it
// returns false.
func (s *Service) eachRecord(fn func(key string, rec *record, m *apitypes.Manifest) bool) error {
	stop := errors.New("stop")
	err := s.cfg.Records.Records(Kind, func(key string, value []byte) error {
		rec, err := decodeRecord(value)
		if err != nil {
			return nil
		}
		m, err := apitypes.ParseManifest(rec.Signed.Manifest)
		if err != nil {
			return nil
		}
		if !fn(key, rec, m) {
			return stop
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

// touch marks a fetched object as used now.
func (s *Service) touch(sum string) {
	s.cache.mu.Lock()
	if _, ok := s.cache.used[sum]; ok {
		s.cache.used[sum] = s.cfg.Now()
	}
	s.cache.mu.Unlock()
}

// ensure makes artifact a, named by a release from source, present in
// the object store: fetched from source unless it is there. Concurrent
// callers share one fetch, which goes on (in the service's context) when
// they give up. It returns when the object is stored, the fetch failed,
// or ctx ended (ErrNotReady then).
func (s *Service) ensure(ctx context.Context, a apitypes.Artifact, source string) error {
	if _, err := s.cfg.Objects.Stat(ctx, a.SHA256); err == nil {
		s.touch(a.SHA256)
		return nil
	} else if !errors.Is(err, objects.ErrNotFound) {
		return err
	}
	if source == "" || s.cfg.Fetch == nil {
		return fmt.Errorf("%w: artifact %s", model.ErrNotFound, a.SHA256)
	}
	f := s.startFlight(a, source)
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("%w: artifact %s is being fetched from %s", ErrNotReady, a.SHA256, source)
	}
}

// resumeStaged starts fetching what staged releases lack (a staging cut
// short by a restart).
func (s *Service) resumeStaged() {
	s.eachRecord(func(key string, rec *record, m *apitypes.Manifest) bool {
		if rec.Staged && rec.Source != "" {
			s.prefetch(m, rec.Source)
		}
		return true
	})
}

// prefetch starts fetching the artifacts of m not stored here.
func (s *Service) prefetch(m *apitypes.Manifest, source string) {
	if source == "" || s.cfg.Fetch == nil {
		return
	}
	for _, a := range m.Artifacts {
		if _, err := s.cfg.Objects.Stat(s.ctx, a.SHA256); errors.Is(err, objects.ErrNotFound) {
			s.startFlight(a, source)
		}
	}
}

func (s *Service) startFlight(a apitypes.Artifact, source string) *flight {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	if f, ok := s.cache.flights[a.SHA256]; ok {
		return f
	}
	f := &flight{done: make(chan struct{})}
	s.cache.flights[a.SHA256] = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f.err = s.fetch(a, source)
		s.cache.mu.Lock()
		delete(s.cache.flights, a.SHA256)
		s.cache.mu.Unlock()
		close(f.done)
	}()
	return f
}

// fetch brings artifact a from source into the object store: appended to
// its partial file from where that ends, retried with backoff, verified
// (a copy whose SHA-256 differs is dropped and fetched again from 0).
func (s *Service) fetch(a apitypes.Artifact, source string) error {
	ctx := s.ctx
	start := s.cfg.Now()
	wait := fetchBackoffMin
	var err error
	for attempt := 1; attempt <= fetchAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, fetchBackoffMax)
		}
		var done bool
		done, err = s.fetchOnce(ctx, a, source)
		if done {
			s.metrics.fetches.WithLabelValues("fetched").Inc()
			s.log.Info("artifact fetched", "sha256", a.SHA256, "size", a.Size, "from", source, "attempts", attempt, "took", s.cfg.Now().Sub(start).Round(time.Millisecond))
			s.evict(a.SHA256)
			return nil
		}
		if errors.Is(err, model.ErrNotFound) || ctx.Err() != nil {
			break // the tier above does not give it: asking again will not help now
		}
		s.log.Warn("artifact fetch interrupted", "sha256", a.SHA256, "from", source, "attempt", attempt, "err", err)
	}
	s.metrics.fetches.WithLabelValues("failed").Inc()
	return fmt.Errorf("%w: fetching artifact %s from %s: %v", ErrNotReady, a.SHA256, source, err)
}

// fetchOnce makes one attempt; done once the object is stored.
func (s *Service) fetchOnce(ctx context.Context, a apitypes.Artifact, source string) (bool, error) {
	if !s.lock(a.SHA256) {
		return false, fmt.Errorf("%w: artifact %s is being uploaded", model.ErrConflict, a.SHA256)
	}
	defer s.unlock(a.SHA256)
	if _, err := s.cfg.Objects.Stat(ctx, a.SHA256); err == nil {
		return true, nil
	}
	var have int64
	if fi, err := os.Stat(s.partPath(a.SHA256)); err == nil {
		have = min(fi.Size(), a.Size)
	}
	if have < a.Size {
		rc, size, err := s.cfg.Fetch(ctx, source, a.SHA256, have)
		if err != nil {
			return false, err
		}
		if size != a.Size {
			rc.Close()
			return false, fmt.Errorf("%w: %s has artifact %s with %d bytes, the manifest says %d", model.ErrNotFound, source, a.SHA256, size, a.Size)
		}
		n, err := s.appendPart(a, rc, s.metrics.fetched)
		rc.Close()
		if err != nil {
			return false, err
		}
		if have+n < a.Size {
			return false, fmt.Errorf("the fetch ended at %d of %d bytes", have+n, a.Size)
		}
	}
	if err := s.store(ctx, a); err != nil {
		if errors.Is(err, model.ErrInvalid) {
			s.metrics.fetches.WithLabelValues("corrupt").Inc()
		}
		return false, err
	}
	s.cache.mu.Lock()
	s.cache.used[a.SHA256], s.cache.size[a.SHA256] = s.cfg.Now(), a.Size
	s.cache.mu.Unlock()
	return true, nil
}

// pinned returns the artifacts the cache keeps whatever its budget: named
// by a release uploaded here or staged here, or needed by an active
// rollout.
func (s *Service) pinned() (map[string]bool, error) {
	pins := map[string]bool{}
	if s.cfg.Pinned != nil {
		for sum := range s.cfg.Pinned() {
			pins[sum] = true
		}
	}
	err := s.eachRecord(func(key string, rec *record, m *apitypes.Manifest) bool {
		if rec.Source == "" || rec.Staged {
			for _, a := range m.Artifacts {
				pins[a.SHA256] = true
			}
		}
		return true
	})
	return pins, err
}

// evict removes the least recently used fetched objects that nothing
// pins until the fetched bytes fit the budget; never keep, the object
// just fetched for a caller (so the cache may exceed its budget by it).
func (s *Service) evict(keep string) {
	if s.cfg.CacheBudget <= 0 {
		return
	}
	pins, err := s.pinned()
	if err != nil {
		s.log.Warn("cache eviction: reading the releases", "err", err)
		return
	}
	type entry struct {
		sum  string
		used time.Time
		size int64
	}
	s.cache.mu.Lock()
	var total int64
	var es []entry
	for sum, at := range s.cache.used {
		total += s.cache.size[sum]
		if !pins[sum] && sum != keep {
			es = append(es, entry{sum, at, s.cache.size[sum]})
		}
	}
	s.cache.mu.Unlock()
	slices.SortFunc(es, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, e := range es {
		if total <= s.cfg.CacheBudget {
			break
		}
		if !s.lock(e.sum) {
			continue
		}
		err := s.cfg.Objects.Delete(s.ctx, e.sum)
		s.unlock(e.sum)
		if err != nil && !errors.Is(err, objects.ErrNotFound) {
			s.log.Warn("cache eviction", "sha256", e.sum, "err", err)
			continue
		}
		s.cache.mu.Lock()
		delete(s.cache.used, e.sum)
		delete(s.cache.size, e.sum)
		s.cache.mu.Unlock()
		total -= e.size
		s.metrics.objects.Dec()
		s.metrics.objectBytes.Sub(float64(e.size))
		s.metrics.evicted.Inc()
		s.log.Info("artifact evicted from the cache", "sha256", e.sum, "size", e.size)
	}
}

// CacheState is this node's cache, as GET /api/v1/software/cache shows
// it for each tier.
type CacheState struct {
	Budget, Used    int64
	Objects, Pinned int
	Fetched, Served int64
	Fetching        int
	OriginObjects   int
	OriginBytes     int64
}

// Cache returns the cache's state now.
func (s *Service) Cache(ctx context.Context) (CacheState, error) {
	st := CacheState{Budget: s.cfg.CacheBudget, Fetched: int64(counterValue(s.metrics.fetched)), Served: int64(counterValue(s.metrics.served))}
	pins, err := s.pinned()
	if err != nil {
		return st, err
	}
	origin, _, err := s.namedBy()
	if err != nil {
		return st, err
	}
	s.cache.mu.Lock()
	for sum, size := range s.cache.size {
		st.Objects++
		st.Used += size
		if pins[sum] {
			st.Pinned++
		}
	}
	st.Fetching = len(s.cache.flights)
	s.cache.mu.Unlock()
	err = s.cfg.Objects.List(ctx, func(i objects.Info) error {
		if origin[i.Key] {
			st.OriginObjects++
			st.OriginBytes += i.Size
		}
		return nil
	})
	return st, err
}
