package apitypes

import "time"

// AuditRecord is one entry of a node's audit trail as GET /api/v1/audit
// lists it (docs/api.md, "Audit trail"): a state-changing action on its
// API, or a call or read that reached it over a link (Consumer set).
type AuditRecord = AuditRecordOf[string]

// AuditRecordOf is AuditRecord with its paths of type P: the node uses its
// validated path type (model.Path), everyone else a string. The JSON is
// the same.
type AuditRecordOf[P ~string] struct {
	// ID is the record's key (time ordered); set when listed.
	ID   string    `json:"id,omitempty"`
	Time time.Time `json:"time"`
	// Consumer is the node a request came from over a link ("" for an
	// action made on this node's API).
	Consumer string `json:"consumer"`
	// User and Tenant are the operator's, at the tier where the action
	// started; System is set for a system administrator.
	User   string `json:"user,omitempty"`
	Tenant string `json:"tenant,omitempty"`
	System bool   `json:"system,omitempty"`
	// Via lists the nodes a federated request came through, the tier
	// where it started first and the nearest last; empty for actions on
	// this node's API.
	Via []string `json:"via,omitempty"`
	// Op is what was done (docs/api.md lists them); Path the context it
	// was done on, Function the function called, Target what else it
	// named (a user, token, device, peer or job id).
	Op       string `json:"op"`
	Path     P      `json:"path"`
	Function string `json:"function,omitempty"`
	Target   string `json:"target,omitempty"`
	// Job is the job a call created; Node, for a call routed down, the
	// path here of the node that owns the job.
	Job  string `json:"job,omitempty"`
	Node P      `json:"node,omitempty"`
	// Outcome is OK, Pending, Forwarded, a job's final state or the error
	// code answered; Error the error's message.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Updated is when a call's outcome was last changed (its job ended).
	Updated time.Time `json:"updated,omitzero"`
	// RequestID is the API request's id (X-Request-Id, and in the log).
	RequestID string `json:"request_id,omitempty"`
}
