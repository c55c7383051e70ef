package apitypes

import (
	"encoding/json"
	"time"
)

// Command is what the node publishes to a device on strata/<id>/cmd/<job>
// (docs/mqtt.md, "Commands"): one job to run. Args is a JSON object; the
// node always sends a deadline.
type Command struct {
	Job      string          `json:"job"`
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	Deadline time.Time       `json:"deadline"`
}

// CommandResult is a device's answer on strata/<id>/cmd/<job>/result:
// Status is one of the Result constants; Result is set when the function
// returned something, Error when it failed.
type CommandResult struct {
	Status string          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Statuses of a command result. Running is an interim report; the others
// are final.
const (
	ResultRunning   = "running"
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
)
