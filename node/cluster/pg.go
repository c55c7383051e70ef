package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// The PostgreSQL mode (docs/cluster.md, "PostgreSQL mode"). The replicas
// share one PostgreSQL primary. Raft only elects the writer and holds the
// membership: its log carries no batches. The fence in the database
// (store.Postgres.Claim, migration 0005) makes the elected writer the
// only one whose commits go through.
//
//   - Every replica opens the database twice: a reader, read-only at the
//     server, whose reads that tolerate staleness go to the read
//     replicas (store.read_dsns); and a writer, fenced, which migrates
//     the schema at open and commits nothing until it claimed the fence.
//   - A replica elected leader at term T claims the fence with T (after
//     the barrier that ends its predecessor's entries, before it serves a
//     write), then publishes to its model every entry committed up to the
//     claim (the deposed writer's last commits included: none can follow
//     the claim), and only then is ready: its model builds on exactly
//     the database's log.
//   - The leader commits each batch straight to the primary, fenced by T
//     in the batch's transaction, and publishes it to its model once it
//     is committed. A commit refused with store.ErrFenced (a replica
//     elected later claimed the fence) wrote nothing; the replica stops
//     writing at once, reports that it does not lead, and hands Raft
//     leadership over.
//   - Every replica follows the change log: woken by the writer's
//     notifications (store.WaitLog), and polling every FollowPoll
//     besides, it reads the entries after the last it published and
//     publishes them to its model (model.Replica), in log order, exactly
//     as the embedded mode's followers publish what they apply; so its
//     cache, change streams, job followers and device sessions follow the
//     writer's commits.
//
// pgMode's publishing is serialised by pubMu: the leader's commits and
// the follower's catch-up publish one batch at a time, in sequence order,
// and never the same entry twice.

// PostgresMode configures a cluster in PostgreSQL mode.
type PostgresMode struct {
	// Store is the shared database: DSN its primary, ReadDSNs its
	// streaming replicas, and their tuning. ReadOnly and Fenced are set
	// here (the reader and the writer).
	Store store.PostgresOptions
	// FollowPoll is how often a replica looks at the change log when no
	// notification woke it (default 1 s): the bound on how far behind a
	// follower falls should notifications be lost.
	FollowPoll time.Duration
	// WriterTimeout is how long a leader goes on leading while its
	// writer cannot reach the primary (default 5 s): then it hands
	// leadership over, so that a replica that reaches it may write.
	WriterTimeout time.Duration

	// writerDSN, when set, is the writer's DSN (tests put a fault proxy
	// in front of one replica's writes).
	writerDSN string
}

const (
	defaultFollowPoll    = time.Second
	defaultWriterTimeout = 5 * time.Second
	// pgOpenTimeout bounds connecting to the database and migrating it.
	pgOpenTimeout = time.Minute
	// followBatch is how many entries a catch-up reads at a time (one
	// batch published per read).
	followBatch = 1000
	// claimTimeout bounds one claim of the fence.
	claimTimeout = 30 * time.Second
	// pgRetryMax bounds the backoff of a leader's claim and of a
	// follower's catch-up while PostgreSQL does not answer.
	pgRetryMax = 2 * time.Second
)

// pgMode is a replica's side of the PostgreSQL mode.
type pgMode struct {
	c      *Cluster
	reader *store.Postgres // read-only at the server: the model's reads
	writer *store.Postgres // fenced: claims, commits, retention
	st     *PGStore
	poll   time.Duration
	// writerTimeout: see PostgresMode.WriterTimeout.
	writerTimeout time.Duration

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	pubMu     sync.Mutex
	replica   model.Replica // the model's side; guarded by pubMu
	published atomic.Uint64 // the last sequence number published; written under pubMu
	seen      atomic.Uint64 // the highest the log was seen at (lag gauge)
	stepping  atomic.Bool   // a leadership transfer after ErrFenced is running
	// committing counts the writer's commits under way (tests wait for
	// one to be in flight).
	committing atomic.Int32

	claims        *prometheus.CounterVec
	fencedCommits prometheus.Counter
	cs            []prometheus.Collector
}

// openPostgres opens the PostgreSQL mode's stores, then what Raft keeps
// on disk (its log and snapshots hold only the membership) and the
// replicas' channel.
func (c *Cluster) openPostgres() error {
	cfg := c.cfg.Postgres
	ctx, cancel := context.WithTimeout(context.Background(), pgOpenTimeout)
	defer cancel()
	p := &pgMode{c: c, poll: cfg.FollowPoll}
	if p.poll <= 0 {
		p.poll = defaultFollowPoll
	}
	p.writerTimeout = cfg.WriterTimeout
	if p.writerTimeout <= 0 {
		p.writerTimeout = defaultWriterTimeout
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	c.pg = p
	p.metrics(c.cfg.Registerer)
	wo := cfg.Store
	wo.Logger, wo.Fenced, wo.ReadOnly, wo.ReadDSNs = c.log.With("store", "writer"), true, false, nil
	if cfg.writerDSN != "" {
		wo.DSN = cfg.writerDSN
	}
	var err error
	if p.writer, err = store.OpenPostgres(ctx, wo); err != nil {
		return fmt.Errorf("cluster: the writer's store: %w", err)
	}
	ro := cfg.Store
	ro.Logger, ro.Fenced, ro.ReadOnly = c.log.With("store", "reader"), false, true
	if p.reader, err = store.OpenPostgres(ctx, ro); err != nil {
		return fmt.Errorf("cluster: the reader's store: %w", err)
	}
	last, err := p.reader.LastSeq()
	if err != nil {
		return err
	}
	p.published.Store(last)
	p.seen.Store(last)
	p.st = &PGStore{p: p}
	if c.logs, err = openRaftLog(filepath.Join(c.cfg.Dir, "raft"), c.cfg.RaftLog, c.log); err != nil {
		return err
	}
	if c.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(c.cfg.Dir, "raft"), 2, c.hclog()); err != nil {
		return fmt.Errorf("cluster: open the snapshot store: %w", err)
	}
	return c.listen()
}

// PostgresStore is the model.Store of a replica in PostgreSQL mode; nil
// in the embedded mode (use Store).
func (c *Cluster) PostgresStore() *PGStore {
	if c.pg == nil {
		return nil
	}
	return c.pg.st
}

// ModelStore is the store to build the replica's model on, in either
// mode: PostgresStore in PostgreSQL mode, else Store.
func (c *Cluster) ModelStore() model.Replicated {
	if c.pg != nil {
		return c.pg.st
	}
	return c.store
}

// fsm is the state machine Raft runs: the embedded mode's, or the
// PostgreSQL mode's, which holds nothing.
func (c *Cluster) raftFSM() raft.FSM {
	if c.pg != nil {
		return c.pg
	}
	return c.fsm
}

// startPostgres starts the replica's follower of the change log.
func (c *Cluster) startPostgres() {
	if c.pg == nil {
		return
	}
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		c.pg.follow()
	}()
	go func() {
		defer c.wg.Done()
		c.pg.watchWriter()
	}()
	go func() { // Close waits for the follower before the stores close
		defer c.wg.Done()
		select {
		case <-c.quit:
		case <-c.pg.ctx.Done():
		}
		c.pg.cancel()
	}()
}

// takeOver makes this replica, just elected and past the barrier, the
// writer: in PostgreSQL mode it claims the fence with its term and
// catches its model up with the log; nothing to do in the embedded mode.
// An error means it must not serve writes in this term.
func (c *Cluster) takeOver(r *raft.Raft) error {
	if c.pg == nil {
		return nil
	}
	return c.pg.lead(r)
}

var errLeadershipLost = errors.New("cluster: leadership lost while taking over")

// lead claims the fence for the current term, retrying (with backoff)
// while PostgreSQL does not answer and this replica still leads in that
// term, then publishes every entry committed up to the claim. A replica
// whose writer has not reached PostgreSQL for WriterTimeout hands
// leadership over: another may reach it.
func (p *pgMode) lead(r *raft.Raft) error {
	c := p.c
	term := r.CurrentTerm()
	start := time.Now()
	still := func() bool { return r.State() == raft.Leader && r.CurrentTerm() == term }
	wait := 50 * time.Millisecond
	backoff := func() bool {
		select {
		case <-c.quit:
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, pgRetryMax)
		return true
	}
	for {
		if !still() {
			return errLeadershipLost
		}
		// A silent link would hold a claim for long: ping first.
		err := p.pingWriter()
		if err == nil {
			ctx, cancel := context.WithTimeout(p.ctx, claimTimeout)
			err = p.writer.Claim(ctx, term, c.cfg.ID)
			cancel()
		}
		switch {
		case err == nil:
			p.claims.WithLabelValues("claimed").Inc()
		case errors.Is(err, store.ErrFenced):
			// A newer term holds the fence: this replica cannot write
			// in this term; another must lead.
			p.claims.WithLabelValues("fenced").Inc()
			c.log.Error("cannot claim the database: a newer term holds its fence", "term", term, "err", err)
			p.stepDown(r)
			return err
		default:
			p.claims.WithLabelValues("error").Inc()
			c.log.Warn("claiming the database's fence", "term", term, "err", err)
			if time.Since(start) >= p.writerTimeout {
				c.log.Error("the writer has not reached PostgreSQL for the writer timeout: handing leadership over",
					"term", term, "timeout", p.writerTimeout)
				p.stepDown(r)
				return err
			}
			if !backoff() {
				return errLeadershipLost
			}
			continue
		}
		break
	}
	for {
		if !still() {
			return errLeadershipLost
		}
		p.pubMu.Lock()
		err := p.catchUpLocked()
		p.pubMu.Unlock()
		if err == nil {
			c.log.Info("claimed the database", "term", term, "last_seq", p.published.Load())
			return nil
		}
		c.log.Warn("catching up with the log after the claim", "term", term, "err", err)
		if !backoff() {
			return errLeadershipLost
		}
	}
}

// fenced records that the writer's commit was refused by the fence: this
// replica was deposed. It stops writing at once and hands Raft
// leadership over, should Raft still think it leads.
func (p *pgMode) fenced(err error) {
	p.fencedCommits.Inc()
	c := p.c
	c.ready.Store(false)
	c.log.Warn("a commit was refused by the database's fence: another replica writes; this one stops", "err", err)
	if r := c.raft(); r != nil {
		p.stepDown(r)
	}
}

// stepDown hands leadership over, in the background (once at a time).
func (p *pgMode) stepDown(r *raft.Raft) {
	c := p.c
	if r.State() != raft.Leader || !p.stepping.CompareAndSwap(false, true) {
		return
	}
	select {
	case <-c.quit:
		p.stepping.Store(false)
		return
	default:
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer p.stepping.Store(false)
		if err := c.await(r.LeadershipTransfer()); err != nil {
			c.log.Warn("handing leadership over after being fenced", "err", err)
		}
	}()
}

// follow publishes the writer's commits to this replica's model until
// Close: on each notification that the log grew past what it published,
// and every poll interval besides while it does not lead.
func (p *pgMode) follow() {
	failing := false
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(p.ctx, p.poll)
		seen, err := p.reader.WaitLog(ctx, p.published.Load())
		cancel()
		if p.ctx.Err() != nil || errors.Is(err, model.ErrClosed) {
			return
		}
		if err == nil {
			raise(&p.seen, seen)
		}
		// The leader publishes its own commits: it reads the log only
		// when it grew past them (a commit whose outcome it did not
		// learn).
		if err != nil && p.c.leaderReady() || err == nil && seen <= p.published.Load() {
			continue
		}
		p.pubMu.Lock()
		if err == nil && seen <= p.published.Load() {
			p.pubMu.Unlock()
			continue
		}
		err = p.catchUpLocked()
		p.pubMu.Unlock()
		switch {
		case err != nil:
			if !failing {
				p.c.log.Warn("following the change log", "err", err)
			}
			failing = true
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, pgRetryMax)
		case failing:
			p.c.log.Info("following the change log again", "last_seq", p.published.Load())
			failing, wait = false, 50*time.Millisecond
		}
	}
}

// watchWriter checks, every poll interval while this replica leads, that
// its writer reaches the primary (on its own goroutine: a commit hung on
// a silent link blocks neither this nor the follower).
func (p *pgMode) watchWriter() {
	t := time.NewTicker(p.poll)
	defer t.Stop()
	var down time.Time
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		if p.c.leaderReady() {
			down = p.checkWriter(down)
		} else {
			down = time.Time{}
		}
	}
}

// checkWriter pings the primary through the writer's pool; down is when
// the pings started failing (zero: they did not), and the result its new
// value. Failing for WriterTimeout, the leader hands leadership over.
func (p *pgMode) checkWriter(down time.Time) time.Time {
	err := p.pingWriter()
	switch {
	case err == nil:
		if !down.IsZero() {
			p.c.log.Info("the writer reaches PostgreSQL again")
		}
		return time.Time{}
	case p.ctx.Err() != nil:
		return down
	case down.IsZero():
		p.c.log.Warn("the writer cannot reach PostgreSQL", "err", err)
		return time.Now()
	case time.Since(down) >= p.writerTimeout:
		p.c.log.Error("the writer has not reached PostgreSQL for the writer timeout: handing leadership over",
			"timeout", p.writerTimeout, "err", err)
		if r := p.c.raft(); r != nil {
			p.stepDown(r)
		}
		return time.Time{}
	}
	return down
}

// pingWriter checks that the writer's pool reaches the primary, within
// the writer timeout (at most pgRetryMax).
func (p *pgMode) pingWriter() error {
	ctx, cancel := context.WithTimeout(p.ctx, min(p.writerTimeout, pgRetryMax))
	defer cancel()
	return p.writer.Pool().Ping(ctx)
}

// catchUpLocked publishes every entry the log holds after the last
// published, a batch per read. The caller holds pubMu.
func (p *pgMode) catchUpLocked() error {
	for {
		after := p.published.Load()
		es, err := p.reader.ReadLog(after, followBatch)
		if errors.Is(err, model.ErrCompacted) {
			return p.resetLocked(after)
		}
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return nil
		}
		if es[0].Seq != after+1 {
			return fmt.Errorf("cluster: the log skips from %d to %d", after, es[0].Seq)
		}
		raise(&p.seen, es[len(es)-1].Seq)
		// Before the model shows them: reads on the read replicas wait
		// until the replicas have these entries.
		p.reader.SyncReadReplicas()
		p.publishLocked(foreignBatch(es), false)
		if len(es) < followBatch {
			return nil
		}
	}
}

// resetLocked starts the model afresh at the log's end, when the entries
// after the last it published were compacted away (it fell further
// behind than the log keeps).
func (p *pgMode) resetLocked(after uint64) error {
	last, err := p.reader.LastSeq()
	if err != nil {
		return err
	}
	p.c.log.Warn("the change log was compacted past what this replica published: its model starts again at the log's end",
		"published", after, "last_seq", last)
	if p.replica != nil {
		p.replica.Reset(last)
	}
	p.published.Store(last)
	raise(&p.seen, last)
	return nil
}

// publishLocked hands a committed batch to the model. The caller holds
// pubMu.
func (p *pgMode) publishLocked(b *model.Batch, own bool) {
	if p.replica != nil {
		p.replica.Applied(b, own)
	}
	p.published.Store(b.LastSeq())
}

// foreignBatch is the batch a follower publishes for entries read from
// the log. It carries no contexts: the model's cache forgets the contexts
// the entries touched (their paths and ancestors, as Deleted), to read
// them again from the database.
func foreignBatch(es []model.Entry) *model.Batch {
	b := &model.Batch{Entries: es}
	seen := map[model.Path]bool{}
	for i := range es {
		for p := es[i].Mutation.Path; p != "" && !seen[p]; p = p.Parent() {
			seen[p] = true
			b.Deleted = append(b.Deleted, p)
			if p.IsRoot() {
				break
			}
		}
	}
	return b
}

// readBarrier returns once this replica's model shows every write
// acknowledged before the call: every acknowledged write is in the
// primary's log.
func (p *pgMode) readBarrier(ctx context.Context) error {
	last, err := p.reader.LastSeq()
	if err != nil {
		return fmt.Errorf("%w: read barrier: %v", ErrNotLeader, err)
	}
	for p.published.Load() < last {
		p.pubMu.Lock()
		err := p.catchUpLocked()
		p.pubMu.Unlock()
		if err != nil {
			return fmt.Errorf("%w: read barrier: %v", ErrNotLeader, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// close stops the follower (the caller then waits for it) and closes the
// stores.
func (p *pgMode) close() error {
	p.cancel()
	var errs []error
	if p.reader != nil {
		errs = append(errs, p.reader.Close())
	}
	if p.writer != nil {
		errs = append(errs, p.writer.Close())
	}
	for _, col := range p.cs {
		if p.c.cfg.Registerer != nil {
			p.c.cfg.Registerer.Unregister(col)
		}
	}
	return errors.Join(errs...)
}

func (p *pgMode) metrics(reg prometheus.Registerer) {
	p.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_cluster_fence_claims_total",
		Help: "Claims of the PostgreSQL fence by this replica on its election, by outcome (claimed; fenced: a newer term holds it; error: PostgreSQL did not answer, retried).",
	}, []string{"outcome"})
	p.fencedCommits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strata_cluster_fenced_commits_total",
		Help: "Commits of this replica refused by the PostgreSQL fence (it had been deposed); each makes it stop writing.",
	})
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_cluster_follow_lag_entries",
		Help: "Change-log entries committed to PostgreSQL that this replica's model has not published yet.",
	}, func() float64 {
		seen, pub := p.seen.Load(), p.published.Load()
		if seen < pub {
			return 0
		}
		return float64(seen - pub)
	})
	p.cs = []prometheus.Collector{p.claims, p.fencedCommits, lag}
	if reg != nil {
		for _, col := range p.cs {
			reg.MustRegister(col)
		}
	}
}

// The PostgreSQL mode's Raft state machine: the log carries only
// membership, so there is nothing to apply, snapshot or restore.

func (p *pgMode) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		p.c.log.Error("a command entry in the raft log of a cluster in postgresql mode: ignored", "index", l.Index)
	}
	return nil
}

func (p *pgMode) Snapshot() (raft.FSMSnapshot, error) { return emptySnapshot{}, nil }

func (p *pgMode) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	_, err := io.Copy(io.Discard, rc)
	return err
}

type emptySnapshot struct{}

func (emptySnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (emptySnapshot) Release()                             {}

// raise sets v to x if x is higher.
func raise(v *atomic.Uint64, x uint64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}
