// Package alerts decides alerts where the data is born: rules applied to
// the devices of this node's own tree (never to mirrors), evaluated on
// the model's changes and on a ticker, and alerts written as contexts
// under /alerts, so that they flow up the federation like any change. It
// also acknowledges and silences them, and notifies receivers (webhooks)
// of the alerts of the whole tree, mirrors included, grouped as
// Alertmanager groups them (docs/alerts.md).
//
// Goroutines: the evaluator (run) owns the engine, the rules and every
// write of alerts; the notifier (notify.go) owns the groups and sends.
// Neither runs on the goroutines that commit to the model or ingest MQTT:
// the model's commit hook (Observe) only hands changes to a bounded
// queue. When the queue is full the change is dropped, counted
// (strata_alerts_dropped_total) and the next tick rescans every rule's
// devices from the tree, so thresholds, offline and rates converge again;
// an event dropped that way is lost to event rules.
//
// On a cluster only the leader evaluates and notifies (Config.Leading);
// one that starts to lead reloads the rules, the active alerts and the
// notification state from the model.
package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/xid"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// Record kinds.
const (
	KindRule   = "alert-rule"   // key: rule id; value: apitypes.AlertRule (JSON)
	KindNotify = "alert-notify" // key: group id; value: groupState (JSON)
)

// Defaults of Config.
const (
	DefaultInterval          = time.Second
	DefaultQueue             = 65536
	DefaultResolvedRetention = 24 * time.Hour
)

// MaxRules bounds the rules of one node.
const MaxRules = 1000

// Tree is what the service needs of the model; *model.Model implements it.
type Tree interface {
	Get(p model.Path) (*model.Context, error)
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
}

// Config is what New needs.
type Config struct {
	// Node is this node's name: the label node of its alerts.
	Node   string
	Tree   Tree
	Search func(ctx context.Context, q model.SearchQuery) (model.SearchPage, error)
	Logger *slog.Logger
	Now    func() time.Time
	// Leading, if set, tells whether this replica of a cluster leads.
	Leading func() bool
	// Interval is how often durations are checked (pending alerts fire,
	// event alerts resolve) and notification groups flushed.
	Interval time.Duration
	// Queue bounds the changes waiting for the evaluator.
	Queue int
	// ResolvedRetention is how long a resolved alert's context is kept.
	ResolvedRetention time.Duration
	Receivers         []Receiver
	Routes            []Route
	Registerer        prometheus.Registerer
}

// Actor is who acts on a rule or an alert: a tenant's user sees only its
// tenant's alerts and rules; a system user all of them.
type Actor struct {
	User   string
	Tenant string
	System bool
}

// Sees reports whether a may see something of tenant t.
func (a Actor) Sees(t string) bool { return a.System || (t != "" && t == a.Tenant) }

// Service evaluates this node's rules and notifies receivers.
type Service struct {
	cfg Config
	log *slog.Logger

	queue    chan item
	overflow atomic.Bool
	reqs     chan func(leading bool)
	rulesCh  chan struct{}
	wants    atomic.Pointer[wanted]

	eng      *engine
	lastScan time.Time
	lastSwp  time.Time

	notifier *notifier
	m        *metrics

	startOnce sync.Once
	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
}

// wanted is what the evaluator wants of the tree's changes, so that the
// commit hook drops the others at once.
type wanted struct {
	vars   map[string]bool
	events bool
	any    bool
}

// item is one change of a device for the evaluator.
type item struct {
	path  model.Path
	vars  map[string]model.Variable
	event *model.Event
	gone  bool
	at    time.Time
}

// New checks cfg and returns a service; Start runs it.
func New(cfg Config) (*Service, error) {
	if cfg.Tree == nil || cfg.Search == nil {
		return nil, errors.New("alerts: Tree and Search are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.ResolvedRetention <= 0 {
		cfg.ResolvedRetention = DefaultResolvedRetention
	}
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", "alerts"),
		queue: make(chan item, cfg.Queue), reqs: make(chan func(bool)), rulesCh: make(chan struct{}, 1),
		eng: newEngine(cfg.Node), stop: make(chan struct{}),
	}
	s.wants.Store(&wanted{})
	s.m = newMetrics()
	var err error
	if s.notifier, err = newNotifier(s, cfg.Receivers, cfg.Routes); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start runs the evaluator and the notifier.
func (s *Service) Start() {
	s.startOnce.Do(func() {
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			s.run()
		}()
		go func() {
			defer s.wg.Done()
			s.notifier.run()
		}()
	})
}

// Close stops both and waits for them. Calling it twice is safe.
func (s *Service) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Round(0) }

func (s *Service) leading() bool { return s.cfg.Leading == nil || s.cfg.Leading() }

// Observe is the model's commit hook: it hands the changes the rules and
// the notifier want to their queues, never waiting.
func (s *Service) Observe(es []model.Entry) {
	w := s.wants.Load()
	for i := range es {
		m := &es[i].Mutation
		switch m.Op {
		case model.OpPutRecord, model.OpDeleteRecord:
			if m.Record != nil && m.Record.Kind == KindRule {
				select {
				case s.rulesCh <- struct{}{}:
				default:
				}
			}
			continue
		}
		if IsAlertPath(m.Path) {
			s.notifier.observe(m.Path)
			continue
		}
		if !w.any || m.Path.Within("/peers") || m.Path.Within("/jobs") {
			continue
		}
		it := item{path: m.Path, at: es[i].Time}
		switch m.Op {
		case model.OpPut:
			keep := false
			for name := range m.Variables {
				if w.vars[name] {
					keep = true
					break
				}
			}
			if !keep {
				continue
			}
			it.vars = m.Variables
		case model.OpEvent:
			if !w.events || m.Event == nil {
				continue
			}
			ev := *m.Event
			it.event = &ev
		case model.OpDelete:
			it.gone = true
		default:
			continue
		}
		select {
		case s.queue <- it:
		default:
			s.overflow.Store(true)
			s.m.dropped.Inc()
		}
	}
}

// IsAlertPath reports whether p names an alert's context: /alerts/<id>
// here, or under a mount (/peers/<name>/.../alerts/<id>).
func IsAlertPath(p model.Path) bool {
	segs := p.Segments()
	n := len(segs)
	if n < 2 || segs[n-2] != "alerts" {
		return false
	}
	return n == 2 || segs[0] == "peers"
}

// run is the evaluator.
func (s *Service) run() {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	leading := false
	take := func() {
		if s.leading() {
			if err := s.load(); err != nil {
				s.log.Warn("alerts: loading rules and alerts", "err", err)
				return
			}
			leading = true
		}
	}
	take()
	for {
		select {
		case <-s.stop:
			return
		case it := <-s.queue:
			if !leading {
				continue
			}
			muts := s.handle(it)
		drain:
			for range 1023 {
				select {
				case it := <-s.queue:
					muts = append(muts, s.handle(it)...)
				default:
					break drain
				}
			}
			s.write(muts)
		case fn := <-s.reqs:
			fn(leading)
		case <-s.rulesCh:
			if leading {
				s.write(s.reloadRules())
			}
		case <-t.C:
			if leading && !s.leading() {
				leading = false
				s.eng = newEngine(s.cfg.Node)
				continue
			}
			if !leading {
				take()
				continue
			}
			s.tick(s.now())
		}
	}
}

// tick is one round of the evaluator at now.
func (s *Service) tick(now time.Time) {
	var muts []model.Mutation
	if s.overflow.Swap(false) {
		muts = append(muts, s.scan(nil)...)
	}
	for _, m := range s.eng.tick(now) {
		if _, esc := m.Labels[LabelEscalation]; esc && s.ackedElsewhere(m.Path) {
			continue
		}
		muts = append(muts, m)
	}
	s.write(muts)
	if now.Sub(s.lastSwp) >= min(time.Minute, s.cfg.ResolvedRetention/2) {
		s.lastSwp = now
		s.sweep(now)
	}
}

// ackedElsewhere reports whether the alert at p was acknowledged in a
// way the engine did not see (through another replica of a cluster):
// the engine then learns it, and the escalation is dropped.
func (s *Service) ackedElsewhere(p model.Path) bool {
	c, err := s.cfg.Tree.Get(p)
	if err != nil || string(c.Variables["acked"].Value) != "true" {
		return false
	}
	s.eng.acked(string(p[len(Root)+1:]))
	return true
}

// handle evaluates one change.
func (s *Service) handle(it item) []model.Mutation {
	if it.gone {
		return s.eng.forget(it.path, it.at)
	}
	c, err := s.cfg.Tree.Get(it.path)
	if err != nil {
		return nil
	}
	if it.event != nil {
		return s.eng.event(c, it.event, it.at)
	}
	return s.eng.observe(c, it.vars, nil)
}

// write applies the evaluator's mutations: together, or one by one when
// together they fail (one bad mutation must not hold back the others).
func (s *Service) write(muts []model.Mutation) {
	defer s.gauge()
	if len(muts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.cfg.Tree.Apply(ctx, muts...); err == nil {
		s.counted(muts)
		return
	}
	for _, m := range muts {
		if _, err := s.cfg.Tree.Apply(ctx, m); err != nil {
			if !errors.Is(err, model.ErrClosed) {
				s.log.Warn("alerts: writing an alert", "path", m.Path, "err", err)
			}
			continue
		}
		s.counted([]model.Mutation{m})
	}
}

func (s *Service) counted(muts []model.Mutation) {
	for _, m := range muts {
		if v, ok := m.Variables["state"]; ok {
			s.m.transitions.WithLabelValues(stringVar(v)).Inc()
		}
	}
}

func (s *Service) gauge() {
	p, f := s.eng.counts()
	s.m.active.WithLabelValues(apitypes.AlertPending).Set(float64(p))
	s.m.active.WithLabelValues(apitypes.AlertFiring).Set(float64(f))
	s.m.rules.Set(float64(len(s.eng.rules)))
	if d := s.eng.evals; d > 0 {
		s.m.evaluations.Add(float64(d))
		s.eng.evals = 0
	}
}

// load reads the rules and the active alerts from the tree and scans
// every rule's devices.
func (s *Service) load() error {
	rules, err := s.readRules()
	if err != nil {
		return err
	}
	e := newEngine(s.cfg.Node)
	e.rules = rules
	var ended []model.Mutation
	err = s.each(model.SearchQuery{Prefix: Root, Type: AlertType}, func(c *model.Context) {
		if c.Path.Within("/peers") || !IsAlertPath(c.Path) {
			return
		}
		if _, ok := rules[c.Labels[LabelRule]]; ok {
			e.restore(c)
			return
		}
		// An active alert of a rule deleted meanwhile ends.
		switch stringVar(c.Variables["state"]) {
		case apitypes.AlertPending:
			ended = append(ended, model.Mutation{Op: model.OpDelete, Path: c.Path})
		case apitypes.AlertFiring:
			ended = append(ended, resolve(&active{id: string(c.Path[len(Root)+1:])}, nil, s.now()))
		}
	})
	if err != nil {
		return err
	}
	s.eng = e
	s.setWanted()
	s.write(ended)
	s.write(s.scan(nil))
	return nil
}

// readRules reads every rule record.
func (s *Service) readRules() (map[string]*Rule, error) {
	rules := map[string]*Rule{}
	err := s.cfg.Tree.Records(KindRule, func(key string, b []byte) error {
		var spec apitypes.AlertRule
		if err := json.Unmarshal(b, &spec); err != nil {
			s.log.Warn("alerts: skipping a damaged rule", "rule", key, "err", err)
			return nil
		}
		r, err := NewRule(spec)
		if err != nil {
			s.log.Warn("alerts: skipping an invalid rule", "rule", key, "err", err)
			return nil
		}
		rules[key] = r
		return nil
	})
	return rules, err
}

// reloadRules takes the rules' records again: a rule deleted ends its
// alerts; a new one scans its devices.
func (s *Service) reloadRules() []model.Mutation {
	rules, err := s.readRules()
	if err != nil {
		s.log.Warn("alerts: reading rules", "err", err)
		return nil
	}
	changed, muts := s.eng.setRules(rules, s.now())
	s.setWanted()
	if len(changed) > 0 {
		only := map[string]bool{}
		for _, id := range changed {
			only[id] = true
		}
		muts = append(muts, s.scan(only)...)
	}
	return muts
}

func (s *Service) setWanted() {
	w := &wanted{vars: map[string]bool{}}
	for _, r := range s.eng.rules {
		w.any = true
		switch r.Spec.Kind {
		case apitypes.AlertKindThreshold, apitypes.AlertKindRate:
			w.vars[r.Spec.Var] = true
		case apitypes.AlertKindOffline:
			w.vars["online"] = true
		case apitypes.AlertKindEvent:
			w.events = true
		}
	}
	s.wants.Store(w)
}

// scan evaluates the rules in only (nil: all) on the current state of
// their devices.
func (s *Service) scan(only map[string]bool) []model.Mutation {
	var muts []model.Mutation
	for _, id := range s.eng.ruleIDs() {
		if only != nil && !only[id] {
			continue
		}
		r := s.eng.rules[id]
		if r.Spec.Kind == apitypes.AlertKindEvent {
			continue
		}
		q := model.SearchQuery{Prefix: r.prefix, Type: r.typ, Labels: r.Spec.Selector.Labels}
		if r.Spec.Tenant != "" {
			q.Tenants = []string{r.Spec.Tenant}
		}
		err := s.each(q, func(c *model.Context) {
			muts = append(muts, s.eng.observe(c, c.Variables, map[string]bool{id: true})...)
		})
		if err != nil {
			s.log.Warn("alerts: scanning a rule's devices", "rule", id, "err", err)
		}
	}
	return muts
}

// each calls fn for every context q finds, page by page.
func (s *Service) each(q model.SearchQuery, fn func(*model.Context)) error {
	q.Limit = model.MaxSearchLimit
	for {
		page, err := s.cfg.Search(context.Background(), q)
		if err != nil {
			return err
		}
		for _, c := range page.Contexts {
			fn(c)
		}
		if page.Next == "" {
			return nil
		}
		q.After = page.Next
	}
}

// sweep deletes the resolved alerts older than the retention.
func (s *Service) sweep(now time.Time) {
	cut := now.Add(-s.cfg.ResolvedRetention)
	var muts []model.Mutation
	err := s.each(model.SearchQuery{Prefix: Root, Type: AlertType, Vars: map[string]json.RawMessage{"state": json.RawMessage(`"resolved"`)}},
		func(c *model.Context) {
			if !IsAlertPath(c.Path) || c.Path.Within("/peers") {
				return
			}
			at, err := time.Parse(time.RFC3339Nano, stringVar(c.Variables["resolved_at"]))
			if err == nil && at.Before(cut) {
				muts = append(muts, model.Mutation{Op: model.OpDelete, Path: c.Path})
			}
		})
	if err != nil {
		s.log.Warn("alerts: retention", "err", err)
	}
	for len(muts) > 0 {
		n := min(len(muts), 512)
		s.write(muts[:n])
		muts = muts[n:]
	}
}

// Sweep runs the retention of resolved alerts now, on the evaluator.
func (s *Service) Sweep(ctx context.Context) error {
	return s.do(ctx, func(bool) error {
		s.sweep(s.now())
		return nil
	})
}

// do runs fn on the evaluator's goroutine and returns its error.
func (s *Service) do(ctx context.Context, fn func(leading bool) error) error {
	res := make(chan error, 1)
	select {
	case s.reqs <- func(l bool) { res <- fn(l) }:
	case <-s.stop:
		return model.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-s.stop:
		return model.ErrClosed
	}
}

// CreateRule stores a new rule for actor: a tenant's user makes a rule
// of its tenant; a system user one of spec.Tenant ("": every tenant).
func (s *Service) CreateRule(ctx context.Context, a Actor, spec apitypes.AlertRule) (apitypes.AlertRule, error) {
	if !a.System {
		if spec.Tenant != "" && spec.Tenant != a.Tenant {
			return apitypes.AlertRule{}, fmt.Errorf("%w: a rule cannot be made for another tenant", model.ErrInvalid)
		}
		spec.Tenant = a.Tenant
	}
	n := 0
	if err := s.cfg.Tree.Records(KindRule, func(string, []byte) error { n++; return nil }); err != nil {
		return apitypes.AlertRule{}, err
	}
	if n >= MaxRules {
		return apitypes.AlertRule{}, fmt.Errorf("%w: this node has %d rules already", model.ErrConflict, n)
	}
	now := s.now()
	spec.ID, spec.CreatedBy, spec.Created = "r"+xid.NewWithTime(now).String(), a.User, now
	r, err := NewRule(spec)
	if err != nil {
		return apitypes.AlertRule{}, err
	}
	b, err := json.Marshal(r.Spec)
	if err != nil {
		return apitypes.AlertRule{}, err
	}
	if _, err := s.cfg.Tree.Apply(ctx, model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindRule, Key: r.Spec.ID, Value: b}}); err != nil {
		return apitypes.AlertRule{}, err
	}
	return r.Spec, nil
}

// Rules lists the rules actor sees, in id (creation) order.
func (s *Service) Rules(a Actor) ([]apitypes.AlertRule, error) {
	out := []apitypes.AlertRule{}
	err := s.cfg.Tree.Records(KindRule, func(key string, b []byte) error {
		var spec apitypes.AlertRule
		if json.Unmarshal(b, &spec) == nil && (a.System || spec.Tenant == a.Tenant && a.Tenant != "") {
			out = append(out, spec)
		}
		return nil
	})
	return out, err
}

// Rule returns rule id if actor sees it; ErrNotFound otherwise.
func (s *Service) Rule(a Actor, id string) (apitypes.AlertRule, error) {
	b, err := s.cfg.Tree.Record(KindRule, id)
	var spec apitypes.AlertRule
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err == nil && !a.System && (a.Tenant == "" || spec.Tenant != a.Tenant) {
		err = model.ErrNotFound
	}
	if err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return apitypes.AlertRule{}, fmt.Errorf("%w: alert rule %s", model.ErrNotFound, id)
		}
		return apitypes.AlertRule{}, err
	}
	return spec, nil
}

// DeleteRule deletes rule id (the caller checked the actor sees it); its
// active alerts resolve.
func (s *Service) DeleteRule(ctx context.Context, id string) error {
	_, err := s.cfg.Tree.Apply(ctx, model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: KindRule, Key: id}})
	return err
}

// Ack acknowledges this node's alert at p for actor.
func (s *Service) Ack(ctx context.Context, a Actor, p model.Path) (apitypes.Alert, error) {
	now := s.now()
	return s.act(ctx, a, p, map[string]model.Variable{
		"acked":    {Value: json.RawMessage("true"), Type: model.TypeBool, Time: now},
		"acked_by": strVar(a.User, now),
		"acked_at": timeVar(now),
	})
}

// Silence silences this node's alert at p until until (a time not after
// now lifts it).
func (s *Service) Silence(ctx context.Context, a Actor, p model.Path, until time.Time) (apitypes.Alert, error) {
	now := s.now()
	on := until.After(now)
	vars := map[string]model.Variable{
		"silenced":       {Value: json.RawMessage(fmt.Sprint(on)), Type: model.TypeBool, Time: now},
		"silenced_by":    strVar(a.User, now),
		"silenced_until": strVar("", now),
	}
	if on {
		vars["silenced_until"] = timeVar(until)
	}
	return s.act(ctx, a, p, vars)
}

// act writes vars on this node's alert at p, on the evaluator (so that
// the alert is not deleted by the retention in between), if actor sees
// it.
func (s *Service) act(ctx context.Context, a Actor, p model.Path, vars map[string]model.Variable) (apitypes.Alert, error) {
	var out apitypes.Alert
	err := s.do(ctx, func(bool) error {
		if !p.Within(Root) || !IsAlertPath(p) {
			return fmt.Errorf("%w: alert %s", model.ErrNotFound, p)
		}
		c, err := s.cfg.Tree.Get(p)
		if err == nil && (c.Type != AlertType || !a.Sees(c.Tenant)) {
			err = model.ErrNotFound
		}
		if err != nil {
			if errors.Is(err, model.ErrNotFound) {
				return fmt.Errorf("%w: alert %s", model.ErrNotFound, p)
			}
			return err
		}
		if _, err := s.cfg.Tree.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Variables: vars}); err != nil {
			return err
		}
		if string(vars["acked"].Value) == "true" {
			s.eng.acked(string(p[len(Root)+1:]))
		}
		c, err = s.cfg.Tree.Get(p)
		if err != nil {
			return err
		}
		out = AlertOf(c, s.now())
		return nil
	})
	return out, err
}

// AlertOf is alert context c as the API shows it, silences judged at now.
func AlertOf(c *model.Context, now time.Time) apitypes.Alert {
	v := c.Variables
	a := apitypes.Alert{
		Path: string(c.Path), Tenant: c.Tenant, Rule: c.Labels[LabelRule], Severity: c.Labels[LabelSeverity],
		Device: c.Labels[LabelDevice], Labels: c.Labels, State: stringVar(v["state"]),
		AckedBy: stringVar(v["acked_by"]), Summary: stringVar(v["summary"]),
	}
	if segs := c.Path.Segments(); len(segs) > 0 {
		a.ID = segs[len(segs)-1]
	}
	if x, ok := v["value"]; ok {
		a.Value = x.Value
	}
	a.Since, _ = time.Parse(time.RFC3339Nano, stringVar(v["since"]))
	a.Resolved, _ = time.Parse(time.RFC3339Nano, stringVar(v["resolved_at"]))
	a.Acked = string(v["acked"].Value) == "true"
	a.Escalation, _ = strconv.Atoi(c.Labels[LabelEscalation])
	if until, err := time.Parse(time.RFC3339Nano, stringVar(v["silenced_until"])); err == nil && until.After(now) {
		a.Silenced, a.SilencedUntil = string(v["silenced"].Value) == "true", until
	}
	return a
}
