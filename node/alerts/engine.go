package alerts

import (
	"encoding/json"
	"maps"
	"path"
	"slices"
	"strconv"
	"time"

	"github.com/rs/xid"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// The engine is the alerts' state machine, with no I/O and no clock of
// its own: it is told what the tree said (variables, events, deletions,
// each with its time) and what time it is (tick), and answers with the
// mutations of alert contexts to write. It is owned by one goroutine.
//
// Per rule and device at most one alert is active (pending or firing):
//
//	(none) ─condition holds─▶ pending ─held for `for`─▶ firing ─condition ends─▶ resolved
//	             │ (for = 0)                 │ condition ends
//	             └──────────────▶ firing     └─▶ (deleted: it never fired)
//
// An event rule's alert fires at the matching event and resolves `for`
// after the last one. A resolved alert is no longer active: the next
// time the condition holds makes a new alert, with a new id.

// key names the one active alert of a rule on a device.
type key struct {
	rule   string
	device model.Path
}

// active is an alert pending or firing.
type active struct {
	id     string
	state  string
	since  time.Time
	last   time.Time // event rules: the last matching event
	tenant string
	fired  time.Time
	acked  bool
	step   int // escalation steps reached
}

type sample struct {
	t time.Time
	v float64
}

type engine struct {
	node   string
	rules  map[string]*Rule
	active map[key]*active
	rates  map[key][]sample
	newID  func(time.Time) string
	// evals counts rule evaluations (for the metrics).
	evals uint64
}

func newEngine(node string) *engine {
	return &engine{node: node, rules: map[string]*Rule{}, active: map[key]*active{}, rates: map[key][]sample{},
		newID: func(t time.Time) string { return "a" + xid.NewWithTime(t).String() }}
}

// alertPath is the context of alert id.
func alertPath(id string) model.Path { return Root + "/" + model.Path(id) }

// counts returns the active alerts by state.
func (e *engine) counts() (pending, firing int) {
	for _, a := range e.active {
		if a.state == apitypes.AlertPending {
			pending++
		} else {
			firing++
		}
	}
	return
}

// observe evaluates the rules that select device c against the
// variables vars (a change of c, or its state when scanned), for the
// rules in only (nil: all).
func (e *engine) observe(c *model.Context, vars map[string]model.Variable, only map[string]bool) []model.Mutation {
	var out []model.Mutation
	for _, id := range e.ruleIDs() {
		r := e.rules[id]
		if (only != nil && !only[id]) || !r.selects(c) {
			continue
		}
		k := key{id, c.Path}
		switch r.Spec.Kind {
		case apitypes.AlertKindThreshold:
			v, ok := vars[r.Spec.Var]
			if !ok {
				continue
			}
			e.evals++
			x, num := number(v)
			out = append(out, e.condition(r, k, c, num && r.cmp(x, r.value), v.Value, v.Time)...)
		case apitypes.AlertKindOffline:
			v, ok := vars["online"]
			if !ok {
				continue
			}
			e.evals++
			out = append(out, e.condition(r, k, c, string(v.Value) == "false", v.Value, v.Time)...)
		case apitypes.AlertKindRate:
			v, ok := vars[r.Spec.Var]
			if !ok {
				continue
			}
			x, num := number(v)
			if !num {
				continue
			}
			e.evals++
			ss := e.rates[k]
			if n := len(ss); n > 0 && !v.Time.After(ss[n-1].t) {
				continue // the same sample again (a scan), or an older one
			}
			ss = append(ss, sample{v.Time, x})
			cut := 0
			for cut < len(ss)-1 && v.Time.Sub(ss[cut].t) > r.window {
				cut++
			}
			if len(ss)-cut > maxRateSamples {
				cut = len(ss) - maxRateSamples
			}
			ss = slices.Delete(ss, 0, cut)
			e.rates[k] = ss
			if len(ss) < 2 {
				continue
			}
			first, last := ss[0], ss[len(ss)-1]
			rate := (last.v - first.v) / last.t.Sub(first.t).Seconds()
			val, _ := json.Marshal(rate)
			out = append(out, e.condition(r, k, c, r.cmp(rate, r.value), val, v.Time)...)
		}
	}
	return out
}

// event evaluates the event rules that select device c against ev.
func (e *engine) event(c *model.Context, ev *model.Event, at time.Time) []model.Mutation {
	var out []model.Mutation
	if ev.Time.IsZero() {
		ev.Time = at
	}
	for _, id := range e.ruleIDs() {
		r := e.rules[id]
		if r.Spec.Kind != apitypes.AlertKindEvent || !r.selects(c) {
			continue
		}
		e.evals++
		if levelRank(ev.Level) < r.level {
			continue
		}
		if ok, _ := path.Match(r.Spec.Event, ev.Name); !ok {
			continue
		}
		k := key{id, c.Path}
		if a := e.active[k]; a != nil {
			if ev.Time.After(a.last) {
				// Recorded, so that a restart keeps the hold from here.
				a.last = ev.Time
				out = append(out, model.Mutation{Op: model.OpPut, Path: alertPath(a.id),
					Variables: map[string]model.Variable{"last_event": timeVar(a.last)}})
			}
			continue
		}
		name, _ := json.Marshal(ev.Name)
		a := &active{id: e.newID(ev.Time), state: apitypes.AlertFiring, since: ev.Time, last: ev.Time, tenant: c.Tenant, fired: ev.Time}
		e.active[k] = a
		out = append(out, e.create(r, k, a, name))
	}
	return out
}

// condition moves the alert of k by whether the rule's condition holds
// on c at t, val being the value observed.
func (e *engine) condition(r *Rule, k key, c *model.Context, holds bool, val json.RawMessage, t time.Time) []model.Mutation {
	a := e.active[k]
	switch {
	case holds && a == nil:
		a = &active{id: e.newID(t), state: apitypes.AlertPending, since: t, tenant: c.Tenant}
		if r.hold == 0 {
			a.state, a.fired = apitypes.AlertFiring, t
		}
		e.active[k] = a
		return []model.Mutation{e.create(r, k, a, val)}
	case !holds && a != nil && a.state == apitypes.AlertPending:
		delete(e.active, k)
		return []model.Mutation{{Op: model.OpDelete, Path: alertPath(a.id)}}
	case !holds && a != nil:
		delete(e.active, k)
		return []model.Mutation{resolve(a, val, t)}
	}
	return nil
}

// tick fires the pending alerts held long enough and resolves the event
// alerts whose last event is old enough, as of now.
func (e *engine) tick(now time.Time) []model.Mutation {
	var out []model.Mutation
	for _, k := range e.keys() {
		a, r := e.active[k], e.rules[k.rule]
		if r == nil {
			continue
		}
		switch {
		case a.state == apitypes.AlertPending && !now.Before(a.since.Add(r.hold)):
			a.state = apitypes.AlertFiring
			at := a.since.Add(r.hold)
			a.fired = at
			out = append(out, model.Mutation{Op: model.OpPut, Path: alertPath(a.id), Variables: map[string]model.Variable{
				"state": strVar(apitypes.AlertFiring, at), "fired_at": timeVar(at),
			}})
			out = append(out, e.escalate(r, a, now)...)
		case r.Spec.Kind == apitypes.AlertKindEvent && !now.Before(a.last.Add(r.hold)):
			delete(e.active, k)
			out = append(out, resolve(a, nil, a.last.Add(r.hold)))
		case a.state == apitypes.AlertFiring:
			out = append(out, e.escalate(r, a, now)...)
		}
	}
	return out
}

// escalate moves a firing alert not acknowledged to the last escalation
// step reached at now.
func (e *engine) escalate(r *Rule, a *active, now time.Time) []model.Mutation {
	if a.acked || a.fired.IsZero() {
		return nil
	}
	step := a.step
	for step < len(r.steps) && !now.Before(a.fired.Add(r.steps[step])) {
		step++
	}
	if step == a.step {
		return nil
	}
	a.step = step
	at := a.fired.Add(r.steps[step-1])
	n := strconv.Itoa(step)
	return []model.Mutation{{Op: model.OpPut, Path: alertPath(a.id), Labels: map[string]string{LabelEscalation: n},
		Variables: map[string]model.Variable{"escalation": {Value: json.RawMessage(n), Type: model.TypeNumber, Time: at},
			"escalated_at": timeVar(at)}}}
}

// acked tells the engine that alert id was acknowledged: it escalates no
// further.
func (e *engine) acked(id string) {
	for _, a := range e.active {
		if a.id == id {
			a.acked = true
		}
	}
}

// forget ends what the engine holds of device p (deleted): its alerts
// resolve at t.
func (e *engine) forget(p model.Path, t time.Time) []model.Mutation {
	var out []model.Mutation
	for _, k := range e.keys() {
		if k.device != p {
			continue
		}
		a := e.active[k]
		delete(e.active, k)
		if a.state == apitypes.AlertPending {
			out = append(out, model.Mutation{Op: model.OpDelete, Path: alertPath(a.id)})
		} else {
			out = append(out, resolve(a, nil, t))
		}
	}
	for k := range e.rates {
		if k.device == p {
			delete(e.rates, k)
		}
	}
	return out
}

// setRules replaces the rules; the alerts of rules gone end at t. It
// returns the ids of the rules that are new or changed (to be scanned).
func (e *engine) setRules(rules map[string]*Rule, t time.Time) (changed []string, out []model.Mutation) {
	for id, r := range rules {
		if old, ok := e.rules[id]; !ok || !sameSpec(old.Spec, r.Spec) {
			changed = append(changed, id)
		}
	}
	slices.Sort(changed)
	for _, k := range e.keys() {
		if nr, ok := rules[k.rule]; ok && !slices.Contains(changed, k.rule) {
			continue
		} else if ok && nr != nil && sameKind(e.rules[k.rule], nr) {
			continue // changed but of the same kind: the scan decides
		}
		a := e.active[k]
		delete(e.active, k)
		if a.state == apitypes.AlertPending {
			out = append(out, model.Mutation{Op: model.OpDelete, Path: alertPath(a.id)})
		} else {
			out = append(out, resolve(a, nil, t))
		}
	}
	for k := range e.rates {
		if _, ok := rules[k.rule]; !ok || slices.Contains(changed, k.rule) {
			delete(e.rates, k)
		}
	}
	e.rules = rules
	return changed, out
}

func sameKind(a, b *Rule) bool { return a != nil && b != nil && a.Spec.Kind == b.Spec.Kind }

func sameSpec(a, b apitypes.AlertRule) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// restore takes back an active alert found in the tree (after a
// restart).
func (e *engine) restore(c *model.Context) {
	st := stringVar(c.Variables["state"])
	if st != apitypes.AlertPending && st != apitypes.AlertFiring {
		return
	}
	k := key{c.Labels[LabelRule], model.Path(c.Labels[LabelDevice])}
	since, _ := time.Parse(time.RFC3339Nano, stringVar(c.Variables["since"]))
	a := &active{id: string(c.Path[len(Root)+1:]), state: st, since: since, last: since, tenant: c.Tenant}
	a.fired, _ = time.Parse(time.RFC3339Nano, stringVar(c.Variables["fired_at"]))
	a.acked = string(c.Variables["acked"].Value) == "true"
	a.step, _ = strconv.Atoi(c.Labels[LabelEscalation])
	if lv, ok := c.Variables["last_event"]; ok {
		if t, err := time.Parse(time.RFC3339Nano, stringVar(lv)); err == nil {
			a.last = t
		}
	}
	e.active[k] = a
}

// create is the mutation that writes a new alert's context.
func (e *engine) create(r *Rule, k key, a *active, val json.RawMessage) model.Mutation {
	labels := maps.Clone(r.Spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelRule] = r.Spec.ID
	labels[LabelName] = r.Spec.Name
	labels[LabelSeverity] = r.Spec.Severity
	labels[LabelDevice] = string(k.device)
	labels[LabelNode] = e.node
	vars := map[string]model.Variable{
		"state":    strVar(a.state, a.since),
		"since":    timeVar(a.since),
		"acked":    {Value: json.RawMessage("false"), Type: model.TypeBool, Time: a.since},
		"acked_by": strVar("", a.since),
		"silenced": {Value: json.RawMessage("false"), Type: model.TypeBool, Time: a.since},
		"summary":  strVar(r.summary(), a.since),
	}
	if v, err := model.NewVariable(val, a.since); err == nil && len(val) > 0 {
		vars["value"] = v
	}
	if a.state == apitypes.AlertFiring {
		vars["fired_at"] = timeVar(a.since)
	}
	if r.Spec.Kind == apitypes.AlertKindEvent {
		vars["last_event"] = timeVar(a.last)
	}
	return model.Mutation{Op: model.OpPut, Path: alertPath(a.id), Type: AlertType, Tenant: a.tenant, Labels: labels, Variables: vars}
}

// AlertType is the type of an alert's context.
const AlertType = "alert"

func resolve(a *active, val json.RawMessage, t time.Time) model.Mutation {
	vars := map[string]model.Variable{
		"state":       strVar(apitypes.AlertResolved, t),
		"resolved_at": timeVar(t),
	}
	if v, err := model.NewVariable(val, t); err == nil && len(val) > 0 {
		vars["value"] = v
	}
	return model.Mutation{Op: model.OpPut, Path: alertPath(a.id), Variables: vars}
}

func (e *engine) ruleIDs() []string {
	return slices.Sorted(maps.Keys(e.rules))
}

// keys are the active alerts' keys in a stable order.
func (e *engine) keys() []key {
	ks := slices.Collect(maps.Keys(e.active))
	slices.SortFunc(ks, func(a, b key) int {
		if a.rule != b.rule {
			if a.rule < b.rule {
				return -1
			}
			return 1
		}
		if a.device < b.device {
			return -1
		} else if a.device > b.device {
			return 1
		}
		return 0
	})
	return ks
}

func number(v model.Variable) (float64, bool) {
	if v.Type != model.TypeNumber && v.Type != "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v.Value), 64)
	return f, err == nil
}

func strVar(s string, t time.Time) model.Variable {
	b, _ := json.Marshal(s)
	return model.Variable{Value: b, Type: model.TypeString, Time: t.UTC()}
}

func timeVar(t time.Time) model.Variable {
	return strVar(t.UTC().Format(time.RFC3339Nano), t)
}

func stringVar(v model.Variable) string {
	var s string
	if json.Unmarshal(v.Value, &s) != nil {
		return ""
	}
	return s
}
