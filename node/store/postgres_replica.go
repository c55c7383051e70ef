package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Read replicas. The Postgres store keeps one pool per replica and checks
// each from one goroutine (health, owned by the store: Close stops it and
// waits). A replica serves reads while it answers, is in recovery and lags
// the primary by at most MaxReplicaLag; it leaves rotation when it stops
// doing so and comes back by itself once it does again. With no replica in
// rotation, reads go to the primary.
//
// Only reads that tolerate staleness go to replicas: Children and Events
// (tree browsing, history) and whatever takes ReadPool. Context, LastSeq,
// ReadLog, Record(s) and Snapshot feed the model's state machine, the
// change log and federation, and stay on the primary.
//
// Hung replicas: each read on a replica runs under ReplicaReadTimeout. A
// read that does not answer in time is abandoned (its connection is
// closed: pgx interrupts a query whose context ends by setting a deadline
// on the socket) and runs again on the primary, and the replica leaves
// rotation until its next successful check, so a replica that accepts
// connections but never answers (stopped, swapping, behind a blackholed
// link) costs one bounded delay, not a hung read.
//
// Read-your-writes: after each Commit the store records the primary's WAL
// position (commitLSN). A replica serves a read only once it has replayed
// up to that position, so whatever this store committed is visible there;
// otherwise the read goes to the primary.

const (
	defaultMaxReplicaLag = 5 * time.Second
	defaultReplicaCheck  = time.Second
	defaultReplicaRead   = 2 * time.Second
)

// ReplicaStatus describes one read replica, for metrics and health pages.
type ReplicaStatus struct {
	Name      string        // host:port (never the DSN: it may hold a password)
	Healthy   bool          // in rotation
	Lag       time.Duration // behind the primary at the last check, to one check interval
	LastError string        // why it is out of rotation, if it is
	Reads     uint64        // reads it has served
}

type replica struct {
	name     string
	pool     *pgxpool.Pool
	healthy  atomic.Bool
	replayed atomic.Uint64 // highest replay LSN seen
	reads    atomic.Uint64

	mu      sync.Mutex
	lag     time.Duration
	lastErr string
}

// observe raises the known replay position to lsn.
func (r *replica) observe(lsn uint64) { raise(&r.replayed, lsn) }

// lsnSample is the primary's WAL position at a time.
type lsnSample struct {
	at  time.Time
	lsn uint64
}

// replicas is the read side of the Postgres store.
type replicas struct {
	list      []*replica
	maxLag    time.Duration
	interval  time.Duration
	readTime  time.Duration // bound of one read on a replica
	log       *slog.Logger
	next      atomic.Uint32 // round robin
	commitLSN atomic.Uint64 // primary WAL position after the last Commit
	// Commits whose position could not be read (unknown) and how many of
	// them a later sample of the primary's position covers (covered):
	// while unknown > covered, reads go to the primary.
	unknown, covered atomic.Uint64
	wg               sync.WaitGroup

	// samples of the primary's position, oldest first, spanning a little
	// more than maxLag; only the health goroutine touches them.
	samples []lsnSample
}

// lsnExpr turns a pg_lsn into a bigint (bytes since 0/0).
const lsnExpr = `(%s - '0/0'::pg_lsn)::bigint`

var (
	sqlPrimaryLSN = `SELECT ` + fmt.Sprintf(lsnExpr, `pg_current_wal_lsn()`)
	sqlReplayLSN  = `SELECT coalesce(` + fmt.Sprintf(lsnExpr, `pg_last_wal_replay_lsn()`) + `, 0)`
	sqlReplica    = `SELECT pg_is_in_recovery(), coalesce(` + fmt.Sprintf(lsnExpr, `pg_last_wal_replay_lsn()`) + `, 0)`
)

// openReplicas makes a pool per DSN; pools connect lazily, so a replica
// that is down at start only stays out of rotation.
func openReplicas(dsns []string, opts PostgresOptions, log *slog.Logger) (*replicas, error) {
	rs := &replicas{maxLag: opts.MaxReplicaLag, interval: opts.ReplicaCheckInterval, readTime: opts.ReplicaReadTimeout, log: log}
	if rs.maxLag <= 0 {
		rs.maxLag = defaultMaxReplicaLag
	}
	if rs.interval <= 0 {
		rs.interval = defaultReplicaCheck
	}
	if rs.readTime <= 0 {
		rs.readTime = defaultReplicaRead
	}
	for i, dsn := range dsns {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			rs.close()
			return nil, fmt.Errorf("store: postgres read dsn %d: %w", i+1, err)
		}
		if opts.MaxConns > 0 {
			cfg.MaxConns = opts.MaxConns
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			rs.close()
			return nil, fmt.Errorf("store: postgres read dsn %d: %w", i+1, err)
		}
		cc := cfg.ConnConfig
		r := &replica{name: cc.Host + ":" + strconv.Itoa(int(cc.Port)), pool: pool}
		r.lastErr = "not checked yet"
		rs.list = append(rs.list, r)
	}
	return rs, nil
}

func (rs *replicas) close() {
	for _, r := range rs.list {
		r.pool.Close()
	}
}

// run checks the replicas every interval until ctx ends.
func (rs *replicas) run(ctx context.Context, primary *pgxpool.Pool) {
	defer rs.wg.Done()
	t := time.NewTicker(rs.interval)
	defer t.Stop()
	for {
		rs.check(ctx, primary)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check samples the primary's WAL position, then each replica's replay
// position, and sets each replica's lag and place in rotation (see lag).
func (rs *replicas) check(ctx context.Context, primary *pgxpool.Pool) {
	timeout := max(rs.interval, time.Second)
	now := time.Now()
	unknown := rs.unknown.Load()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	var lsn int64
	err := primary.QueryRow(pctx, sqlPrimaryLSN).Scan(&lsn)
	cancel()
	if err == nil {
		rs.samples = append(rs.samples, lsnSample{now, uint64(lsn)})
		if unknown > rs.covered.Load() {
			rs.committed(uint64(lsn)) // covers the commits of unknown position
			raise(&rs.covered, unknown)
		}
	} else if ctx.Err() == nil {
		rs.log.Warn("replica check: primary position", "err", err)
	}
	// Keep one sample older than the bound: a replica behind it is
	// beyond the bound whatever its exact lag.
	for len(rs.samples) > 1 && now.Sub(rs.samples[1].at) > rs.maxLag {
		rs.samples = rs.samples[1:]
	}
	var wg sync.WaitGroup
	for _, r := range rs.list {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var standby bool
			var replay int64
			err := r.pool.QueryRow(rctx, sqlReplica).Scan(&standby, &replay)
			if ctx.Err() != nil {
				return // closing
			}
			if err == nil && !standby {
				err = errors.New("not in recovery (promoted, or not a replica)")
			}
			if err != nil {
				rs.setDown(r, err)
				return
			}
			r.observe(uint64(replay))
			rs.setLag(r, rs.lag(time.Now(), uint64(replay)))
		})
	}
	wg.Wait()
}

// lag is how long ago the primary was at the oldest sampled position the
// replica has not replayed (the replica lacks what the primary had then);
// with no sample at or below replay, more than the span of the samples.
func (rs *replicas) lag(now time.Time, replay uint64) time.Duration {
	if len(rs.samples) == 0 {
		return 0 // primary unknown yet: the replica answered, trust it
	}
	for i := len(rs.samples) - 1; i >= 0; i-- {
		if rs.samples[i].lsn <= replay {
			if i == len(rs.samples)-1 {
				return 0 // caught up with the latest sample
			}
			return now.Sub(rs.samples[i+1].at)
		}
	}
	return now.Sub(rs.samples[0].at) + rs.interval
}

func (rs *replicas) setLag(r *replica, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lag = lag
	if lag > rs.maxLag {
		r.lastErr = fmt.Sprintf("lag %v beyond %v", lag.Round(time.Millisecond), rs.maxLag)
		if r.healthy.Swap(false) {
			rs.log.Warn("replica out of rotation", "replica", r.name, "lag", lag)
		}
		return
	}
	r.lastErr = ""
	if !r.healthy.Swap(true) {
		rs.log.Info("replica in rotation", "replica", r.name, "lag", lag)
	}
}

func (rs *replicas) setDown(r *replica, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err.Error()
	if r.healthy.Swap(false) {
		rs.log.Warn("replica out of rotation", "replica", r.name, "err", err)
	}
}

// committed raises the position reads must see to lsn.
func (rs *replicas) committed(lsn uint64) { raise(&rs.commitLSN, lsn) }

// raise sets v to x if x is higher.
func raise(v *atomic.Uint64, x uint64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// pick returns a replica in rotation that has replayed this store's last
// commit, or nil. It first trusts the positions seen so far; failing that,
// it asks the replicas in rotation where they are now (a write is often
// replayed within milliseconds, long before the next check).
func (rs *replicas) pick(ctx context.Context) *replica {
	n := len(rs.list)
	if n == 0 || rs.unknown.Load() > rs.covered.Load() {
		return nil
	}
	need := rs.commitLSN.Load()
	start := int(rs.next.Add(1))
	for i := range n {
		r := rs.list[(start+i)%n]
		if r.healthy.Load() && r.replayed.Load() >= need {
			return r
		}
	}
	for i := range n {
		r := rs.list[(start+i)%n]
		if !r.healthy.Load() {
			continue
		}
		var replay int64
		qctx, cancel := context.WithTimeout(ctx, rs.readTime)
		err := r.pool.QueryRow(qctx, sqlReplayLSN).Scan(&replay)
		timedOut := errors.Is(qctx.Err(), context.DeadlineExceeded)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				if timedOut {
					err = fmt.Errorf("replay position: timed out after %v: %w", rs.readTime, err)
				}
				rs.setDown(r, err)
			}
			continue
		}
		r.observe(uint64(replay))
		if uint64(replay) >= need {
			return r
		}
	}
	return nil
}

func (rs *replicas) status() []ReplicaStatus {
	out := make([]ReplicaStatus, len(rs.list))
	for i, r := range rs.list {
		r.mu.Lock()
		out[i] = ReplicaStatus{Name: r.name, Healthy: r.healthy.Load(), Lag: r.lag, LastError: r.lastErr, Reads: r.reads.Load()}
		r.mu.Unlock()
	}
	return out
}

// ReplicaStatus reports each read replica, in read_dsns order.
func (s *Postgres) ReplicaStatus() []ReplicaStatus { return s.replicas.status() }

// ReadPool returns the pool for a read that tolerates staleness (reports,
// search): a replica in rotation that has replayed this store's last
// commit, else the primary. name is the replica's host:port, or "primary".
// Reads through it are not bounded by ReplicaReadTimeout nor retried on
// the primary: prefer ReadStale.
func (s *Postgres) ReadPool() (pool *pgxpool.Pool, name string) {
	if r := s.replicas.pick(s.ctx); r != nil {
		return r.pool, r.name
	}
	return s.pool, "primary"
}

// ReadStale runs a read that tolerates staleness on a replica if one
// fits, else on the primary; fn must use the context it is given. On a
// replica, fn runs under ReplicaReadTimeout; should it fail there (time
// out included), the replica leaves rotation (the next check may bring it
// back) and fn runs again on the primary, bounded only by ctx: fn must
// therefore start its result afresh. Closing the store cancels ctx.
func (s *Postgres) ReadStale(ctx context.Context, fn func(ctx context.Context, pool *pgxpool.Pool) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	if r := s.replicas.pick(ctx); r != nil {
		rctx, rcancel := context.WithTimeout(ctx, s.replicas.readTime)
		err := fn(rctx, r.pool)
		timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded)
		rcancel()
		if err == nil {
			r.reads.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return err // the caller gave up, or the store is closing
		}
		if timedOut {
			err = fmt.Errorf("read timed out after %v: %w", s.replicas.readTime, err)
		}
		s.replicas.setDown(r, err)
	}
	return fn(ctx, s.pool)
}

// readStale is ReadStale bounded by the store's life only.
func (s *Postgres) readStale(fn func(ctx context.Context, pool *pgxpool.Pool) error) error {
	return s.ReadStale(s.ctx, fn)
}

// recordCommit notes the primary's WAL position after a commit, which
// covers the commit's record, for read-your-writes on replicas. Should
// that fail, the commit stands, and reads stay on the primary until the
// health check's next sample of the position covers it. Without replicas
// it costs nothing.
func (s *Postgres) recordCommit() {
	rs := s.replicas
	if len(rs.list) == 0 {
		return
	}
	var lsn int64
	if err := s.pool.QueryRow(s.ctx, sqlPrimaryLSN).Scan(&lsn); err != nil {
		rs.unknown.Add(1)
		s.log.Warn("reads stay on the primary: position after commit unknown", "err", err)
		return
	}
	rs.committed(uint64(lsn))
}
