// Package bulk runs bulk jobs: one function on many devices across the
// hierarchy (docs/jobs.md).
//
// A bulk job is created on the node where an operator issues it, and
// sent once to every provider link whose tree its target can reach; each
// node keeps its own part of the job (a record of kind "bulkjob"),
// expands the target against its own devices, and runs one device job
// per device with the jobs service. Above, nothing happens per device:
// each node publishes its part's progress as the context /jobs/<id>
// (type "bulkjob", label job=<id>, variable "progress"), which the
// federation sync carries up like any context, so the node where the job
// was issued reads every node's counters from its mirror.
//
// Invariants:
//
//   - A device runs each attempt of a bulk job at most once: its device
//     job's id is derived from the bulk job, the device and the attempt
//     (AttemptJobID), and creating it again is refused by the log, so a
//     dispatch repeated after a restart, a job or a retry sent again over
//     a link, makes no second job; a retry makes a job only for a device
//     whose previous attempt failed or expired.
//   - Each node applies the rollout (rollout.go, roll.go) to its own
//     devices: a node cut off from the one above keeps to it.
//   - A part's record is written before the part acts: a node that
//     restarts expands, sends and cancels what its record says is not
//     yet done.
//   - A device failure is recorded once, as a bulk.failure event on the
//     part's context, in the commit of the device job's final state
//     (jobs), of the part's refusal of the device (here), or of its
//     health gate's failure (health.go).
//   - With a health gate, a device whose job succeeded counts as
//     succeeded or failed by its gate's outcome, kept in the part's
//     record; thresholds, waves, rate and concurrency count that.
package bulk

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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/xid"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/jobs"
)

// Names in the tree and the store.
const (
	// KindBulk is the record kind of a node's parts of bulk jobs.
	KindBulk = "bulkjob"
	// ContextType is the type of a part's context, jobs.BulkPath(id).
	ContextType = "bulkjob"
	// ProgressVar is the variable of a part's context with its Progress.
	ProgressVar = "progress"
	// JobLabel is the label of a part's context naming its bulk job.
	JobLabel = "job"
)

// Limits.
const (
	maxRefused  = 10000 // refused devices kept in a part's record
	sendTimeout = 10 * time.Second
	searchPage  = model.MaxSearchLimit
)

// ErrUnreachable is returned by Links.Send when the provider could not
// be reached: the send is tried again later.
var ErrUnreachable = errors.New("bulk: provider unreachable")

// Identity is who a bulk job was issued by, as it travels down links.
type Identity struct {
	User   string
	Tenant string
	System bool
}

// Provider is a node mounted here.
type Provider struct {
	Name  string
	Mount model.Path
}

// Request is what one node sends a provider: create its part of bulk
// job Spec.ID, or cancel it.
type Request struct {
	Action  string   `json:"action"` // "create", "cancel" or "control"
	Spec    Spec     `json:"spec"`
	Control *Control `json:"control,omitempty"`
}

// Actions of a Request.
const (
	ActionCreate  = "create"
	ActionCancel  = "cancel"
	ActionControl = "control"
)

// Control is the operator's hold on a part as the node above has it,
// sent down after each change (pause, resume, retry): Gen orders the
// sends (a node applies a Gen only once, and none older), Paused is the
// hold, Attempt the latest retry.
type Control struct {
	Gen     int  `json:"gen"`
	Paused  bool `json:"paused"`
	Attempt int  `json:"attempt"`
}

// Member is a local device a part selected, in the part's order (waves
// are ranges of it).
type Member struct {
	Path   model.Path `json:"p"`
	Device string     `json:"d"`
}

// Base is what max_failures counts from: the part's failed and finished
// devices when it was last resumed or retried.
type Base struct {
	Failed   int `json:"failed"`
	Finished int `json:"finished"`
}

// Spec is a bulk job as sent down a link, in the receiver's paths.
type Spec struct {
	ID        string              `json:"id"`
	Function  string              `json:"function"`
	Args      json.RawMessage     `json:"args,omitempty"`
	Target    apitypes.BulkTarget `json:"target"`
	Rollout   json.RawMessage     `json:"rollout,omitempty"`
	Deadline  time.Time           `json:"deadline"`
	CreatedBy string              `json:"created_by"`
	Created   time.Time           `json:"created"`
	// Scope, when non-nil, is where the job may run here (what reaches
	// this node of the subtrees it was allowed); empty: nowhere. Never
	// omitted, so that a record keeps nowhere apart from everywhere.
	Scope []model.Path `json:"scope"`
}

// Links are the provider links of this node; node wires the federation.
type Links interface {
	Providers() []Provider
	// Send sends req to provider; an error wrapping ErrUnreachable is
	// tried again, any other is the provider's refusal.
	Send(ctx context.Context, provider string, id Identity, req Request) error
}

// Part is this node's part of a bulk job: its record.
type Part struct {
	Spec
	Tenant string       `json:"tenant"`
	System bool         `json:"system,omitempty"`
	User   string       `json:"user"`
	Grants []auth.Grant `json:"grants,omitempty"`
	// Origin is the consumer the job came from; "" where it was issued.
	Origin    string `json:"origin,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
	// Expanded is set once every local device has its device job (or its
	// refusal) and every link to send to is listed in Links.
	Expanded bool             `json:"expanded,omitempty"`
	Refused  []Refusal        `json:"refused,omitempty"`
	Links    map[string]*Link `json:"links,omitempty"`
	Finished bool             `json:"finished,omitempty"` // nothing left to do here

	// Rollout control (rollout.go). Members are the local devices
	// selected, in order; Wave the last wave opened (0: the first).
	Members []Member `json:"members,omitempty"`
	Wave    int      `json:"wave,omitempty"`
	// Paused is the operator's hold (here or from above; sent down);
	// Tripped this node's own: a threshold, or a wave waiting for
	// approval (Approve, its number + 1). Either stops dispatch here.
	Paused  bool   `json:"paused,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Tripped string `json:"tripped,omitempty"`
	Approve int    `json:"approve,omitempty"`
	// Attempt is the latest retry of the failed (0: none).
	Attempt int `json:"attempt,omitempty"`
	// Gen counts the changes of Paused and Attempt, sent down as Control;
	// OriginGen is the last Control applied from above.
	Gen       int  `json:"gen,omitempty"`
	OriginGen int  `json:"origin_gen,omitempty"`
	Rebase    bool `json:"rebase,omitempty"` // Base is to be taken again
	Base      Base `json:"base"`
	// Gates are the health gate's outcomes (health.go), by device job id
	// (so by attempt): "" passed, else why the device failed it. A device
	// job succeeded and not here awaits its gate (verifying). Never
	// changed in place: each update decodes a new map.
	Gates map[string]string `json:"gates,omitempty"`
}

// Held reports whether the part dispatches nothing now.
func (p *Part) Held() bool { return p.Paused || p.Tripped != "" }

// Refusal is a local device the part could not make a job for.
type Refusal struct {
	Path  model.Path `json:"path"`
	Error string     `json:"error"`
}

// Link is the part's state towards one provider.
type Link struct {
	Mount  model.Path          `json:"mount"`
	Target apitypes.BulkTarget `json:"target"`
	Scope  []model.Path        `json:"scope,omitempty"`
	Sent   bool                `json:"sent,omitempty"`
	// Error is the provider's refusal (final: nothing runs there).
	Error      string `json:"error,omitempty"`
	CancelSent bool   `json:"cancel_sent,omitempty"`
	// Ctl is the Gen of the last Control the provider took.
	Ctl int `json:"ctl,omitempty"`
}

// Progress is the variable ProgressVar of a part's context: the part's
// own counters (its node's devices), its state over its whole subtree,
// and the refusals of the links it sent to (by mount path, relative to
// its node).
type Progress struct {
	State    apitypes.BulkState    `json:"state"`
	Expanded bool                  `json:"expanded"`
	Counters apitypes.BulkCounters `json:"counters"`
	Errors   map[string]string     `json:"errors,omitempty"`
	// Waves are the part's own waves; Reason why it is paused; Attempt
	// and Gen the latest retry and Control it applied.
	Waves   []apitypes.BulkWave `json:"waves,omitempty"`
	Reason  string              `json:"reason,omitempty"`
	Attempt int                 `json:"attempt,omitempty"`
}

// Tree is what the service needs of the model; *model.Model implements it.
type Tree interface {
	Get(p model.Path) (*model.Context, error)
	Children(p model.Path, after string, limit int) ([]model.Child, error)
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
	Events(p model.Path, q model.EventQuery) ([]model.Event, error)
	RegisterUpdater(kind string, fn model.RecordUpdater)
}

// Config is what New needs.
type Config struct {
	Tree   Tree
	Search func(ctx context.Context, q model.SearchQuery) (model.SearchPage, error)
	Calls  *calls.Service
	Jobs   *jobs.Service
	Links  Links // nil: no provider links
	Logger *slog.Logger
	Now    func() time.Time
	// Leading, if set, tells whether this replica of a cluster leads:
	// only the leader works on parts. Nil: always.
	Leading    func() bool
	Tick       time.Duration // how often progress is counted (default 250 ms)
	Registerer prometheus.Registerer
}

// Service keeps this node's parts of bulk jobs. It is safe for
// concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	parts  map[string]*Part                        // not Finished, by id
	devJob map[string]map[string]apitypes.JobState // bulk id → device job id → last state seen
	last   map[string]string                       // bulk id → progress last written (JSON)
	lastAt map[string]time.Time                    // bulk id → when

	created     *prometheus.CounterVec
	dispatched  prometheus.Counter
	wavesOpened prometheus.Counter
	giveUps     prometheus.Counter
	paused      *prometheus.CounterVec
	gated       *prometheus.CounterVec

	pace     map[string]*pace    // bulk id → its dispatch rate's state
	firstIDs map[string][]string // bulk id → its members' first device job ids
	// okAt is when device jobs awaiting their health gate succeeded
	// (read once from their records): bulk id → device job id → time.
	okAt map[string]map[string]time.Time

	// decoded holds parts as last decoded, by id, with a hash of their
	// record: a part of many devices is large, and read often (the work
	// loop's rounds, every GET).
	decMu   sync.Mutex
	decoded map[string]decodedPart

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// New loads the parts not finished; Start runs them.
func New(cfg Config) (*Service, error) {
	if cfg.Tree == nil || cfg.Search == nil || cfg.Calls == nil || cfg.Jobs == nil {
		return nil, errors.New("bulk: Tree, Search, Calls and Jobs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", "bulk"),
		parts: map[string]*Part{}, devJob: map[string]map[string]apitypes.JobState{}, last: map[string]string{}, lastAt: map[string]time.Time{},
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bulk_jobs_created_total",
			Help: "Bulk jobs created on this node: issued here (origin=local) or received from a consumer (origin=peer).",
		}, []string{"origin"}),
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_bulk_device_jobs_dispatched_total",
			Help: "Device jobs created on this node for bulk jobs.",
		}),
		wavesOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_bulk_waves_opened_total",
			Help: "Waves of bulk jobs opened on this node after the first (each node opens its own part's waves).",
		}),
		giveUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_bulk_links_given_up_total",
			Help: "Links of bulk jobs given up on this node: the provider took its part but did not report it done by the deadline and a minute.",
		}),
		paused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bulk_jobs_paused_total",
			Help: "Parts of bulk jobs paused on this node, by reason: max_failures, success_threshold, approval, operator (here or from above).",
		}, []string{"reason"}),
		gated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bulk_health_gate_total",
			Help: "Devices of bulk jobs whose health gate was decided on this node, by result: passed, failed.",
		}, []string{"result"}),
		pace: map[string]*pace{}, firstIDs: map[string][]string{}, okAt: map[string]map[string]time.Time{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.created, s.dispatched, s.wavesOpened, s.giveUps, s.paused, s.gated)
	}
	cfg.Tree.RegisterUpdater(KindBulk, Update)
	if err := s.reload(); err != nil {
		return nil, err
	}
	go s.loop()
	return s, nil
}

// reload replaces the parts in memory with the records' parts not
// finished, and their device jobs' states with the jobs' records: at
// start, and when a replica of a cluster starts to lead (the parts and
// jobs changed through other replicas are then in the records only).
func (s *Service) reload() error {
	parts := map[string]*Part{}
	devJob := map[string]map[string]apitypes.JobState{}
	err := s.cfg.Tree.Records(KindBulk, func(key string, b []byte) error {
		p := new(Part)
		if err := json.Unmarshal(b, p); err != nil {
			s.log.Warn("skipping a damaged bulk job record", "bulk", key, "err", err)
			return nil
		}
		if !p.Finished {
			parts[p.ID] = p
			devJob[p.ID] = map[string]apitypes.JobState{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bulk: load: %w", err)
	}
	if len(parts) > 0 {
		err = s.cfg.Jobs.List(func(j jobs.Job) bool {
			if m := devJob[j.Bulk]; j.Bulk != "" && m != nil {
				m[j.ID] = j.State
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("bulk: load device jobs: %w", err)
		}
	}
	s.mu.Lock()
	s.parts, s.devJob, s.last, s.lastAt = parts, devJob, map[string]string{}, map[string]time.Time{}
	s.mu.Unlock()
	return nil
}

// adopt takes into memory the parts of the records not finished that it
// does not hold: parts created, or received, through another replica of
// a cluster. Their device jobs, if another replica made some, are read
// from the jobs' records.
func (s *Service) adopt() error {
	var found []*Part
	err := s.cfg.Tree.Records(KindBulk, func(key string, b []byte) error {
		s.mu.Lock()
		_, known := s.parts[key]
		s.mu.Unlock()
		if known {
			return nil
		}
		p := new(Part)
		if json.Unmarshal(b, p) == nil && !p.Finished {
			found = append(found, p)
		}
		return nil
	})
	if err != nil || len(found) == 0 {
		return err
	}
	devJob := map[string]map[string]apitypes.JobState{}
	for _, p := range found {
		devJob[p.ID] = map[string]apitypes.JobState{}
	}
	err = s.cfg.Jobs.List(func(j jobs.Job) bool {
		if m := devJob[j.Bulk]; j.Bulk != "" && m != nil {
			m[j.ID] = j.State
		}
		return true
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, p := range found {
		if _, known := s.parts[p.ID]; !known {
			s.parts[p.ID], s.devJob[p.ID] = p, devJob[p.ID]
		}
	}
	s.mu.Unlock()
	return nil
}

// Close stops the work loop. Calling it twice is safe.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *Service) clock() time.Time { return s.cfg.Now().UTC().Round(0) }

func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// IsID reports whether id has the form of a bulk job's id.
func IsID(id string) bool {
	if len(id) != 21 || id[0] != 'b' {
		return false
	}
	_, err := xid.FromString(id[1:])
	return err == nil
}

// Create issues a bulk job on this node for principal p, who must hold
// the operator role on what the target selects (see Authorize).
func (s *Service) Create(ctx context.Context, p *auth.Principal, nb apitypes.NewBulkJob, deadline time.Time) (*Part, error) {
	if err := model.ValidateName(nb.Function); err != nil {
		return nil, fmt.Errorf("%w: function %q: %v", model.ErrInvalid, nb.Function, err)
	}
	t, err := ParseTarget(nb.Target)
	if err != nil {
		return nil, err
	}
	if err := Authorize(p, t, auth.RoleOperator); err != nil {
		return nil, err
	}
	args, err := checkArgs(nb.Args)
	if err != nil {
		return nil, err
	}
	if _, err := ParseRollout(nb.Rollout); err != nil {
		return nil, err
	}
	now := s.clock()
	switch {
	case deadline.IsZero():
		deadline = now.Add(jobs.DefaultDeadline)
	case !deadline.After(now):
		return nil, fmt.Errorf("%w: deadline is in the past", model.ErrInvalid)
	case deadline.Sub(now) > jobs.MaxDeadline:
		return nil, fmt.Errorf("%w: deadline more than %v ahead", model.ErrInvalid, jobs.MaxDeadline)
	}
	part := &Part{
		Spec: Spec{
			ID: "b" + xid.NewWithTime(now).String(), Function: nb.Function, Args: args, Target: nb.Target,
			Rollout: nb.Rollout, Deadline: deadline.UTC().Round(0), CreatedBy: p.User, Created: now,
		},
		Tenant: p.Tenant, System: p.System, User: p.User, Grants: p.Grants,
	}
	if p.System {
		part.Tenant = ""
	}
	if err := s.begin(ctx, part); err != nil {
		return nil, err
	}
	s.created.WithLabelValues("local").Inc()
	s.log.Info("bulk job created", "bulk", part.ID, "function", part.Function, "by", part.CreatedBy)
	return part, nil
}

// Authorize checks that p holds role on what t selects: its prefix, and
// every explicit path; and that p may name t's tenant.
func Authorize(p *auth.Principal, t Target, role auth.Role) error {
	if t.Tenant != "" && !p.System && t.Tenant != p.Tenant {
		return fmt.Errorf("%w: only system administrators target another tenant", auth.ErrForbidden)
	}
	if t.Paths == nil {
		if !p.Can(role, t.Prefix) {
			return fmt.Errorf("%w: a bulk job on %s needs the %s role there", auth.ErrForbidden, t.Prefix, role)
		}
		return nil
	}
	for _, path := range t.Paths {
		if !p.Can(role, path) {
			return fmt.Errorf("%w: a bulk job on %s needs the %s role there", auth.ErrForbidden, path, role)
		}
	}
	return nil
}

// Receive creates or cancels this node's part of a bulk job sent by
// consumer for id. scope is what this node publishes to that consumer:
// the job never runs outside it. A create of a part already here is
// done (the sender tries again until it hears so).
func (s *Service) Receive(ctx context.Context, consumer string, id Identity, scope []model.Path, req Request) error {
	if !IsID(req.Spec.ID) {
		return fmt.Errorf("%w: bulk job id %q", model.ErrInvalid, req.Spec.ID)
	}
	switch req.Action {
	case ActionControl, ActionCancel:
		// Only the consumer a part came from acts on it, and for the
		// tenant it runs for: another consumer granted operate here (or a
		// hostile one) changes neither a job issued here nor one it did
		// not send.
		part, err := s.Get(req.Spec.ID)
		if err != nil {
			return nil // nothing here to change
		}
		if part.Origin != consumer || (!id.System && (part.System || part.Tenant != id.Tenant)) {
			return fmt.Errorf("%w: bulk job %s was not sent here by %s for this tenant", auth.ErrForbidden, req.Spec.ID, consumer)
		}
	}
	switch req.Action {
	case ActionControl:
		if req.Control == nil {
			return fmt.Errorf("%w: a control request without its control", model.ErrInvalid)
		}
		_, err := s.update(ctx, req.Spec.ID, change{Control: req.Control})
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		if err == nil {
			s.wake()
		}
		return err
	case ActionCancel:
		_, err := s.cancel(ctx, req.Spec.ID, id.User+"@"+consumer)
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		return err
	case ActionCreate:
	default:
		return fmt.Errorf("%w: bulk action %q", model.ErrInvalid, req.Action)
	}
	if _, err := s.Get(req.Spec.ID); err == nil {
		return nil
	}
	sp := req.Spec
	if err := model.ValidateName(sp.Function); err != nil {
		return fmt.Errorf("%w: function %q: %v", model.ErrInvalid, sp.Function, err)
	}
	if _, err := ParseTarget(sp.Target); err != nil {
		return err
	}
	if _, err := ParseRollout(sp.Rollout); err != nil {
		return err
	}
	args, err := checkArgs(sp.Args)
	if err != nil {
		return err
	}
	sp.Args = args
	if sp.Scope != nil {
		sp.Scope = model.IntersectSubtrees(sp.Scope, scope)
	} else {
		sp.Scope = slices.Clone(scope)
	}
	if sp.Scope == nil {
		sp.Scope = []model.Path{} // nothing allowed
	}
	if id.User != "" {
		sp.CreatedBy = id.User + "@" + consumer
	} else {
		sp.CreatedBy = consumer
	}
	fp := calls.FederationPrincipal(id.User, id.Tenant, id.System)
	part := &Part{Spec: sp, Tenant: id.Tenant, System: id.System, User: id.User, Grants: fp.Grants, Origin: consumer}
	if id.System {
		part.Tenant = ""
	}
	if err := s.begin(ctx, part); err != nil {
		return err
	}
	s.created.WithLabelValues("peer").Inc()
	s.log.Info("bulk job received", "bulk", part.ID, "function", part.Function, "from", consumer, "by", part.CreatedBy)
	return nil
}

// begin stores a new part and its context, then hands it to the loop.
func (s *Service) begin(ctx context.Context, part *Part) error {
	b, err := json.Marshal(change{Create: part})
	if err != nil {
		return err
	}
	prog := Progress{State: apitypes.BulkRunning}
	ctxMut, err := s.progressMutation(part, prog)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.parts[part.ID]; ok {
		return nil
	}
	_, err = s.cfg.Tree.Apply(ctx, model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: KindBulk, Key: part.ID, Value: b}}, ctxMut)
	if errors.Is(err, model.ErrConflict) {
		return nil // received again: the part is there
	}
	if err != nil {
		return fmt.Errorf("bulk: store %s: %w", part.ID, err)
	}
	s.parts[part.ID] = part
	s.devJob[part.ID] = map[string]apitypes.JobState{}
	s.wake()
	return nil
}

// progressMutation is the put of part's context with progress prog.
func (s *Service) progressMutation(part *Part, prog Progress) (model.Mutation, error) {
	raw, err := json.Marshal(prog)
	if err != nil {
		return model.Mutation{}, err
	}
	v, err := model.NewVariable(raw, s.clock())
	if err != nil {
		return model.Mutation{}, err
	}
	return model.Mutation{
		Op: model.OpPut, Path: jobs.BulkPath(part.ID), Type: ContextType, Tenant: part.Tenant,
		Labels: map[string]string{JobLabel: part.ID}, Variables: map[string]model.Variable{ProgressVar: v},
	}, nil
}

// Get returns this node's part of bulk job id as its record has it.
func (s *Service) Get(id string) (*Part, error) {
	if !IsID(id) {
		return nil, fmt.Errorf("%w: bulk job %q", model.ErrNotFound, id)
	}
	if s.cfg.Leading == nil {
		// Not a replica of a cluster: every change of a part not finished
		// is made by this service, which holds it as written (update).
		s.mu.Lock()
		p, ok := s.parts[id]
		s.mu.Unlock()
		if ok {
			return clonePart(p), nil
		}
	}
	b, err := s.cfg.Tree.Record(KindBulk, id)
	if errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("%w: bulk job %q", model.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	sum := xxhash.Sum64(b)
	s.decMu.Lock()
	d, ok := s.decoded[id]
	s.decMu.Unlock()
	if ok && d.sum == sum && d.size == len(b) {
		return clonePart(d.part), nil
	}
	p := new(Part)
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("bulk: job %s: %w", id, err)
	}
	s.decMu.Lock()
	if s.decoded == nil || len(s.decoded) >= maxDecoded {
		s.decoded = map[string]decodedPart{}
	}
	s.decoded[id] = decodedPart{sum: sum, size: len(b), part: clonePart(p)}
	s.decMu.Unlock()
	return p, nil
}

// decodedPart is a part as decoded from a record of this size and hash.
type decodedPart struct {
	sum  uint64
	size int
	part *Part
}

// maxDecoded bounds the parts kept decoded.
const maxDecoded = 64

// Cancel cancels bulk job id here and, through its links, below: device
// jobs not final are cancelled. Cancelling a cancelled or finished job
// is a conflict.
func (s *Service) Cancel(ctx context.Context, id, by string) (*Part, error) {
	return s.cancel(ctx, id, by)
}

func (s *Service) cancel(ctx context.Context, id, by string) (*Part, error) {
	if !IsID(id) {
		return nil, fmt.Errorf("%w: bulk job %q", model.ErrNotFound, id)
	}
	out, err := s.update(ctx, id, change{Cancel: true})
	if err != nil {
		return nil, err
	}
	s.log.Info("bulk job cancelled", "bulk", id, "by", by)
	s.wake()
	return out, nil
}

// update proposes change c of part id, with extra mutations in the same
// commit, and returns the part as the log wrote it; memory follows.
func (s *Service) update(ctx context.Context, id string, c change, extra ...model.Mutation) (*Part, error) {
	arg, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	muts := append([]model.Mutation{{Op: model.OpUpdateRecord, Record: &model.Record{Kind: KindBulk, Key: id, Value: arg}}}, extra...)
	es, err := s.cfg.Tree.Apply(ctx, muts...)
	if err != nil {
		if errors.Is(err, model.ErrConflict) || errors.Is(err, model.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("bulk: store %s: %w", id, err)
	}
	if len(es) == 0 || es[0].Mutation.Record == nil {
		return nil, fmt.Errorf("bulk: store %s: no record logged", id)
	}
	next := new(Part)
	if err := json.Unmarshal(es[0].Mutation.Record.Value, next); err != nil {
		return nil, fmt.Errorf("bulk: store %s: %w", id, err)
	}
	if _, ok := s.parts[id]; ok || !next.Finished {
		if !ok {
			// Back in the loop (a retry of a finished part): its device
			// jobs' states first, which the rollout counts from.
			dj := map[string]apitypes.JobState{}
			err := s.cfg.Jobs.List(func(j jobs.Job) bool {
				if j.Bulk == id {
					dj[j.ID] = j.State
				}
				return true
			})
			if err != nil {
				return nil, fmt.Errorf("bulk: device jobs of %s: %w", id, err)
			}
			s.devJob[id] = dj
		}
		s.parts[id] = next
		if s.devJob[id] == nil {
			s.devJob[id] = map[string]apitypes.JobState{}
		}
	}
	if next.Finished {
		delete(s.parts, id)
		delete(s.devJob, id)
		delete(s.last, id)
		delete(s.lastAt, id)
		delete(s.pace, id)
		delete(s.firstIDs, id)
		delete(s.okAt, id)
	}
	return clonePart(next), nil
}

func clonePart(p *Part) *Part {
	c := *p
	c.Refused = slices.Clone(p.Refused)
	c.Scope = slices.Clone(p.Scope)
	c.Members = slices.Clip(p.Members) // never changed in place
	if p.Links != nil {
		c.Links = make(map[string]*Link, len(p.Links))
		for k, l := range p.Links {
			lc := *l
			c.Links[k] = &lc
		}
	}
	return &c
}

func checkArgs(a json.RawMessage) (json.RawMessage, error) {
	if len(a) == 0 || string(a) == "null" {
		return json.RawMessage("{}"), nil
	}
	if len(a) > jobs.MaxArgsBytes {
		return nil, fmt.Errorf("%w: args larger than %d bytes", model.ErrInvalid, jobs.MaxArgsBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(a, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: args must be a JSON object", model.ErrInvalid)
	}
	if err := model.CheckValue(a); err != nil {
		return nil, fmt.Errorf("args: %w", err)
	}
	b, _ := json.Marshal(obj)
	return b, nil
}
