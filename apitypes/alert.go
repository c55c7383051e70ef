package apitypes

import (
	"encoding/json"
	"time"
)

// Alert rule kinds (AlertRule.Kind).
const (
	AlertKindThreshold = "threshold" // a numeric variable compared with a value, held for a duration
	AlertKindOffline   = "offline"   // a device offline for a duration
	AlertKindEvent     = "event"     // an event whose name and level match
	AlertKindRate      = "rate"      // a variable's rate of change over a window, compared with a value
)

// Alert states (Alert.State).
const (
	AlertPending  = "pending"
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// AlertSelector chooses the devices a rule applies to: the contexts at or
// below Path (default /devices) of Type (default device) with every one
// of Labels.
type AlertSelector struct {
	Path   string            `json:"path,omitempty"`
	Type   string            `json:"type,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// AlertRule is a rule as POST /api/v1/alert-rules takes it and the rule
// endpoints answer it. ID, Tenant, CreatedBy and Created are the node's:
// ignored in a request (a system user may set Tenant).
type AlertRule struct {
	ID       string        `json:"id,omitempty"`
	Name     string        `json:"name"`
	Kind     string        `json:"kind"`
	Selector AlertSelector `json:"selector"`
	// Var, Op and Value: the variable and the comparison of a threshold
	// or rate rule (Op one of > >= < <= == !=).
	Var   string   `json:"var,omitempty"`
	Op    string   `json:"op,omitempty"`
	Value *float64 `json:"value,omitempty"`
	// For is how long the condition must hold before the alert fires
	// (threshold, offline, rate); for an event rule, how long the alert
	// stays firing after the last matching event (default 5m).
	For string `json:"for,omitempty"`
	// Window is a rate rule's window (default 1m).
	Window string `json:"window,omitempty"`
	// Event is an event rule's name pattern (path.Match glob, "*": any
	// name) and Level the lowest level that matches (default warning).
	Event string `json:"event,omitempty"`
	Level string `json:"level,omitempty"`
	// Escalate are the escalation steps: durations after the alert
	// fired (ascending). At each one reached while the alert is firing
	// and not acknowledged, its label escalation becomes the step's
	// number ("1", "2"...), which routes of the tiers above match.
	Escalate []string `json:"escalate,omitempty"`
	// Severity is info, warning (default) or critical.
	Severity string `json:"severity,omitempty"`
	// Labels are added to the labels of the rule's alerts.
	Labels    map[string]string `json:"labels,omitempty"`
	Tenant    string            `json:"tenant,omitempty"`
	CreatedBy string            `json:"created_by,omitempty"`
	Created   time.Time         `json:"created,omitzero"`
}

// AlertRuleList is GET /api/v1/alert-rules.
type AlertRuleList struct {
	Rules []AlertRule `json:"rules"`
}

// Alert is an alert context as GET /api/v1/alerts lists it.
type Alert struct {
	Path     string            `json:"path"`
	ID       string            `json:"id"`
	Tenant   string            `json:"tenant,omitempty"`
	Rule     string            `json:"rule"`
	Severity string            `json:"severity"`
	Device   string            `json:"device"`
	Labels   map[string]string `json:"labels,omitempty"`
	State    string            `json:"state"`
	Value    json.RawMessage   `json:"value,omitempty"`
	Since    time.Time         `json:"since"`
	// Resolved is when the alert resolved (state resolved).
	Resolved      time.Time `json:"resolved,omitzero"`
	Acked         bool      `json:"acked"`
	AckedBy       string    `json:"acked_by,omitempty"`
	Silenced      bool      `json:"silenced"`
	SilencedUntil time.Time `json:"silenced_until,omitzero"`
	Summary       string    `json:"summary,omitempty"`
	// Escalation is the escalation step reached (0: none).
	Escalation int `json:"escalation,omitempty"`
}

// AlertPage is a page of GET /api/v1/alerts, in path order; Next is the
// after= of the following page ("": none).
type AlertPage struct {
	Alerts []Alert `json:"alerts"`
	Next   string  `json:"next,omitempty"`
}

// AlertSilence is the body of POST /api/v1/alerts/{path}/silence: the
// alert is not notified until Until (a time at or before now lifts the
// silence).
type AlertSilence struct {
	Until time.Time `json:"until"`
}
