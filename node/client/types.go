package client

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// These types mirror the JSON bodies of docs/api.md. Values and payloads
// stay json.RawMessage so that nothing is lost or reformatted in transit.

// Error codes of the API (APIError.Code), as package apitypes defines
// them.
const (
	CodeInvalid      = apitypes.CodeInvalid
	CodeUnauthorized = apitypes.CodeUnauthorized
	CodeForbidden    = apitypes.CodeForbidden
	CodeNotFound     = apitypes.CodeNotFound
	CodeConflict     = apitypes.CodeConflict
	CodeTooLarge     = apitypes.CodeTooLarge
	CodeRateLimited  = apitypes.CodeRateLimited
	CodeUnavailable  = apitypes.CodeUnavailable
	CodeInternal     = apitypes.CodeInternal
)

// Session is the answer to a login: a bearer token and who it is for.
type Session struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	User    User      `json:"user"`
}

// Grant gives a role on a subtree.
type Grant struct {
	Role    string `json:"role"` // admin, operator, viewer
	Subtree string `json:"subtree"`
}

// User is an operator account. TokenID is set only by Whoami.
type User struct {
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant"`
	System   bool      `json:"system"`
	Grants   []Grant   `json:"grants"`
	Disabled bool      `json:"disabled"`
	Created  time.Time `json:"created"`
	TokenID  string    `json:"token_id,omitempty"`
}

// NewUser is the body creating a user.
type NewUser struct {
	Name     string  `json:"name"`
	Password string  `json:"password"`
	Tenant   string  `json:"tenant,omitempty"`
	System   bool    `json:"system,omitempty"`
	Grants   []Grant `json:"grants,omitempty"`
}

// UserUpdate is the body of a PATCH on a user: only the set fields change.
// A non-nil empty Grants removes every grant.
type UserUpdate struct {
	Password string  `json:"password,omitempty"`
	Grants   []Grant `json:"grants,omitzero"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// Token describes a bearer token; its secret is only shown at creation.
type Token struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Revoked bool      `json:"revoked"`
}

// NewToken is the body creating a token. User defaults to the caller, TTL
// to the server's default.
type NewToken struct {
	User string        `json:"user,omitempty"`
	Name string        `json:"name,omitempty"`
	TTL  time.Duration `json:"-"`
}

// CreatedToken is a new token with its secret.
type CreatedToken struct {
	Secret string `json:"token"`
	Token
}

// TreeNode is a context in a tree listing. Next is set when more children
// follow than were listed (pass it as TreeOptions.After).
type TreeNode struct {
	Name     string     `json:"name,omitempty"`
	Path     string     `json:"path"`
	Type     string     `json:"type"`
	Tenant   string     `json:"tenant"`
	Children []TreeNode `json:"children,omitempty"`
	Next     string     `json:"next,omitempty"`
}

// TreeOptions page and bound a tree listing. Zero values leave the
// server's defaults (depth 1, limit 1000).
type TreeOptions struct {
	Depth int    // levels below the path, 1..8
	Limit int    // children per level, 1..10000
	After string // list children after this name
}

// Variable is a named, typed, timestamped value of a context.
type Variable struct {
	Value   json.RawMessage `json:"value"`
	Type    string          `json:"type"`
	Time    time.Time       `json:"time"`
	Quality string          `json:"quality,omitempty"`
}

// Function is an operation a context offers; Args and Result are JSON
// Schemas.
type Function struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Args        json.RawMessage `json:"args,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// Context is a node of the tree with its state.
type Context struct {
	Path      string              `json:"path"`
	Type      string              `json:"type"`
	Tenant    string              `json:"tenant"`
	Labels    map[string]string   `json:"labels,omitempty"`
	Variables map[string]Variable `json:"variables,omitempty"`
	Functions []Function          `json:"functions,omitempty"`
	Created   time.Time           `json:"created"`
	Updated   time.Time           `json:"updated"`
	Version   uint64              `json:"version"`
}

// ContextUpdate is the body of a PUT on a context. Labels merge (an empty
// value removes a label); variables merge. Tenant is for system
// administrators only.
type ContextUpdate struct {
	Type      string                     `json:"type,omitempty"`
	Labels    map[string]string          `json:"labels,omitempty"`
	Variables map[string]json.RawMessage `json:"variables,omitempty"`
	Tenant    string                     `json:"tenant,omitempty"`
}

// Event is a timestamped occurrence on a context.
type Event struct {
	Seq     uint64          `json:"seq"`
	Path    string          `json:"path"`
	Name    string          `json:"name,omitempty"`
	Level   string          `json:"level"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Time    time.Time       `json:"time"`
	Tenant  string          `json:"tenant,omitempty"`
}

// NewEvent is the body recording an event.
type NewEvent struct {
	Level   string          `json:"level"` // info, warning, alert
	Name    string          `json:"name,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// EventQuery selects events, newest first.
type EventQuery struct {
	Limit  int       // default 100
	Before uint64    // only events with a smaller seq (EventPage.Next)
	Since  time.Time // only events at or after
	Level  string    // only this level
}

// FeedQuery selects the event feed of a subtree: its warnings and
// alerts, newest first.
type FeedQuery struct {
	Path   string // the subtree (default "/")
	Level  string // the lowest level: "warning" (default) or "alert"
	Limit  int    // default 50
	Before uint64 // only events with a smaller seq (EventPage.Next)
}

// EventPage is one page of events; Next, when non-zero, is the Before of
// the next page.
type EventPage struct {
	Events []Event `json:"events"`
	Next   uint64  `json:"next,omitempty"`
}

// Change is one entry of the live change stream. Reset is true for the
// "reset" event the server sends when the requested cursor is older than
// its log keeps: the client missed changes and should re-read what it
// mirrors; the stream continues from the server's head.
type Change struct {
	Seq       uint64              `json:"seq"`
	Time      time.Time           `json:"time"`
	Op        Op                  `json:"op"`
	Path      string              `json:"path"`
	Type      string              `json:"type,omitempty"`
	Tenant    string              `json:"tenant,omitempty"`
	Labels    map[string]string   `json:"labels,omitempty"`
	Variables map[string]Variable `json:"variables,omitempty"`
	Event     *Event              `json:"event,omitempty"`
	Reset     bool                `json:"-"`
}

// Op is the kind of a change: "put", "delete", "event", or "reset" for a
// client-side Change marking a reset.
type Op string

// Ops of a change.
const (
	OpPut    Op = "put"
	OpDelete Op = "delete"
	OpEvent  Op = "event"
	OpReset  Op = "reset"
)

// UnmarshalJSON accepts the op's name or its number in the change log.
func (o *Op) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*o = Op(s)
		return nil
	}
	var n uint8
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("op: want a string or a number, got %s", b)
	}
	switch n {
	case 1:
		*o = OpPut
	case 2:
		*o = OpDelete
	case 3:
		*o = OpEvent
	default:
		*o = Op("op(" + strconv.Itoa(int(n)) + ")")
	}
	return nil
}

// EnrollToken describes an enrollment token; its secret is only shown at
// creation. Uses 0 means unlimited until it expires.
type EnrollToken struct {
	ID        string    `json:"id"`
	Group     string    `json:"group"`
	Tenant    string    `json:"tenant"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	Expires   time.Time `json:"expires"`
	Uses      int       `json:"uses"`
	Used      int       `json:"used"`
	Revoked   bool      `json:"revoked"`
}

// NewEnrollToken is the body creating an enrollment token. Tenant is for
// system administrators only (others get their own); TTL zero and Uses
// zero leave the server's defaults (168h, unlimited).
type NewEnrollToken struct {
	Group  string        `json:"group"`
	Tenant string        `json:"tenant,omitempty"`
	TTL    time.Duration `json:"-"`
	Uses   int           `json:"uses,omitempty"`
}

// CreatedEnrollToken is a new enrollment token with its secret.
type CreatedEnrollToken struct {
	Secret string `json:"token"`
	EnrollToken
}

// EnrollRequest is what a device sends to enroll.
type EnrollRequest = apitypes.EnrollRequest

// Enrollment is what an enrolled device receives: its MQTT credentials
// and where to use them. CertPEM is set when the request had a CSR.
type Enrollment = apitypes.Enrollment

// Device is an enrolled device.
type Device struct {
	ID          string    `json:"id"`
	Path        string    `json:"path"`
	Tenant      string    `json:"tenant"`
	Group       string    `json:"group"`
	HardwareID  string    `json:"hardware_id"`
	Enrolled    time.Time `json:"enrolled"`
	EnrollToken string    `json:"enroll_token"`
	CertSerial  string    `json:"cert_serial,omitempty"`
	Revoked     bool      `json:"revoked"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	// EnrollAllowed: revoked, and allowed by an operator to enroll again.
	EnrollAllowed bool `json:"enroll_allowed,omitempty"`
}

// JobState is the state of a job.
type JobState = apitypes.JobState

// States of a job; the last four are final (JobState.Final).
const (
	JobQueued    = apitypes.JobQueued
	JobDelivered = apitypes.JobDelivered
	JobRunning   = apitypes.JobRunning
	JobSucceeded = apitypes.JobSucceeded
	JobFailed    = apitypes.JobFailed
	JobExpired   = apitypes.JobExpired
	JobCancelled = apitypes.JobCancelled
)

// JobTransition is one entry of a job's history.
type JobTransition = apitypes.JobTransition

// Job is one function call on one device. Result is set when it
// succeeded, Error when it failed. Node and Job are set for a job owned
// by a node below (a routed call): Node is that node's path here, Job the
// job's id there.
type Job = apitypes.Job

// Call is a function call. Zero fields leave the server's defaults: args
// {}, no waiting, a deadline one hour ahead. Set at most one of TTL and
// Deadline.
type Call struct {
	Args     json.RawMessage // a JSON object
	Wait     time.Duration   // wait up to this long (at most 5m) for a final state
	TTL      time.Duration   // the job expires this long from now
	Deadline time.Time       // the job expires then
}

// JobQuery selects jobs, newest first. Zero fields select everything (up
// to the server's default limit, 100).
type JobQuery struct {
	Path   string   // only jobs of contexts in this subtree
	Device string   // only jobs of this device
	State  JobState // only jobs in this state
	Limit  int      // 1..1000
	Before string   // only jobs created before this one (JobPage.Next)
}

// JobPage is one page of jobs, newest first; Next, when set, is the
// Before of the next page.
type JobPage = apitypes.JobPage

// Bulk jobs (docs/jobs.md).
type (
	BulkState       = apitypes.BulkState
	BulkTarget      = apitypes.BulkTarget
	NewBulkJob      = apitypes.NewBulkJob
	BulkCounters    = apitypes.BulkCounters
	BulkPeer        = apitypes.BulkPeer
	BulkWave        = apitypes.BulkWave
	BulkJob         = apitypes.BulkJob
	BulkFailure     = apitypes.BulkFailure
	BulkFailurePage = apitypes.BulkFailurePage
	BulkJobSummary  = apitypes.BulkJobSummary
	BulkJobPage     = apitypes.BulkJobPage
)

// States of a bulk job.
const (
	BulkPending   = apitypes.BulkPending
	BulkRunning   = apitypes.BulkRunning
	BulkPaused    = apitypes.BulkPaused
	BulkDone      = apitypes.BulkDone
	BulkCancelled = apitypes.BulkCancelled
)
