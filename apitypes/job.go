package apitypes

import (
	"encoding/json"
	"time"
)

// JobState is the state of a job (docs/api.md, "Jobs"):
//
//	queued ──▶ delivered ──▶ running ──▶ succeeded | failed
//	   └──────────┴────────────┴──▶ expired (deadline) | cancelled
type JobState string

// States of a job; the last four are final.
const (
	JobQueued    JobState = "queued"
	JobDelivered JobState = "delivered"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobExpired   JobState = "expired"
	JobCancelled JobState = "cancelled"
)

// Final reports whether s is a final state: a job in one never changes
// state again.
func (s JobState) Final() bool {
	return s == JobSucceeded || s == JobFailed || s == JobExpired || s == JobCancelled
}

// JobTransition is one entry of a job's history.
type JobTransition struct {
	State  JobState  `json:"state"`
	Time   time.Time `json:"time"`
	Detail string    `json:"detail,omitempty"`
}

// Job is one function call on one device, as the API shows it and as a
// node keeps it.
type Job = JobOf[string]

// JobOf is Job with its paths of type P: the node uses its validated path
// type (model.Path), everyone else a string. The JSON is the same.
//
// Result is set when the job succeeded (and may be when it failed), Error
// when it failed.
type JobOf[P ~string] struct {
	ID        string          `json:"id"`
	Path      P               `json:"path"`
	Device    string          `json:"device"`
	Tenant    string          `json:"tenant"`
	Function  string          `json:"function"`
	Args      json.RawMessage `json:"args,omitempty"`
	CreatedBy string          `json:"created_by"`
	Created   time.Time       `json:"created"`
	Deadline  time.Time       `json:"deadline"`
	State     JobState        `json:"state"`
	Updated   time.Time       `json:"updated"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	History   []JobTransition `json:"history"`
	// Node and Job are set for a job owned by a node below (a routed
	// call), by the node that shows it: Node is that node's path there,
	// Job the job's id on it.
	Node P      `json:"node,omitempty"`
	Job  string `json:"job,omitempty"`
	// Bulk is the id of the bulk job this job is a device's part of
	// (docs/jobs.md), unset for a call on one device.
	Bulk string `json:"bulk,omitempty"`
}

// JobPage is one page of a job listing, newest first; Next, when set, is
// the "before" of the next page.
type JobPage = JobPageOf[string]

// JobPageOf is JobPage with its paths of type P (see JobOf).
type JobPageOf[P ~string] struct {
	Jobs []JobOf[P] `json:"jobs"`
	Next string     `json:"next,omitempty"`
}
