package apitypes

import (
	"encoding/json"
	"time"
)

// Bulk jobs (docs/jobs.md): one function on many devices, across the
// hierarchy. A bulk job is sent once per federation link; each node
// expands it against its own devices and runs one Job per device there.

// BulkState is the state of a bulk job.
type BulkState string

// States of a bulk job (and of a wave: Pending is a wave's only, a wave
// not opened yet).
const (
	BulkPending   BulkState = "pending"
	BulkRunning   BulkState = "running"
	BulkPaused    BulkState = "paused"
	BulkDone      BulkState = "done"
	BulkCancelled BulkState = "cancelled"
)

// BulkTarget selects the devices of a bulk job. Every part given must
// hold (AND); at least one is required.
//
//   - Paths: these device contexts.
//   - Subtree: the devices at or below this path.
//   - Labels: the devices with these labels.
//   - Filter: the query parameters of GET /api/v1/search, as an object of
//     strings: path, type, tenant, label.<key>, var.<name>.
type BulkTarget struct {
	Paths   []string          `json:"paths,omitempty"`
	Subtree string            `json:"subtree,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Filter  map[string]string `json:"filter,omitempty"`
}

// NewBulkJob is the body of POST /api/v1/jobs. Deadline is an RFC 3339
// time (or TTL a duration from now); Rollout is the rollout object
// (docs/jobs.md "Rollouts": waves, thresholds, rate, concurrency).
type NewBulkJob struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args,omitempty"`
	Target   BulkTarget      `json:"target"`
	Rollout  json.RawMessage `json:"rollout,omitempty"`
	Deadline string          `json:"deadline,omitempty"`
	TTL      string          `json:"ttl,omitempty"`
}

// BulkCounters counts the devices of a bulk job by the state of their
// job (its latest attempt's, after a retry). Total is every device the
// target selected; Pending those whose job is not made yet (their wave
// is not open, or the rate or concurrency holds them); a device refused
// before a job was made for it (no such function, revoked...) counts as
// failed.
type BulkCounters struct {
	Total     int `json:"total"`
	Pending   int `json:"pending"`
	Queued    int `json:"queued"`
	Delivered int `json:"delivered"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Expired   int `json:"expired"`
	Cancelled int `json:"cancelled"`
	// Verifying are the devices whose job succeeded and which the
	// rollout's health gate has not passed nor failed yet: not final.
	Verifying int `json:"verifying"`
}

// Add adds o to c.
func (c *BulkCounters) Add(o BulkCounters) {
	c.Total += o.Total
	c.Pending += o.Pending
	c.Queued += o.Queued
	c.Delivered += o.Delivered
	c.Running += o.Running
	c.Succeeded += o.Succeeded
	c.Failed += o.Failed
	c.Expired += o.Expired
	c.Cancelled += o.Cancelled
	c.Verifying += o.Verifying
}

// Count counts one device whose job is in state s.
func (c *BulkCounters) Count(s JobState) {
	c.Total++
	switch s {
	case JobQueued:
		c.Queued++
	case JobDelivered:
		c.Delivered++
	case JobRunning:
		c.Running++
	case JobSucceeded:
		c.Succeeded++
	case JobFailed:
		c.Failed++
	case JobExpired:
		c.Expired++
	case JobCancelled:
		c.Cancelled++
	}
}

// Finished is the number of devices in a final state.
func (c BulkCounters) Finished() int { return c.Succeeded + c.Failed + c.Expired + c.Cancelled }

// BulkPeer is one node's own part of a bulk job (its own devices, not
// those of the nodes below it), as a node above sees it. Error is set
// when the node refused the job or could not be sent it.
type BulkPeer struct {
	BulkCounters
	State BulkState `json:"state"`
	Error string    `json:"error,omitempty"`
	// Reason says why the node's part is paused.
	Reason string `json:"reason,omitempty"`
	// Attempt is the part's latest attempt (0; n after the n-th retry).
	Attempt int `json:"attempt,omitempty"`
}

// BulkWave is one wave of a bulk job's rollout; a bulk job without a
// rollout has one wave of every device. Each node applies the waves to
// its own devices; a node above sums the nodes' waves by number. State
// is pending (not opened yet), running, paused, done or cancelled.
type BulkWave struct {
	Size     int          `json:"size"`
	State    BulkState    `json:"state"`
	Counters BulkCounters `json:"counters"`
}

// BulkJob is a bulk job as GET /api/v1/jobs/{id} shows it on the node
// asked: Counters over every node below it, Peers each node's own part
// by its path here (this node's own part is Local).
type BulkJob = BulkJobOf[string]

// BulkJobOf is BulkJob with its paths of type P (see JobOf).
type BulkJobOf[P ~string] struct {
	ID        string          `json:"id"`
	Bulk      bool            `json:"bulk"`
	Function  string          `json:"function"`
	Args      json.RawMessage `json:"args,omitempty"`
	Target    BulkTarget      `json:"target"`
	Rollout   json.RawMessage `json:"rollout,omitempty"`
	Tenant    string          `json:"tenant"`
	CreatedBy string          `json:"created_by"`
	Created   time.Time       `json:"created"`
	Deadline  time.Time       `json:"deadline"`
	State     BulkState       `json:"state"`
	// Reason says why the job is paused: this node's reason, else the
	// first paused node's below, with its path.
	Reason   string              `json:"reason,omitempty"`
	Attempt  int                 `json:"attempt,omitempty"`
	Counters BulkCounters        `json:"counters"`
	Local    BulkPeer            `json:"local"`
	Peers    map[string]BulkPeer `json:"peers"`
	Waves    []BulkWave          `json:"waves"`
	// Origin is the consumer the job came from, on a node it was sent to.
	Origin string `json:"origin,omitempty"`
}

// BulkFailure is one failed device of a bulk job: Node is the path of
// the node that owns the device as seen from the node asked ("/" for
// itself), Path the device's path there, Job its job id on that node
// (empty when the device was refused before a job was made).
type BulkFailure struct {
	Node   string    `json:"node"`
	Path   string    `json:"path"`
	Device string    `json:"device,omitempty"`
	Job    string    `json:"job,omitempty"`
	State  JobState  `json:"state"`
	Error  string    `json:"error,omitempty"`
	Time   time.Time `json:"time"`
}

// BulkFailurePage is one page of a bulk job's failures; Next, when set,
// is the "after" of the following page.
type BulkFailurePage struct {
	Failures []BulkFailure `json:"failures"`
	Next     string        `json:"next,omitempty"`
}

// BulkJobSummary is a bulk job in a listing (GET /api/v1/jobs?bulk=true):
// its state and counters as GET /api/v1/jobs/{id} has them, without the
// detail per node and wave.
type BulkJobSummary struct {
	ID        string       `json:"id"`
	Bulk      bool         `json:"bulk"`
	Function  string       `json:"function"`
	Tenant    string       `json:"tenant"`
	State     BulkState    `json:"state"`
	Reason    string       `json:"reason,omitempty"`
	Counters  BulkCounters `json:"counters"`
	Created   time.Time    `json:"created"`
	CreatedBy string       `json:"created_by"`
	Origin    string       `json:"origin,omitempty"`
}

// BulkJobPage is one page of a bulk job listing, newest first; Next,
// when set, is the "before" of the following page.
type BulkJobPage struct {
	Jobs []BulkJobSummary `json:"jobs"`
	Next string           `json:"next,omitempty"`
}
