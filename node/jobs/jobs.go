// Package jobs keeps a node's jobs: one invocation of a function on one
// device, with persistent state so that a command for an offline device
// is delivered when it reconnects, even after the node restarted.
//
// Lifecycle of a job (every transition is durable before it is visible
// and is kept in the job's history):
//
//	queued ──▶ delivered ──▶ running ──▶ succeeded | failed
//	   └──────────┴────────────┴──▶ expired (deadline) | cancelled
//
// Invariants:
//
//   - A job in a final state (succeeded, failed, expired, cancelled)
//     never changes state again; a late result is only added to history.
//   - Every job not final is in the in-memory index, rebuilt from the
//     store at New, so Pending sees jobs created before a restart.
//   - Wait returns as soon as the job is final.
//
// Storage: node-local records of kind "job" keyed by the job id, whose
// order is creation order. Every write is a change decided against the
// record as the log has it (update.go), so a replica of a cluster whose
// view of a job lags behind the log cannot take the job back; the
// service's own writes are serialised by one mutex.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/rs/xid"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// KindJob is the record kind of jobs.
const KindJob = "job"

// State of a job (package apitypes defines the states).
type State = apitypes.JobState

// States.
const (
	Queued    = apitypes.JobQueued
	Delivered = apitypes.JobDelivered
	Running   = apitypes.JobRunning
	Succeeded = apitypes.JobSucceeded
	Failed    = apitypes.JobFailed
	Expired   = apitypes.JobExpired
	Cancelled = apitypes.JobCancelled
)

// Limits and defaults.
const (
	DefaultDeadline = time.Hour
	MaxDeadline     = 30 * 24 * time.Hour
	MaxArgsBytes    = 64 << 10
	MaxResultBytes  = 256 << 10
	MaxHistory      = 32
	maxErrorLen     = 4096
)

// Transition is one entry of a job's history.
type Transition = apitypes.JobTransition

// Job is one function call on one device: the API's job (apitypes.Job)
// with the node's path type. It is also the job's record in the store.
type Job = apitypes.JobOf[model.Path]

// Records is the durable storage jobs live in; *model.Model implements
// it. New registers Update as the updater of job records; on a replica
// of a cluster, register it before the replica can lead (node does, at
// the model's creation), since the leader decides the changes forwarded
// to it.
type Records interface {
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	DeleteRecord(ctx context.Context, kind, key string) error
	// Apply commits mutations atomically: a job's change and its event.
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
	RegisterUpdater(kind string, fn model.RecordUpdater)
}

// Config is what New needs.
type Config struct {
	Records Records
	Logger  *slog.Logger
	Now     func() time.Time
	// Deliver is called, outside any lock, with every job just created
	// (and by Redeliver); it publishes the job to its device if the device
	// is online. It must not block for long.
	Deliver func(Job)
	// Finished, if set, is called with every job that just reached a
	// final state, once that state is durable (the audit trail completes
	// the call's record with it). It is called outside the service's
	// lock, while the job's own writes wait: it may write to the store,
	// and must not change the job through the Service.
	Finished func(Job)
	// Leading, if set, tells whether this replica of a cluster leads:
	// only the leader expires jobs (each replica follows the others'
	// writes, Follow). Nil: always.
	Leading func() bool
}

// Service holds the jobs. It is safe for concurrent use.
type Service struct {
	rec      Records
	log      *slog.Logger
	now      func() time.Time
	deliver  func(Job)
	finished func(Job)
	leading  func() bool

	// Lock order: a job's stripe (jobLock), then mu. A writer of a job
	// holds its stripe from reading the job in memory until memory has
	// the version it wrote, so writes of one job are applied to memory in
	// their log order; mu is held only to read or change memory, never
	// across a commit, so writes of different jobs commit concurrently
	// (and share the store's syncs).
	// Follow takes a job's stripe too, so memory never follows an entry
	// of a job before the write that holds the stripe is in memory.
	stripes [64]sync.Mutex

	mu       sync.Mutex
	active   map[string]*Job            // jobs not final, by id
	byDevice map[string][]string        // device → active job ids, oldest first
	waiters  map[string][]chan struct{} // job id → closed when final
	seen     map[string]uint64          // job id → log sequence number of the version in memory (follow.go)
	// acked are the jobs delivered in memory whose delivery is not
	// written yet, with the time the device acknowledged each (see
	// MarkDelivered).
	acked map[string]time.Time

	stop chan struct{}
	done chan struct{}
}

// New loads the jobs not yet final and starts the expiry loop; Close stops it.
func New(cfg Config) (*Service, error) {
	if cfg.Records == nil {
		return nil, errors.New("jobs: Records is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Deliver == nil {
		cfg.Deliver = func(Job) {}
	}
	s := &Service{
		rec: cfg.Records, log: cfg.Logger.With("component", "jobs"), now: cfg.Now, deliver: cfg.Deliver,
		finished: cfg.Finished, leading: cfg.Leading,
		active: map[string]*Job{}, byDevice: map[string][]string{}, waiters: map[string][]chan struct{}{},
		seen: map[string]uint64{}, acked: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	s.rec.RegisterUpdater(KindJob, Update)
	err := s.rec.Records(KindJob, func(key string, b []byte) error {
		j := new(Job)
		if err := json.Unmarshal(b, j); err != nil {
			s.log.Warn("skipping a damaged job record", "job", key, "err", err)
			return nil
		}
		if !j.State.Final() {
			s.index(j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: load: %w", err)
	}
	go s.expireLoop()
	return s, nil
}

// Close stops the expiry loop. Calling it twice is safe.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *Service) clock() time.Time { return s.now().UTC().Round(0) }

// jobLock locks job id's stripe and returns its unlock.
func (s *Service) jobLock(id string) func() {
	m := &s.stripes[xxhash.Sum64String(id)%uint64(len(s.stripes))]
	m.Lock()
	return m.Unlock
}

// activeCopy returns a copy of job id as memory has it, if not final.
func (s *Service) activeCopy(id string) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.active[id]
	if !ok {
		return Job{}, false
	}
	return clone(j), true
}

func (s *Service) index(j *Job) {
	s.active[j.ID] = j
	s.byDevice[j.Device] = append(s.byDevice[j.Device], j.ID)
}

func (s *Service) unindex(j *Job) {
	delete(s.active, j.ID)
	ids := slices.DeleteFunc(s.byDevice[j.Device], func(id string) bool { return id == j.ID })
	if len(ids) == 0 {
		delete(s.byDevice, j.Device)
	} else {
		s.byDevice[j.Device] = ids
	}
	delete(s.acked, j.ID)
	for _, ch := range s.waiters[j.ID] {
		close(ch)
	}
	delete(s.waiters, j.ID)
}

// Spec is what Create needs.
type Spec struct {
	Path     model.Path
	Device   string
	Tenant   string
	Function string
	Args     json.RawMessage // a JSON object, or empty for {}
	By       string          // the user creating it
	Deadline time.Time       // zero: now + DefaultDeadline
	// ID, when set, is the job's id, chosen by the creator so that
	// creating it again is refused (ErrExists) rather than making a
	// second job: a bulk job derives it from its own id and the device
	// (BulkJobID). Empty: a new id.
	ID string
	// Bulk is the id of the bulk job this job is part of, if any.
	Bulk string
}

// ErrExists is Create's refusal of a Spec.ID that names a job already
// there (whatever its state).
var ErrExists = fmt.Errorf("%w: the job exists", model.ErrConflict)

// BulkRoot is where a node keeps the contexts of its parts of bulk jobs
// (node/bulk): /jobs/<bulk id>. A device job of a bulk job that fails or
// expires records a BulkFailureEvent there, in the commit of its final
// state, so the failure is listed once and flows up with the tree.
const BulkRoot = model.Path("/jobs")

// BulkPath is the context of bulk job id on this node.
func BulkPath(id string) model.Path { return BulkRoot + "/" + model.Path(id) }

// BulkJobID is the id of bulk job bulk's job for device.
func BulkJobID(bulk, device string) string { return bulk + "-" + device }

// BulkFailureEventName names the event of a failed device of a bulk job.
const BulkFailureEventName = "bulk.failure"

// BulkFailureEvent is the payload of a bulk.failure event: the device
// job (Job empty when the device was refused before any job was made),
// the device's path on the node that records it, the final state and
// error.
type BulkFailureEvent struct {
	Job    string     `json:"job,omitempty"`
	Device string     `json:"device,omitempty"`
	Path   model.Path `json:"path"`
	State  State      `json:"state"`
	Error  string     `json:"error,omitempty"`
}

// Create stores a queued job durably, then hands it to Deliver.
func (s *Service) Create(ctx context.Context, spec Spec) (Job, error) {
	j, mut, err := s.prepare(spec, s.clock())
	if err != nil {
		return Job{}, err
	}
	unlock := s.jobLock(j.ID)
	j, seq, err := s.commit(ctx, mut, j.Path, []*JobEvent{s.createdEvent(j)}, nil)
	if err != nil {
		unlock()
		return Job{}, err
	}
	s.mu.Lock()
	s.written(j, seq)
	out := clone(j)
	s.mu.Unlock()
	unlock()
	s.log.Info("job created", "job", j.ID, "device", j.Device, "function", j.Function, "by", j.CreatedBy)
	s.deliver(out)
	return out, nil
}

// CreateMany creates the jobs of specs, each with its Spec.ID, in one
// commit, and hands each to Deliver. When one of the ids is taken, the
// commit makes none, and each is then created alone: errs[i] is then
// spec i's error (ErrExists for a taken id). err is set when the jobs
// could not be stored at all; errs is then nil.
func (s *Service) CreateMany(ctx context.Context, specs []Spec) (made []Job, errs []error, err error) {
	now := s.clock()
	errs = make([]error, len(specs))
	made = make([]Job, len(specs))
	type one struct {
		i   int
		j   *Job
		mut model.Mutation
	}
	var batch []one
	var muts []model.Mutation
	for i, spec := range specs {
		if spec.ID == "" {
			errs[i] = fmt.Errorf("%w: CreateMany needs each job's id", model.ErrInvalid)
			continue
		}
		j, mut, err := s.prepare(spec, now)
		if err != nil {
			errs[i] = err
			continue
		}
		batch = append(batch, one{i, j, mut})
		muts = append(muts, mut)
		if ev := s.createdEvent(j); ev != nil && j.Path != "" {
			muts = append(muts, jobEvent(j.Path, ev))
		}
	}
	if len(batch) == 0 {
		return made, errs, nil
	}
	// Stripes in order, each once: two CreateMany never wait on each other
	// in a cycle.
	held := make([]bool, len(s.stripes))
	for _, b := range batch {
		held[xxhash.Sum64String(b.j.ID)%uint64(len(s.stripes))] = true
	}
	for i, h := range held {
		if h {
			s.stripes[i].Lock()
		}
	}
	unlock := func() {
		for i, h := range held {
			if h {
				s.stripes[i].Unlock()
			}
		}
	}
	es, cerr := s.rec.Apply(ctx, muts...)
	if cerr != nil {
		unlock()
		if !errors.Is(cerr, model.ErrConflict) && !errors.Is(cerr, model.ErrNotFound) {
			return nil, nil, fmt.Errorf("jobs: store %d jobs: %w", len(batch), cerr)
		}
		// A taken id, or a device context gone: one at a time.
		for _, b := range batch {
			made[b.i], errs[b.i] = s.Create(ctx, specs[b.i])
		}
		return made, errs, nil
	}
	var out []Job
	s.mu.Lock()
	for _, e := range es {
		r := e.Mutation.Record
		if r == nil || r.Kind != KindJob {
			continue
		}
		j := new(Job)
		if err := json.Unmarshal(r.Value, j); err != nil {
			continue
		}
		s.written(j, e.Seq)
		out = append(out, clone(j))
	}
	s.mu.Unlock()
	unlock()
	byID := make(map[string]Job, len(out))
	for _, j := range out {
		byID[j.ID] = j
	}
	for _, b := range batch {
		j, ok := byID[b.j.ID]
		if !ok {
			errs[b.i] = fmt.Errorf("jobs: store %s: no record logged", b.j.ID)
			continue
		}
		made[b.i] = j
	}
	s.log.Info("jobs created", "count", len(out))
	for _, j := range out {
		s.deliver(j)
	}
	return made, errs, nil
}

// prepare checks spec and returns its job, queued at now, and the
// mutation that stores it.
func (s *Service) prepare(spec Spec, now time.Time) (*Job, model.Mutation, error) {
	if len(spec.Args) == 0 {
		spec.Args = json.RawMessage("{}")
	}
	if len(spec.Args) > MaxArgsBytes {
		return nil, model.Mutation{}, fmt.Errorf("%w: args larger than %d bytes", model.ErrInvalid, MaxArgsBytes)
	}
	if err := model.CheckValue(spec.Args); err != nil {
		return nil, model.Mutation{}, fmt.Errorf("args: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(spec.Args, &obj); err != nil || obj == nil {
		return nil, model.Mutation{}, fmt.Errorf("%w: args must be a JSON object", model.ErrInvalid)
	}
	switch {
	case spec.Deadline.IsZero():
		spec.Deadline = now.Add(DefaultDeadline)
	case !spec.Deadline.After(now):
		return nil, model.Mutation{}, fmt.Errorf("%w: deadline is in the past", model.ErrInvalid)
	case spec.Deadline.Sub(now) > MaxDeadline:
		return nil, model.Mutation{}, fmt.Errorf("%w: deadline more than %v ahead", model.ErrInvalid, MaxDeadline)
	}
	args, _ := json.Marshal(obj) // compact
	id := spec.ID
	if id == "" {
		id = "j" + xid.NewWithTime(now).String()
	} else if len(id) > 64 {
		return nil, model.Mutation{}, fmt.Errorf("%w: job id longer than 64 bytes", model.ErrInvalid)
	}
	j := &Job{
		ID: id, Path: spec.Path, Device: spec.Device, Tenant: spec.Tenant,
		Function: spec.Function, Args: args, CreatedBy: spec.By, Created: now,
		Deadline: spec.Deadline.UTC().Round(0), State: Queued, Updated: now,
		History: []Transition{{State: Queued, Time: now}}, Bulk: spec.Bulk,
	}
	if spec.ID == "" {
		// Put whole, not updated: the id is new, so there is nothing to decide.
		b, err := json.Marshal(j)
		if err != nil {
			return nil, model.Mutation{}, err
		}
		return j, model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindJob, Key: j.ID, Value: b}}, nil
	}
	// The creator's id may be taken: the log decides (Update).
	arg, err := json.Marshal(change{Create: j})
	if err != nil {
		return nil, model.Mutation{}, err
	}
	return j, model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: KindJob, Key: j.ID, Value: arg}}, nil
}

// createdEvent is the job event of j's creation; nil for a device job of
// a bulk job, whose progress its part counts (see eventOf).
func (s *Service) createdEvent(j *Job) *JobEvent {
	if j.Bulk != "" {
		return nil
	}
	return &JobEvent{Job: j.ID, Function: j.Function, State: Queued, By: j.CreatedBy}
}

// EventName is the name of the event recorded at every state change of a
// job, on its device's context, in the same commit, so that the change
// log, and the consumers of this node's tree, see job progress.
//
// An event takes its context's tenant, so the job event of a shared
// device (no tenant) has none; readers must then show it to system users
// only, as they do the job itself (node/api: seesEvent).
const EventName = "job"

// JobEvent is the payload of the "job" event recorded at every state
// change.
type JobEvent struct {
	Job      string `json:"job"`
	Function string `json:"function"`
	State    State  `json:"state"`
	By       string `json:"by,omitempty"`
	Error    string `json:"error,omitempty"`
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func clone(j *Job) Job {
	c := *j
	c.History = slices.Clone(j.History)
	return c
}

// State returns the state of job id if it is not final (false: final,
// or unknown here), without copying the job.
func (s *Service) State(id string) (State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.active[id]; ok {
		return j.State, true
	}
	return "", false
}

// Get returns a job.
func (s *Service) Get(id string) (Job, error) {
	s.mu.Lock()
	if j, ok := s.active[id]; ok {
		c := clone(j)
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	return s.load(id)
}

func (s *Service) load(id string) (Job, error) {
	if id == "" || len(id) > 64 {
		return Job{}, fmt.Errorf("%w: job %q", model.ErrNotFound, id)
	}
	b, err := s.rec.Record(KindJob, id)
	if errors.Is(err, model.ErrNotFound) {
		return Job{}, fmt.Errorf("%w: job %q", model.ErrNotFound, id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("jobs: read %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return Job{}, fmt.Errorf("jobs: job %s: %w", id, err)
	}
	return j, nil
}

// List calls fn for every job, oldest first, until fn returns false.
func (s *Service) List(fn func(Job) bool) error {
	errStop := errors.New("stop")
	err := s.rec.Records(KindJob, func(_ string, b []byte) error {
		var j Job
		if json.Unmarshal(b, &j) != nil {
			return nil
		}
		if !fn(j) {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// Pending returns the jobs of device still to be delivered or answered and
// not past their deadline, oldest first. A job this replica has not yet
// followed to its final state (Follow) but whose final record it has
// applied is left out.
func (s *Service) Pending(device string) []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	var out []Job
	for _, id := range s.byDevice[device] {
		if j := s.active[id]; j != nil && now.Before(j.Deadline) && !s.finalHere(id) {
			out = append(out, clone(j))
		}
	}
	return out
}

// finalHere reports whether the record of job id this replica has
// applied is final.
func (s *Service) finalHere(id string) bool {
	b, err := s.rec.Record(KindJob, id)
	if err != nil {
		return false
	}
	var j struct {
		State State `json:"state"`
	}
	return json.Unmarshal(b, &j) == nil && j.State.Final()
}

// Active is the number of jobs not final.
func (s *Service) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active)
}
