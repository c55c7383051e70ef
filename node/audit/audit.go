// Package audit keeps a node's audit trail (docs/api.md, "Audit trail"):
// one record per state-changing operator action — made on this node's
// API or arriving over a federation link — and per call and live read a
// consumer sends down, with who (user, tenant, the nodes a federated
// request came through), what (operation, path, target) and the outcome.
//
// Records are node-local records of kind Kind, written through the model
// (so a cluster replicates them), keyed so that key order is time order.
//
// A function call's record follows its job: it is written when the call
// is answered, with outcome "pending" while the job is not final, and
// rewritten with the job's final state (succeeded, failed, expired,
// cancelled) when the job ends (JobFinished). Such a record is keyed by
// the job (JobKey), so the rewrite finds it without an index, even after
// a restart; a final outcome is never replaced by a pending one, whichever
// write comes first.
//
// Writing never fails the action it records: the action has happened (or
// was refused) already. A record that cannot be written is logged and
// counted (strata_audit_write_failures_total).
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// Kind is the record kind of the audit trail.
const Kind = "audit"

// Outcomes besides the error codes of a refused or failed action
// (docs/api.md: invalid, unauthorized, forbidden, not_found, conflict,
// too_large, rate_limited, unavailable, internal, not_implemented, and
// for federation requests unreachable and timeout) and the final states
// of a call's job (succeeded, failed, expired, cancelled).
const (
	OK        = "ok"        // done
	Pending   = "pending"   // a call whose job is not final yet
	Forwarded = "forwarded" // passed on to the node below that owns the path
)

// writeTimeout bounds writing one record; it is written even when the
// request it records was cancelled.
const writeTimeout = 10 * time.Second

// Record is one entry of the audit trail; its JSON is the API's
// (apitypes.AuditRecord).
type Record = apitypes.AuditRecordOf[model.Path]

// finalJobState reports whether outcome is a job's final state.
func finalJobState(outcome string) bool {
	switch outcome {
	case "succeeded", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// Records is the durable storage of the trail; *model.Model implements it.
type Records interface {
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	PutRecord(ctx context.Context, kind, key string, value []byte) error
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
}

// Config is what New needs.
type Config struct {
	Records Records // required
	Logger  *slog.Logger
	// Registerer receives the trail's metrics; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Log is a node's audit trail. It is safe for concurrent use and holds no
// goroutines.
type Log struct {
	rec Records
	log *slog.Logger
	now func() time.Time
	seq atomic.Uint64

	// jobMu serialises the read-modify-write of job-keyed records (the
	// call's answer and the job's end may race).
	jobMu sync.Mutex

	written  *prometheus.CounterVec
	failures prometheus.Counter
}

// New returns the trail stored in cfg.Records.
func New(cfg Config) (*Log, error) {
	if cfg.Records == nil {
		return nil, errors.New("audit: Records is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{
		rec: cfg.Records, log: cfg.Logger.With("component", "audit"), now: cfg.Now,
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_audit_records_total",
			Help: "Audit records written, by outcome class (ok, refused, failed).",
		}, []string{"class"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_audit_write_failures_total",
			Help: "Audit records that could not be written (the action itself went ahead); see the log.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{l.written, l.failures} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("audit: metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Key orders records by time, then by seq within a process.
func Key(t time.Time, seq uint64) string {
	return fmt.Sprintf("%020d-%010d", t.UnixNano(), seq)
}

// JobKey is the key of the record of the call that created job id at
// created: derived from the job alone, so that the job's end finds it.
func JobKey(created time.Time, id string) string {
	return fmt.Sprintf("%020d-j-%s", created.UnixNano(), id)
}

// class groups outcomes for the metric.
func class(outcome string) string {
	switch outcome {
	case OK, Pending, Forwarded, "succeeded":
		return "ok"
	case "failed", "expired", "cancelled", "internal", "unavailable", "unreachable", "timeout":
		return "failed"
	}
	return "refused"
}

// Write records r under a new key; Time defaults to now.
func (l *Log) Write(r Record) {
	if r.Time.IsZero() {
		r.Time = l.now().UTC()
	}
	l.put(Key(r.Time, l.seq.Add(1)), r)
}

// WriteCall records the call r that created the job r.Job at created,
// keyed by the job. If the job's end was recorded first, its outcome is
// kept.
func (l *Log) WriteCall(r Record, created time.Time) {
	if r.Time.IsZero() {
		r.Time = l.now().UTC()
	}
	if r.Outcome == "" {
		r.Outcome = Pending
	}
	key := JobKey(created, r.Job)
	l.jobMu.Lock()
	defer l.jobMu.Unlock()
	if old, ok := l.get(key); ok && finalJobState(old.Outcome) && !finalJobState(r.Outcome) {
		r.Outcome, r.Error, r.Updated = old.Outcome, old.Error, old.Updated
	}
	l.put(key, r)
}

// Job is what JobFinished needs of a job that reached a final state.
type Job struct {
	ID        string
	Created   time.Time
	State     string // succeeded, failed, expired or cancelled
	Error     string
	Path      model.Path
	Function  string
	CreatedBy string
}

// JobFinished gives the record of the call that created j the job's final
// state. A call not recorded yet (its answer is still on its way) gets a
// record from the job, which the answer then completes.
func (l *Log) JobFinished(j Job) {
	key := JobKey(j.Created, j.ID)
	l.jobMu.Lock()
	defer l.jobMu.Unlock()
	r, ok := l.get(key)
	if !ok {
		// Who called (tenant, system) is the answer's to say: until it
		// is written, the record is listed to system administrators only.
		r = Record{Time: j.Created, User: j.CreatedBy, Op: "call", Path: j.Path, Function: j.Function, Job: j.ID}
	}
	r.Outcome, r.Error, r.Updated = j.State, j.Error, l.now().UTC()
	if len(r.Error) > 512 {
		r.Error = r.Error[:512]
	}
	l.put(key, r)
}

func (l *Log) get(key string) (Record, bool) {
	b, err := l.rec.Record(Kind, key)
	if err != nil {
		return Record{}, false
	}
	var r Record
	if json.Unmarshal(b, &r) != nil {
		return Record{}, false
	}
	return r, true
}

func (l *Log) put(key string, r Record) {
	r.ID = ""
	data, err := json.Marshal(r)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err = l.rec.PutRecord(ctx, Kind, key, data)
		cancel()
	}
	if err != nil {
		l.failures.Inc()
		l.log.Warn("audit record not written", "op", r.Op, "user", r.User, "path", r.Path, "target", r.Target,
			"outcome", r.Outcome, "err", err)
		return
	}
	l.written.WithLabelValues(class(r.Outcome)).Inc()
}

var errStop = errors.New("stop")

// Prune drops the records older than cutoff and reports how many went.
func (l *Log) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	limit := fmt.Sprintf("%020d", cutoff.UnixNano())
	var old []string
	err := l.rec.Records(Kind, func(key string, _ []byte) error {
		if key >= limit {
			return errStop
		}
		old = append(old, key)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, err
	}
	for chunk := range slices.Chunk(old, 500) {
		muts := make([]model.Mutation, len(chunk))
		for i, k := range chunk {
			muts[i] = model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: Kind, Key: k}}
		}
		if _, err := l.rec.Apply(ctx, muts...); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}

// List returns the newest limit records that keep accepts (nil: all),
// newest first, each with its ID.
func (l *Log) List(ctx context.Context, limit int, keep func(*Record) bool) ([]Record, error) {
	var kept []Record
	err := l.rec.Records(Kind, func(key string, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("audit record %s: %w", key, err)
		}
		if keep != nil && !keep(&r) {
			return nil
		}
		r.ID = key
		kept = append(kept, r)
		if len(kept) > 2*limit {
			kept = append(kept[:0], kept[len(kept)-limit:]...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(kept) > limit {
		kept = kept[len(kept)-limit:]
	}
	slices.Reverse(kept)
	if kept == nil {
		kept = []Record{}
	}
	return kept, nil
}

// Reconcile completes the records of calls still pending whose job is
// final by now: the job's end is written after the job's state, so a
// crash in between leaves the record pending. lookup returns a job this
// node owns (false: unknown, e.g. pruned). It returns how many it
// completed. The node runs it with its retention work.
//
// lookup runs after the walk of the records, never inside it: it reads
// the store (the jobs service loads a job it does not hold), and a read
// nested in a walk of a cluster's store deadlocks with a snapshot being
// installed, which waits for the walk to end while the nested read waits
// for the install.
func (l *Log) Reconcile(ctx context.Context, lookup func(id string) (Job, bool)) (int, error) {
	type pending struct{ key, job string }
	var calls []pending
	err := l.rec.Records(Kind, func(key string, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r Record
		if json.Unmarshal(v, &r) != nil || r.Outcome != Pending || r.Job == "" {
			return nil
		}
		calls = append(calls, pending{key, r.Job})
		return nil
	})
	if err != nil {
		return 0, err
	}
	var done []Job
	for _, c := range calls {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if j, ok := lookup(c.job); ok && finalJobState(j.State) && JobKey(j.Created, j.ID) == c.key {
			done = append(done, j)
		}
	}
	for _, j := range done {
		l.JobFinished(j)
	}
	return len(done), nil
}
