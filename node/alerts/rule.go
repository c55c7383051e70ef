package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// Bounds of a rule.
const (
	MaxRuleBytes   = 16 << 10
	maxNameLen     = 128
	maxPatternLen  = 256
	maxDuration    = 30 * 24 * time.Hour
	defaultHold    = 5 * time.Minute
	defaultWindow  = time.Minute
	maxRateSamples = 512
	maxSteps       = 8
)

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Rule is a parsed, valid alert rule. Spec is the rule as stored and
// answered; the other fields are what evaluation uses.
type Rule struct {
	Spec apitypes.AlertRule

	prefix model.Path
	typ    string
	cmp    func(a, b float64) bool
	value  float64
	hold   time.Duration // for (threshold, offline, rate); how long an event alert stays firing
	window time.Duration
	steps  []time.Duration // escalation steps after firing, ascending
	level  int
}

// ParseRule decodes a rule from outside (an API body) strictly: one JSON
// object, no unknown fields, at most MaxRuleBytes; then validates it.
// Fields the node sets (id, created...) are taken as they are: the
// caller overwrites them.
func ParseRule(data []byte) (*Rule, error) {
	if len(data) > MaxRuleBytes {
		return nil, fmt.Errorf("%w: rule larger than %d bytes", model.ErrInvalid, MaxRuleBytes)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, fmt.Errorf("%w: a rule is a JSON object", model.ErrInvalid)
	}
	if err := model.CheckValue(data); err != nil {
		return nil, fmt.Errorf("rule: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var spec apitypes.AlertRule
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("%w: rule: %v", model.ErrInvalid, err)
	}
	if dec.InputOffset() != int64(len(data)) {
		return nil, fmt.Errorf("%w: rule: more than one JSON value", model.ErrInvalid)
	}
	return NewRule(spec)
}

// NewRule validates spec and fills its defaults.
func NewRule(spec apitypes.AlertRule) (*Rule, error) {
	bad := func(format string, args ...any) (*Rule, error) {
		return nil, fmt.Errorf("%w: rule: "+format, append([]any{model.ErrInvalid}, args...)...)
	}
	r := &Rule{}
	if spec.Name == "" || len(spec.Name) > maxNameLen || !printable(spec.Name) {
		return bad("name: 1..%d printable characters are required", maxNameLen)
	}
	if spec.Selector.Path == "" {
		spec.Selector.Path = "/devices"
	}
	p, err := model.ParsePath(spec.Selector.Path)
	if err != nil {
		return bad("selector.path: %v", err)
	}
	if p.Within("/peers") || p.Within(Root) {
		return bad("selector.path %s: rules apply to this node's own devices, not to mirrors or alerts", p)
	}
	spec.Selector.Path, r.prefix = string(p), p
	if spec.Selector.Type == "" {
		spec.Selector.Type = "device"
	}
	if len(spec.Selector.Type) > model.MaxTypeLen || !printable(spec.Selector.Type) {
		return bad("selector.type: at most %d printable characters", model.MaxTypeLen)
	}
	r.typ = spec.Selector.Type
	if err := checkLabels("selector.labels", spec.Selector.Labels); err != nil {
		return nil, err
	}
	if err := checkLabels("labels", spec.Labels); err != nil {
		return nil, err
	}
	for k := range spec.Labels {
		if reservedLabel[k] {
			return bad("labels: %q is set by the node", k)
		}
	}
	switch spec.Severity {
	case "":
		spec.Severity = SeverityWarning
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		return bad("severity %q: want info, warning or critical", spec.Severity)
	}
	if r.hold, err = duration("for", spec.For); err != nil {
		return nil, err
	}
	if len(spec.Escalate) > maxSteps {
		return bad("escalate: at most %d steps", maxSteps)
	}
	for i, st := range spec.Escalate {
		d, err := duration("escalate", st)
		if err != nil {
			return nil, err
		}
		if d <= 0 || (i > 0 && d <= r.steps[i-1]) {
			return bad("escalate: steps are positive and ascending")
		}
		r.steps = append(r.steps, d)
	}
	switch spec.Kind {
	case apitypes.AlertKindThreshold, apitypes.AlertKindRate:
		if err := model.ValidateName(spec.Var); err != nil {
			return bad("var: %v", err)
		}
		if r.cmp = comparison(spec.Op); r.cmp == nil {
			return bad("op %q: want one of > >= < <= == !=", spec.Op)
		}
		if spec.Value == nil || math.IsNaN(*spec.Value) || math.IsInf(*spec.Value, 0) {
			return bad("value: a finite number is required")
		}
		r.value = *spec.Value
		if spec.Event != "" || spec.Level != "" {
			return bad("event and level are for event rules")
		}
		if spec.Kind == apitypes.AlertKindRate {
			if r.window, err = duration("window", spec.Window); err != nil {
				return nil, err
			}
			if r.window == 0 {
				r.window, spec.Window = defaultWindow, defaultWindow.String()
			}
		} else if spec.Window != "" {
			return bad("window is for rate rules")
		}
	case apitypes.AlertKindOffline:
		if spec.Var != "" || spec.Op != "" || spec.Value != nil || spec.Window != "" || spec.Event != "" || spec.Level != "" {
			return bad("an offline rule takes only for")
		}
	case apitypes.AlertKindEvent:
		if spec.Var != "" || spec.Op != "" || spec.Value != nil || spec.Window != "" {
			return bad("an event rule takes event, level and for")
		}
		if spec.Event == "" {
			spec.Event = "*"
		}
		if len(spec.Event) > maxPatternLen || !printable(spec.Event) {
			return bad("event: at most %d printable characters", maxPatternLen)
		}
		if _, err := path.Match(spec.Event, ""); err != nil {
			return bad("event %q: %v", spec.Event, err)
		}
		if spec.Level == "" {
			spec.Level = string(model.LevelWarning)
		}
		if r.level = levelRank(model.Level(spec.Level)); r.level == 0 {
			return bad("level %q: want info, warning or alert", spec.Level)
		}
		if r.hold == 0 {
			r.hold, spec.For = defaultHold, defaultHold.String()
		}
	default:
		return bad("kind %q: want threshold, offline, event or rate", spec.Kind)
	}
	r.Spec = spec
	return r, nil
}

// Root is where a node keeps its alerts' contexts.
const Root model.Path = "/alerts"

// Labels the node sets on every alert.
const (
	LabelRule     = "rule"
	LabelSeverity = "severity"
	LabelDevice   = "device"
	LabelNode     = "node"
	LabelName     = "alertname"
	// LabelEscalation is the escalation step reached, when one was.
	LabelEscalation = "escalation"
)

var reservedLabel = map[string]bool{LabelRule: true, LabelSeverity: true, LabelDevice: true, LabelNode: true, LabelName: true,
	LabelEscalation: true}

func duration(key, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxDuration {
		return 0, fmt.Errorf("%w: rule: %s %q: want a duration from 0s to %v", model.ErrInvalid, key, s, maxDuration)
	}
	return d, nil
}

func checkLabels(key string, ls map[string]string) error {
	if len(ls) > model.MaxLabels/2 {
		return fmt.Errorf("%w: rule: %s: at most %d", model.ErrInvalid, key, model.MaxLabels/2)
	}
	for k, v := range ls {
		if k == "" || len(k) > model.MaxLabelLen || len(v) > model.MaxLabelLen || !printable(k) || !printable(v) {
			return fmt.Errorf("%w: rule: %s: keys 1..%d and values up to %d printable characters", model.ErrInvalid, key, model.MaxLabelLen, model.MaxLabelLen)
		}
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

func comparison(op string) func(a, b float64) bool {
	switch op {
	case ">":
		return func(a, b float64) bool { return a > b }
	case ">=":
		return func(a, b float64) bool { return a >= b }
	case "<":
		return func(a, b float64) bool { return a < b }
	case "<=":
		return func(a, b float64) bool { return a <= b }
	case "==":
		return func(a, b float64) bool { return a == b }
	case "!=":
		return func(a, b float64) bool { return a != b }
	}
	return nil
}

func levelRank(l model.Level) int {
	switch l {
	case model.LevelInfo:
		return 1
	case model.LevelWarning:
		return 2
	case model.LevelAlert:
		return 3
	}
	return 0
}

// selects reports whether the rule applies to context c (of this node's
// own tree): its path, type, labels and tenant.
func (r *Rule) selects(c *model.Context) bool {
	if c.Type != r.typ || !c.Path.Within(r.prefix) || c.Path.Within("/peers") {
		return false
	}
	if r.Spec.Tenant != "" && c.Tenant != r.Spec.Tenant {
		return false
	}
	for k, v := range r.Spec.Selector.Labels {
		if c.Labels[k] != v {
			return false
		}
	}
	return true
}

// summary is a line describing the condition, for notifications.
func (r *Rule) summary() string {
	s := r.Spec
	switch s.Kind {
	case apitypes.AlertKindThreshold:
		return fmt.Sprintf("%s %s %g", s.Var, s.Op, r.value)
	case apitypes.AlertKindRate:
		return fmt.Sprintf("rate of %s over %s %s %g/s", s.Var, s.Window, s.Op, r.value)
	case apitypes.AlertKindOffline:
		return "device offline"
	case apitypes.AlertKindEvent:
		return fmt.Sprintf("event %s at level %s or above", s.Event, s.Level)
	}
	return strings.TrimSpace(s.Kind)
}
