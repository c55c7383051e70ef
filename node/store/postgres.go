package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dm/strata/model"
)

// Interface guard.
var _ model.Store = (*Postgres)(nil)

// PostgresOptions configures the PostgreSQL store.
type PostgresOptions struct {
	// DSN of the primary, as a URL or key=value string (see pgx.ParseConfig).
	DSN    string
	Logger *slog.Logger
	// MaxConns bounds each connection pool, the primary's and each
	// replica's (default: pgxpool's, at least 4).
	MaxConns int32
	// ReadDSNs are streaming replicas of the primary; reads that tolerate
	// staleness go to them (see postgres_replica.go).
	ReadDSNs []string
	// MaxReplicaLag takes a replica further behind the primary out of
	// rotation (default 5 s).
	MaxReplicaLag time.Duration
	// ReplicaCheckInterval is how often replicas are checked (default 1 s).
	ReplicaCheckInterval time.Duration
	// ReplicaReadTimeout bounds one read on a replica (default 2 s): a
	// read that takes longer is abandoned and run on the primary, and the
	// replica leaves rotation until its next successful check.
	ReplicaReadTimeout time.Duration
	// Fenced opens the store as a cluster replica that may become the
	// writer: its writes fail with ErrFenced until Claim succeeds, and
	// then check the fence in their transaction (postgres_fence.go).
	Fenced bool
	// ClaimWait is how long Claim waits for the writes in flight that hold
	// the fence before it ends their sessions (default 5 s): a deposed
	// writer cut off from PostgreSQL in the middle of a commit would
	// otherwise hold the fence until the server notices it is gone.
	ClaimWait time.Duration
	// ReadOnly opens the store as a follower: it applies no migrations
	// and writes nothing, at open or later (its connections run with
	// default_transaction_read_only, so the server refuses any write);
	// its writes fail with ErrReadOnly. The schema must be at this
	// binary's version (else ErrSchemaBehind: try again once the writer
	// has migrated it).
	ReadOnly bool
}

// Validate checks the options without connecting.
func (o *PostgresOptions) Validate() error {
	if o.DSN == "" {
		return errors.New("store: postgres needs a dsn")
	}
	if o.MaxConns < 0 {
		return fmt.Errorf("store: postgres max conns %d is negative", o.MaxConns)
	}
	for i, d := range o.ReadDSNs {
		if d == "" {
			return fmt.Errorf("store: postgres read dsn %d is empty", i+1)
		}
	}
	if o.MaxReplicaLag < 0 || o.ReplicaCheckInterval < 0 || o.ReplicaReadTimeout < 0 {
		return errors.New("store: postgres replica lag, check interval and read timeout must not be negative")
	}
	if o.ClaimWait < 0 {
		return errors.New("store: postgres claim wait must not be negative")
	}
	if o.Fenced && o.ReadOnly {
		return errors.New("store: postgres cannot be both fenced (a writer) and read-only")
	}
	return nil
}

// Postgres is the store on a PostgreSQL primary. Every Commit is one
// transaction, acknowledged once PostgreSQL reports it committed (durable on
// the primary under synchronous_commit, which OpenPostgres refuses to find
// off). Schema in migrations/; the layout mirrors Badger's keys:
//
//	contexts(path, parent, name, type, tenant, labels, vars, props, version, doc)
//	events(path, seq, time, level, doc, tenant)
//	log(seq, doc)
//	records(kind, key, value)
//	meta(last_seq, first_seq)
//
// doc columns hold model.Marshal of the value. Only one process may write
// a database at a time (the model's applier); the log's primary key makes a
// second writer's commits fail rather than fork the log. The replicas of a
// cluster share a database: each opens it ReadOnly or Fenced, and the
// fence (postgres_fence.go) lets only the elected writer commit.
type Postgres struct {
	pool     *pgxpool.Pool
	readOnly bool
	fence    fence
	replicas *replicas
	listen   *logListener // WaitLog's (notify.go)
	log      *slog.Logger
	// ctx bounds every query; Close cancels it.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the change-log listener
	closeOnce sync.Once
}

// OpenPostgres connects to opts.DSN, applies the pending schema migrations
// and checks that commits will be durable. On error nothing stays open.
func OpenPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger.With("component", "store")
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: postgres dsn: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ReadOnly {
		// Enforced by the server: a write on these connections fails.
		cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			pool.Close()
		}
	}()
	var syncCommit string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&syncCommit); err != nil {
		return nil, fmt.Errorf("store: postgres %s: %w", cfg.ConnConfig.Host, err)
	}
	if syncCommit == "off" {
		return nil, errors.New("store: postgres has synchronous_commit=off, which acknowledges commits that are not durable")
	}
	if err := prepareSchema(ctx, pool, opts, log); err != nil {
		return nil, err
	}
	// The DSN may hold a password: name the server by its parts instead.
	cc := cfg.ConnConfig
	log.Info("opened postgres store", "host", cc.Host, "port", cc.Port, "database", cc.Database, "user", cc.User,
		"read_only", opts.ReadOnly, "fenced", opts.Fenced)
	rs, err := openReplicas(opts.ReadDSNs, opts, log)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Postgres{pool: pool, readOnly: opts.ReadOnly, replicas: rs, listen: newLogListener(), log: log, ctx: sctx, cancel: cancel}
	s.fence.on.Store(opts.Fenced)
	s.fence.wait = cmp.Or(opts.ClaimWait, defaultClaimWait)
	if len(rs.list) > 0 {
		rs.wg.Add(1)
		go rs.run(sctx, pool)
		log.Info("read replicas", "count", len(rs.list), "max_lag", rs.maxLag)
	}
	ok = true
	return s, nil
}

// prepareSchema brings a writer's schema up to date (migrations, then the
// backfills of columns added to existing rows) and refuses an unfenced
// writer on a database a cluster claimed; a read-only store only checks
// the schema's version.
func prepareSchema(ctx context.Context, pool *pgxpool.Pool, opts PostgresOptions, log *slog.Logger) error {
	if opts.ReadOnly {
		if err := checkSchema(ctx, pool); err != nil {
			return fmt.Errorf("store: postgres schema: %w", err)
		}
		return nil
	}
	if err := migrate(ctx, pool, log); err != nil {
		return fmt.Errorf("store: postgres schema: %w", err)
	}
	if err := backfillSearch(ctx, pool, log); err != nil {
		return fmt.Errorf("store: postgres schema: %w", err)
	}
	if err := backfillFeed(ctx, pool, log); err != nil { // postgres_feed.go
		return fmt.Errorf("store: postgres schema: %w", err)
	}
	if !opts.Fenced {
		if err := refuseClaimed(ctx, pool); err != nil { // postgres_fence.go
			return fmt.Errorf("store: postgres: %w", err)
		}
	}
	return nil
}

// Close stops the replica checks and the change-log listener, cancels
// running queries and closes the pools. Closing twice is safe.
func (s *Postgres) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.listen.close()
		s.wg.Wait()
		s.replicas.wg.Wait()
		s.replicas.close()
		s.pool.Close()
	})
	return nil
}

// Pool exposes the connection pool for tests and benchmarks.
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }

// Commit writes the batch in one transaction. The statements run in the
// same order as Badger's writes (contexts, deletions, events, records,
// dropped records, log, last sequence number), so a batch that touches one
// key twice ends the same way on both stores. A fenced store checks the
// fence first, in the same transaction (postgres_fence.go): a commit it
// refuses fails with ErrFenced and writes nothing.
func (s *Postgres) Commit(b *model.Batch) error {
	w, err := s.writer()
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	q := &pgx.Batch{}
	if w != nil {
		q.Queue(sqlFence)
	}
	if err := commitBatch(q, b); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	err = pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		br := tx.SendBatch(s.ctx, q)
		if w != nil {
			// The batch's writes ran too; rolled back unless the fence
			// names this writer.
			if err := s.check(w, br.QueryRow()); err != nil {
				br.Close()
				return err
			}
		}
		return br.Close()
	})
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	s.recordCommit()
	if len(b.Entries) > 0 {
		s.listen.advance(b.LastSeq())
	}
	return nil
}

// commitBatch queues on q one statement per table for a model batch, each
// taking its rows as arrays (one round trip for the whole batch).
func commitBatch(q *pgx.Batch, b *model.Batch) error {
	// Deletions first: a context deleted and created again in one batch
	// loses its old events, then gets its new state.
	if len(b.Deleted) > 0 {
		paths := make([]string, len(b.Deleted))
		for i, p := range b.Deleted {
			paths[i] = string(p)
		}
		q.Queue(`DELETE FROM contexts WHERE path = ANY($1::text[])`, paths)
		q.Queue(`DELETE FROM events WHERE path = ANY($1::text[])`, paths)
	}
	if len(b.Contexts) > 0 {
		n := len(b.Contexts)
		var (
			paths, names, types, tenants = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
			parents                      = make([]*string, 0, n)
			labels, vars, props          = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
			versions                     = make([]int64, 0, n)
			docs                         = make([][]byte, 0, n)
		)
		for _, cw := range b.Contexts {
			c := cw.Context
			doc, err := model.Marshal(c)
			if err != nil {
				return fmt.Errorf("encode context %s: %w", c.Path, err)
			}
			lab, vs, pr, err := searchColumns(c) // postgres_search.go
			if err != nil {
				return err
			}
			var parent *string
			if !c.Path.IsRoot() {
				p := string(c.Path.Parent())
				parent = &p
			}
			paths = append(paths, string(c.Path))
			parents = append(parents, parent)
			names = append(names, c.Path.Name())
			types = append(types, c.Type)
			tenants = append(tenants, c.Tenant)
			labels = append(labels, string(lab))
			vars = append(vars, string(vs))
			props = append(props, string(pr))
			versions = append(versions, int64(c.Version))
			docs = append(docs, doc)
		}
		q.Queue(`INSERT INTO contexts (path, parent, name, type, tenant, labels, vars, props, version, doc)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::jsonb[], $9::bigint[], $10::bytea[])
			ON CONFLICT (path) DO UPDATE SET type = excluded.type, tenant = excluded.tenant,
				labels = excluded.labels, vars = excluded.vars, props = excluded.props, version = excluded.version, doc = excluded.doc`,
			paths, parents, names, types, tenants, labels, vars, props, versions, docs)
	}
	if len(b.Events) > 0 {
		evs := b.Events
		var (
			paths, levels, tenants = make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
			seqs                   = make([]int64, len(evs))
			times                  = make([]time.Time, len(evs))
			docs                   = make([][]byte, len(evs))
		)
		for i := range evs {
			doc, err := model.Marshal(&evs[i])
			if err != nil {
				return fmt.Errorf("encode event %d: %w", evs[i].Seq, err)
			}
			paths[i], seqs[i], times[i], levels[i], docs[i] = string(evs[i].Path), int64(evs[i].Seq), evs[i].Time, string(evs[i].Level), doc
			tenants[i] = evs[i].Tenant
		}
		q.Queue(`INSERT INTO events (path, seq, time, level, doc, tenant)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::bytea[], $6::text[])
			ON CONFLICT (path, seq) DO UPDATE SET time = excluded.time, level = excluded.level, doc = excluded.doc, tenant = excluded.tenant`,
			paths, seqs, times, levels, docs, tenants)
	}
	if len(b.Records) > 0 {
		rs := b.Records
		kinds, keys, values := make([][]byte, len(rs)), make([][]byte, len(rs)), make([][]byte, len(rs))
		for i, r := range rs {
			kinds[i], keys[i], values[i] = []byte(r.Kind), []byte(r.Key), r.Value
		}
		q.Queue(`INSERT INTO records (kind, key, value)
			SELECT k, y, coalesce(v, ''::bytea) FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS r(k, y, v)
			ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value`,
			kinds, keys, values)
	}
	if len(b.Dropped) > 0 {
		kinds, keys := make([][]byte, len(b.Dropped)), make([][]byte, len(b.Dropped))
		for i, r := range b.Dropped {
			kinds[i], keys[i] = []byte(r.Kind), []byte(r.Key)
		}
		q.Queue(`DELETE FROM records r USING unnest($1::bytea[], $2::bytea[]) AS d(k, y)
			WHERE r.kind = d.k AND r.key = d.y`, kinds, keys)
	}
	if len(b.Entries) > 0 {
		seqs, docs := make([]int64, len(b.Entries)), make([][]byte, len(b.Entries))
		for i := range b.Entries {
			doc, err := b.EncodedEntry(i)
			if err != nil {
				return fmt.Errorf("encode entry %d: %w", b.Entries[i].Seq, err)
			}
			seqs[i], docs[i] = int64(b.Entries[i].Seq), doc
		}
		q.Queue(`INSERT INTO log (seq, doc) SELECT * FROM unnest($1::bigint[], $2::bytea[])`, seqs, docs)
		q.Queue(`UPDATE meta SET last_seq = $1`, int64(b.LastSeq()))
		// Delivered at commit, to every listener of the database (WaitLog).
		q.Queue(`SELECT pg_notify($1, $2)`, LogChannel, strconv.FormatUint(b.LastSeq(), 10))
	}
	return nil
}

// LastSeq returns the last committed sequence number.
func (s *Postgres) LastSeq() (uint64, error) {
	var last int64
	if err := s.pool.QueryRow(s.ctx, `SELECT last_seq FROM meta`).Scan(&last); err != nil {
		return 0, fmt.Errorf("store: last seq: %w", err)
	}
	return uint64(last), nil
}

// Context reads one context.
func (s *Postgres) Context(p model.Path) (*model.Context, error) {
	var doc []byte
	err := s.pool.QueryRow(s.ctx, `SELECT doc FROM contexts WHERE path = $1`, string(p)).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: context %s", model.ErrNotFound, p)
	}
	if err != nil {
		return nil, fmt.Errorf("store: context %s: %w", p, err)
	}
	var c model.Context
	if err := model.Unmarshal(doc, &c); err != nil {
		return nil, fmt.Errorf("store: decode context %s: %w", p, err)
	}
	return &c, nil
}

// Children lists p's direct children in name (byte) order, from a read
// replica when one fits (see readStale).
func (s *Postgres) Children(p model.Path, after string, limit int) ([]model.Child, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []model.Child
	err := s.readStale(func(ctx context.Context, pool *pgxpool.Pool) error {
		out = nil
		rows, err := pool.Query(ctx, `SELECT name, type, tenant FROM contexts
			WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3`, string(p), after, limit)
		if err != nil {
			return err
		}
		var c model.Child
		_, err = pgx.ForEachRow(rows, []any{&c.Name, &c.Type, &c.Tenant}, func() error {
			out = append(out, c)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: children of %s: %w", p, err)
	}
	return out, nil
}

// Events reads p's history newest first. Since is compared in the database
// at microsecond precision (timestamptz), then exactly on the decoded event.
// Since filters every event: Badger instead stops at the first event older
// than Since, which gives the same answer as long as event times rise with
// their sequence numbers. Events come from a read replica when one fits
// (see readStale).
func (s *Postgres) Events(p model.Path, q model.EventQuery) ([]model.Event, error) {
	limit := q.Limit
	if limit <= 0 || limit > MaxEventsPerQuery {
		limit = min(max(limit, 100), MaxEventsPerQuery)
	}
	firstBefore := q.Before
	if firstBefore == 0 || firstBefore > math.MaxInt64 {
		firstBefore = math.MaxInt64
	}
	var since *time.Time
	if !q.Since.IsZero() {
		t := q.Since.Truncate(time.Microsecond)
		since = &t
	}
	var level *string
	if q.Level != "" {
		l := string(q.Level)
		level = &l
	}
	var out []model.Event
	err := s.readStale(func(ctx context.Context, pool *pgxpool.Pool) error {
		out = nil
		before := firstBefore
		for len(out) < limit {
			want := limit - len(out)
			rows, err := pool.Query(ctx, `SELECT seq, doc FROM events
			WHERE path = $1 AND seq < $2
				AND ($3::timestamptz IS NULL OR time >= $3)
				AND ($4::text IS NULL OR level = $4)
			ORDER BY seq DESC LIMIT $5`, string(p), int64(before), since, level, want)
			if err != nil {
				return err
			}
			var (
				seq  int64
				doc  []byte
				read int
			)
			_, err = pgx.ForEachRow(rows, []any{&seq, &doc}, func() error {
				read++
				before = uint64(seq)
				var ev model.Event
				if err := model.Unmarshal(doc, &ev); err != nil {
					return fmt.Errorf("decode event %d: %w", seq, err)
				}
				if !q.Since.IsZero() && ev.Time.Before(q.Since) {
					return nil // within the microsecond of Since, but before it
				}
				out = append(out, ev)
				return nil
			})
			if err != nil {
				return err
			}
			if read < want {
				break // no more history
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: events of %s: %w", p, err)
	}
	return out, nil
}

// ReadLog reads entries after a cursor. The log start and the entries come
// from one statement, hence one snapshot: a concurrent compaction cannot
// open a silent gap.
func (s *Postgres) ReadLog(after uint64, limit int) ([]model.Entry, error) {
	if limit <= 0 {
		limit = 1024
	}
	if after >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pool.Query(s.ctx, `SELECT m.first_seq, l.doc FROM meta m
		LEFT JOIN LATERAL (SELECT seq, doc FROM log WHERE seq > $1 ORDER BY seq LIMIT $2) l ON true
		ORDER BY l.seq`, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("store: read log: %w", err)
	}
	var (
		out   []model.Entry
		first int64
		doc   []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&first, &doc}, func() error {
		if first > 0 && after+1 < uint64(first) {
			return fmt.Errorf("%w: cursor %d, oldest kept %d", model.ErrCompacted, after, first)
		}
		if doc == nil {
			return nil // no entries: the one row of the outer join
		}
		var e model.Entry
		if err := model.Unmarshal(doc, &e); err != nil {
			return fmt.Errorf("store: decode log entry: %w", err)
		}
		out = append(out, e)
		return nil
	})
	if errors.Is(err, model.ErrCompacted) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("store: read log: %w", err)
	}
	return out, nil
}

// Record reads one node-local record.
func (s *Postgres) Record(kind, key string) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(s.ctx, `SELECT value FROM records WHERE kind = $1 AND key = $2`,
		[]byte(kind), []byte(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s %q", model.ErrNotFound, kind, key)
	}
	if err != nil {
		return nil, fmt.Errorf("store: record %s %q: %w", kind, key, err)
	}
	return v, nil
}

// Records iterates the records of one kind in key (byte) order.
func (s *Postgres) Records(kind string, fn func(key string, value []byte) error) error {
	rows, err := s.pool.Query(s.ctx, `SELECT key, value FROM records WHERE kind = $1 ORDER BY key`, []byte(kind))
	if err != nil {
		return fmt.Errorf("store: records %s: %w", kind, err)
	}
	var key, value []byte
	_, err = pgx.ForEachRow(rows, []any{&key, &value}, func() error {
		// Scanned slices are reused by the next row: hand out copies.
		return fn(string(key), append([]byte{}, value...))
	})
	return err
}

// Snapshot walks a subtree from one REPEATABLE READ transaction: the
// sequence number and the contexts come from the same snapshot. With the
// "C" collation the subtree of /a is /a itself and the range ('/a/', '/a0'),
// '0' being the byte after '/', so no sibling such as /a-b is read.
func (s *Postgres) Snapshot(prefix model.Path, fn func(*model.Context) error) (uint64, error) {
	var seq uint64
	err := pgx.BeginTxFunc(s.ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var last int64
		if err := tx.QueryRow(s.ctx, `SELECT last_seq FROM meta`).Scan(&last); err != nil {
			return err
		}
		seq = uint64(last)
		var (
			rows pgx.Rows
			err  error
		)
		if prefix.IsRoot() {
			rows, err = tx.Query(s.ctx, `SELECT doc FROM contexts ORDER BY path`)
		} else {
			rows, err = tx.Query(s.ctx, `SELECT doc FROM contexts
				WHERE path = $1 OR (path > $2 AND path < $3) ORDER BY path`,
				string(prefix), string(prefix)+"/", string(prefix)+"0")
		}
		if err != nil {
			return err
		}
		var doc []byte
		_, err = pgx.ForEachRow(rows, []any{&doc}, func() error {
			var c model.Context
			if err := model.Unmarshal(doc, &c); err != nil {
				return fmt.Errorf("decode context: %w", err)
			}
			return fn(&c)
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: snapshot %s: %w", prefix, err)
	}
	return seq, nil
}

// CompactLog drops change-log entries so that at most keep remain, and
// records where the log now starts, in one transaction. It returns how many
// it dropped.
func (s *Postgres) CompactLog(keep uint64) (int, error) {
	n := 0
	err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkFence(s.ctx, tx); err != nil {
			return err
		}
		var last, first int64
		// FOR UPDATE orders concurrent compactions.
		if err := tx.QueryRow(s.ctx, `SELECT last_seq, first_seq FROM meta FOR UPDATE`).Scan(&last, &first); err != nil {
			return err
		}
		if uint64(last) <= keep {
			return nil
		}
		upTo := uint64(last) - keep // drop seq <= upTo
		if uint64(first) > upTo {
			return nil
		}
		tag, err := tx.Exec(s.ctx, `DELETE FROM log WHERE seq <= $1`, int64(upTo))
		if err != nil {
			return err
		}
		n = int(tag.RowsAffected())
		_, err = tx.Exec(s.ctx, `UPDATE meta SET first_seq = $1`, int64(upTo+1))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: compact log: %w", err)
	}
	return n, nil
}

// PruneEvents drops events older than olderThan and all but the newest
// perContext events of each context. It returns how many it dropped. The age
// cut is at microsecond precision (timestamptz).
func (s *Postgres) PruneEvents(perContext int, olderThan time.Time) (int, error) {
	n := 0
	err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkFence(s.ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(s.ctx, `DELETE FROM events e USING (
			SELECT path, seq, row_number() OVER (PARTITION BY path ORDER BY seq DESC) AS n FROM events
		) r
		WHERE e.path = r.path AND e.seq = r.seq AND (r.n > $1 OR e.time < $2)`,
			int64(perContext), olderThan)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune events: %w", err)
	}
	return n, nil
}
