// Package history keeps the time series of numeric and boolean variables
// of the contexts a node owns (docs/history.md).
//
// Samples come from the model's change log, read asynchronously in
// batches by one goroutine, so device ingest never waits for history.
// Each series has a head chunk in memory (Prometheus's XOR encoding,
// tsdb/chunkenc); heads are flushed as node-local model records when a
// chunk is full, and all of them every FlushInterval together with the
// cursor record: the change-log sequence up to which every sample is in
// a flushed record. After a restart the heads are rebuilt by replaying
// the log from that cursor, so an acknowledged variable write reaches
// history even when the node was killed before a flush. A background
// compaction, bounded per round, turns raw chunks past the raw retention
// into 1-minute aggregates, those past theirs into 1-hour aggregates,
// and deletes what is past the last retention.
//
// All durable state goes through the model, so a Raft cluster
// replicates it and either store (Badger, PostgreSQL) holds it. On a
// cluster the service works on the leader only (Config.Leader); a new
// leader starts again from the cursor record.
//
// Lifecycle: New loads nothing and starts nothing; Start starts the one
// goroutine, Close stops it (after a last flush) and waits for it.
// Closing twice is safe.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/model"
)

// Defaults of Config.
const (
	DefaultFlushInterval   = 10 * time.Minute
	DefaultChunkSamples    = 1024
	DefaultChunkSpan       = 2 * time.Hour
	DefaultRawRetention    = 7 * 24 * time.Hour
	DefaultMinuteRetention = 90 * 24 * time.Hour
	DefaultHourRetention   = 2 * 365 * 24 * time.Hour
	DefaultCompactInterval = time.Minute
	DefaultCompactBudget   = 2000
	DefaultBatch           = 4096
	// maxFlushMutations bounds one flush proposal (the model's MaxBatch
	// is larger).
	maxFlushMutations = 4096
)

// Selector chooses the contexts whose variables keep history.
type Selector struct {
	// Types are context types; empty: every type. Default: device.
	Types []string
	// Labels must all be present with these values.
	Labels map[string]string
}

func (s *Selector) match(c *model.Context) bool {
	if len(s.Types) > 0 {
		ok := false
		for _, t := range s.Types {
			if t == c.Type {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for k, v := range s.Labels {
		if c.Labels[k] != v {
			return false
		}
	}
	return true
}

// Config configures a Service. Zero durations and counts take the
// defaults above.
type Config struct {
	Model    *model.Model // required
	Logger   *slog.Logger
	Select   Selector
	Now      func() time.Time
	Registry prometheus.Registerer
	// Leader reports whether this replica leads its cluster; nil: always
	// (a node that is not a cluster).
	Leader func() bool

	FlushInterval   time.Duration
	ChunkSamples    int
	ChunkSpan       time.Duration
	RawRetention    time.Duration
	MinuteRetention time.Duration
	HourRetention   time.Duration
	CompactInterval time.Duration
	// CompactBudget bounds the records one compaction round reads.
	CompactBudget int
	// Batch is how many log entries are read at once.
	Batch int
	// MaxPoints bounds the points of one answer.
	MaxPoints int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Leader == nil {
		c.Leader = func() bool { return true }
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.FlushInterval, DefaultFlushInterval)
	def(&c.ChunkSpan, DefaultChunkSpan)
	def(&c.RawRetention, DefaultRawRetention)
	def(&c.MinuteRetention, DefaultMinuteRetention)
	def(&c.HourRetention, DefaultHourRetention)
	def(&c.CompactInterval, DefaultCompactInterval)
	if c.ChunkSamples == 0 {
		c.ChunkSamples = DefaultChunkSamples
	}
	if c.CompactBudget == 0 {
		c.CompactBudget = DefaultCompactBudget
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.MaxPoints == 0 {
		c.MaxPoints = DefaultMaxPoints
	}
}

// Validate checks the configuration as New would use it.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Model == nil:
		return errors.New("history: Model is required")
	case c.FlushInterval < 0, c.ChunkSpan < 0, c.CompactInterval < 0:
		return errors.New("history: intervals must not be negative")
	case c.ChunkSamples < 2 || c.ChunkSamples > 8192:
		return errors.New("history: chunk_samples must be in 2..8192")
	case c.RawRetention < 2*c.ChunkSpan:
		return fmt.Errorf("history: raw_retention (%s) must be at least twice the chunk span (%s)", c.RawRetention, c.ChunkSpan)
	case c.MinuteRetention < c.RawRetention+24*time.Hour:
		return errors.New("history: minute_retention must exceed raw_retention by a day at least")
	case c.HourRetention < c.MinuteRetention+30*24*time.Hour:
		return errors.New("history: hour_retention must exceed minute_retention by 30 days at least")
	case c.CompactBudget < 10, c.Batch < 1, c.MaxPoints < 100:
		return errors.New("history: compact_budget >= 10, batch >= 1 and max_points >= 100 are required")
	}
	return nil
}

// Service keeps history. Its methods are safe for concurrent use.
type Service struct {
	cfg     Config
	model   *model.Model
	log     *slog.Logger
	metrics *metrics

	// mu guards the in-memory state below; the loop goroutine is its
	// only writer, readers (Read) take it briefly.
	mu      sync.Mutex
	loaded  bool
	cursor  uint64 // log sequence read up to
	stored  uint64 // the cursor record's value
	bytes   int64  // chunk and aggregate records' size (strata_history_stored_bytes)
	series  map[string]*series
	byName  map[seriesKey]*series // the series sampled since load, by path and name
	dirty   map[string]*series    // series with samples not in a flushed record
	sel     map[model.Path]selection
	byPath  map[model.Path][]*series // every series known, by context
	compact compactState

	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
	started atomic.Bool
	// crash makes Close skip the last flush, as a killed process would
	// (tests).
	crash bool
	// do runs functions on the loop's goroutine (tests: a flush or a
	// compaction round now).
	do chan func(context.Context)
	// initial is where a node's first history start begins: the log's
	// end when New was called, before the node served anything.
	initial uint64
}

// New makes a Service; it reads nothing until Start.
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, model: cfg.Model, log: cfg.Logger.With("component", "history"), metrics: m, initial: cfg.Model.LastSeq(),
		quit: make(chan struct{}), done: make(chan struct{}), do: make(chan func(context.Context)),
	}, nil
}

// Start starts the goroutine that follows the log.
func (s *Service) Start() {
	s.started.Store(true)
	go func() {
		defer close(s.done)
		s.run()
	}()
}

// Close stops the service after a last flush; safe to call twice, and
// without Start.
func (s *Service) Close() {
	s.once.Do(func() {
		close(s.quit)
		if s.started.Load() {
			<-s.done
		}
	})
}

// Cursor returns the log sequence up to which every sample is in a
// flushed record (the cursor record), and whether the service holds one:
// log compaction should keep the entries after it.
func (s *Service) Cursor() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored, s.loaded
}

// Position returns the log sequence history has read up to.
func (s *Service) Position() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// MaxPoints is the bound on the points of one answer.
func (s *Service) MaxPoints() int { return s.cfg.MaxPoints }

func (s *Service) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	compact := time.NewTicker(s.cfg.CompactInterval)
	defer compact.Stop()
	leaderCheck := time.NewTicker(time.Second)
	defer leaderCheck.Stop()
	for {
		if !s.cfg.Leader() {
			s.drop()
			select {
			case <-s.quit:
				return
			case <-leaderCheck.C:
			}
			continue
		}
		if !s.isLoaded() {
			if err := s.load(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("history: cannot load its state; retrying", "err", err)
				select {
				case <-s.quit:
					return
				case <-leaderCheck.C:
				}
				continue
			}
		}
		changed := s.model.Changed()
		if s.Position() < s.model.LastSeq() {
			if err := s.step(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("history: reading the change log; retrying", "err", err)
				select { // a store that fails is not asked again at once
				case <-s.quit:
					s.finalFlush()
					return
				case <-leaderCheck.C:
				}
			}
			select {
			case <-flush.C:
				s.flushAll(ctx)
			case <-compact.C:
				s.compactRound(ctx)
			case fn := <-s.do:
				fn(ctx)
			case <-s.quit:
				s.finalFlush()
				return
			default:
			}
			continue
		}
		select {
		case <-changed:
		case <-flush.C:
			s.flushAll(ctx)
		case <-compact.C:
			s.compactRound(ctx)
		case fn := <-s.do:
			fn(ctx)
		case <-leaderCheck.C:
		case <-s.quit:
			s.finalFlush()
			return
		}
	}
}

func (s *Service) isLoaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

// drop forgets the in-memory state (this replica no longer leads: the
// leader's history continues from the cursor record).
func (s *Service) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded {
		return
	}
	s.loaded, s.series, s.dirty, s.sel, s.byName, s.byPath = false, nil, nil, nil, nil, nil
	s.compact = compactState{}
}

// load reads the cursor and the series index.
func (s *Service) load(ctx context.Context) error {
	var cur cursorRec
	b, err := s.model.Record(KindCursor, cursorKey)
	switch {
	case errors.Is(err, model.ErrNotFound):
		// A node's first history start: it starts where the log ended
		// when the service was made (before the node served: no write
		// acknowledged since is missed); what was written before
		// history existed is not replayed.
		cur.Seq = min(s.initial, s.model.LastSeq())
		if _, err := s.model.Apply(ctx, model.Mutation{Op: model.OpPutRecord,
			Record: &model.Record{Kind: KindCursor, Key: cursorKey, Value: marshal(&cur)}}); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if err := unmarshal(b, &cur); err != nil {
			return err
		}
	}
	ss := map[string]*series{}
	err = s.model.Records(KindSeries, func(key string, v []byte) error {
		var r seriesRec
		if err := unmarshal(v, &r); err != nil {
			s.log.Warn("history: skipping a damaged series record", "series", key, "err", err)
			return nil
		}
		ss[key] = &series{id: key, rec: r}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cursor, s.stored, s.series, s.loaded = cur.Seq, cur.Seq, ss, true
	s.bytes = cur.Bytes
	s.metrics.stored.Set(float64(cur.Bytes))
	s.dirty, s.sel, s.byName = map[string]*series{}, map[model.Path]selection{}, map[seriesKey]*series{}
	s.byPath = map[model.Path][]*series{}
	for _, sr := range ss {
		s.byPath[sr.rec.Path] = append(s.byPath[sr.rec.Path], sr)
	}
	s.mu.Unlock()
	s.metrics.series.Set(float64(len(ss)))
	s.log.Info("history: following the change log", "from", cur.Seq, "series", len(ss))
	return nil
}

// step reads one batch of the log after the cursor and appends its
// samples to the heads.
func (s *Service) step(ctx context.Context) error {
	after := s.Position()
	raws, err := s.model.ReadLogRaw(ctx, after, s.cfg.Batch)
	if errors.Is(err, model.ErrCompacted) {
		return s.gap(ctx, after)
	}
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	oldest := now.Add(-s.cfg.RawRetention + s.cfg.ChunkSpan).UnixMilli()
	var full []*series
	var points, dropped int
	for i := range raws {
		r := &raws[i]
		switch r.Op {
		case model.OpPut:
		case model.OpDelete:
			// The context's history ends here: a context made again at
			// this path (by its tenant or another) starts a new one.
			var e logEntry
			if err := model.Unmarshal(r.Raw, &e); err != nil {
				s.undecodable(r, err)
				continue
			}
			s.forget(r.Path)
			s.endHistory(r.Path, e.Time.UnixMilli())
			continue
		default:
			continue // events and records (history's own among them) carry no variables
		}
		// Only what history reads of the entry is decoded.
		var e logEntry
		if err := model.Unmarshal(r.Raw, &e); err != nil {
			s.undecodable(r, err)
			continue
		}
		m := &e.Mutation
		if m.Type != "" || m.Tenant != "" || len(m.Labels) > 0 || m.Replace {
			s.forget(m.Path)
		}
		if len(m.Variables) == 0 || m.Path.Within(peersRoot) {
			continue
		}
		sel := s.selected(m.Path)
		if !sel.ok {
			continue
		}
		for name, v := range m.Variables {
			f, ok := numeric(v.Value)
			if !ok {
				continue
			}
			t := v.Time
			if t.IsZero() {
				t = e.Time
			}
			ms := t.UnixMilli()
			if ms < oldest {
				dropped++
				continue
			}
			sr := s.seriesFor(m.Path, name)
			if sr.head == nil && len(sr.closed) == 0 && sr.rec.Open != "" {
				s.reopen(sr, ms)
			}
			s.mu.Lock()
			if sr.rec.Tenant != sel.tenant {
				// A context of another tenant than the series' samples
				// so far (given to another tenant, or made again): its
				// history starts now; what was before is never shown.
				if !sr.fresh || sr.head != nil || len(sr.closed) > 0 {
					sr.rec.Since = max(sr.rec.Since, ms)
				}
				sr.rec.Tenant = sel.tenant
			}
			switch sr.append(ms, f, s.cfg.ChunkSamples, s.cfg.ChunkSpan.Milliseconds()) {
			case appended:
				points++
				s.dirty[sr.id] = sr
				if len(sr.closed) > 0 && !sr.queued {
					sr.queued = true
					full = append(full, sr)
				}
			case stale:
				dropped++
			}
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.cursor = raws[len(raws)-1].Seq
	s.mu.Unlock()
	s.metrics.points.Add(float64(points))
	s.metrics.dropped.Add(float64(dropped))
	if len(full) > 0 {
		s.flush(ctx, full, false)
	}
	return nil
}

var peersRoot = model.Path("/peers")

// undecodable skips a log entry history cannot read (the model wrote it,
// so it is a bug or damage): logged and counted, so that one entry does
// not stop history.
func (s *Service) undecodable(r *model.RawEntry, err error) {
	s.metrics.undecodable.Inc()
	s.log.Error("history: skipping a log entry it cannot decode", "seq", r.Seq, "path", r.Path, "err", err)
}

// logEntry is the part of a model.Entry history reads (same encoding;
// the fields left out are skipped by the decoder).
type logEntry struct {
	Time     time.Time `cbor:"2,keyasint"`
	Mutation struct {
		Path      model.Path             `cbor:"2,keyasint"`
		Type      string                 `cbor:"3,keyasint"`
		Tenant    string                 `cbor:"4,keyasint"`
		Labels    map[string]string      `cbor:"5,keyasint"`
		Variables map[string]logVariable `cbor:"6,keyasint"`
		Replace   bool                   `cbor:"12,keyasint"`
	} `cbor:"3,keyasint"`
}

type logVariable struct {
	Value []byte    `cbor:"1,keyasint"`
	Time  time.Time `cbor:"3,keyasint"`
}

// gap moves the cursor past a part of the log that was compacted before
// history read it: the samples it held are lost, which is counted and
// logged, never silent.
func (s *Service) gap(ctx context.Context, after uint64) error {
	last := s.model.LastSeq()
	lo, hi := after, last // ReadLog(lo) is compacted; the first readable cursor is in (lo, hi]
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		_, err := s.model.ReadLog(ctx, mid, 1)
		switch {
		case errors.Is(err, model.ErrCompacted):
			lo = mid
		case err != nil:
			return err
		default:
			hi = mid
		}
	}
	s.metrics.gaps.Inc()
	s.metrics.gapEntries.Add(float64(hi - after))
	s.log.Error("history: the change log was compacted past the history cursor: samples of the entries in between are lost",
		"cursor", after, "resumed_after", hi, "entries_lost", hi-after)
	s.mu.Lock()
	s.cursor = hi
	s.mu.Unlock()
	return nil
}

// forget drops the cached selection of a context whose type, labels or
// existence changed.
func (s *Service) forget(p model.Path) {
	s.mu.Lock()
	delete(s.sel, p)
	s.mu.Unlock()
}

// selection is whether a context keeps history, and its tenant.
type selection struct {
	ok     bool
	tenant string
}

func (s *Service) selected(p model.Path) selection {
	s.mu.Lock()
	sel, known := s.sel[p]
	s.mu.Unlock()
	if known {
		return sel
	}
	c, err := s.model.Get(p)
	if err == nil {
		sel = selection{ok: s.cfg.Select.match(c), tenant: c.Tenant}
	}
	s.mu.Lock()
	if len(s.sel) > 1<<20 {
		clear(s.sel)
	}
	s.sel[p] = sel
	s.mu.Unlock()
	return sel
}

// endHistory hides the samples so far of the series of a context that
// was deleted at t (ms): a context made again at its path has a history
// of its own.
func (s *Service) endHistory(p model.Path, t int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sr := range s.byPath[p] {
		if sr.rec.Since <= t {
			sr.rec.Since = t + 1
			sr.recDirty = true
			s.dirty[sr.id] = sr
		}
	}
}

// seriesFor returns the series of p's variable name, creating it (not yet
// durable: the first flush writes its record).
func (s *Service) seriesFor(p model.Path, name string) *series {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := seriesKey{p, name}
	if sr := s.byName[key]; sr != nil {
		return sr
	}
	id := seriesID(p, name)
	sr := s.series[id]
	if sr == nil {
		sr = &series{id: id, rec: seriesRec{Path: p, Var: name}, fresh: true}
		s.series[id] = sr
		s.byPath[p] = append(s.byPath[p], sr)
		s.metrics.series.Set(float64(len(s.series)))
	}
	s.byName[key] = sr
	return sr
}

// seriesKey names a series by what the log says, so that a sample finds
// its series without hashing.
type seriesKey struct {
	path model.Path
	name string
}
