package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/strata-dm/strata/model"
)

// Every write of a job record is decided against the record as the log
// has it, not against the writer's view of it: the service proposes a
// change (model.OpUpdateRecord with a change as argument), and the state
// machine applies Update to the record it holds when it builds the batch.
// The log carries the record Update returned, so every replica of a
// cluster applies the one outcome, and a replica whose view of a job
// lags behind the log (a follower that has not applied the latest
// entries, a leader just elected) cannot take a job back to an earlier
// state: states only move forward (queued, delivered, running, then one
// final state), and a final state is never replaced.

// change is the argument of an update of a job record: To or Note is
// set. (A new job is put whole: its id is new.)
type change struct {
	// Create, when set, is a new job with an id chosen by its creator
	// (a bulk job's device part): it is put if no job has that id, and
	// refused with model.ErrConflict otherwise, so that a creation
	// repeated after a restart never makes a second job.
	Create *Job `json:"create,omitempty"`
	// Device, when set, must be the job's device (else not found).
	Device string `json:"device,omitempty"`
	// To is the state to move the job to, if the job's state allows it.
	To State `json:"to,omitempty"`
	// Note is the status of an answer that came after the job was
	// final: it goes into the job's history only.
	Note   State           `json:"note,omitempty"`
	At     time.Time       `json:"at"`
	Detail string          `json:"detail,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// DeliveredAt, with To past delivered, is when the device
	// acknowledged the job, not yet written: a job still queued in the
	// record takes a delivered transition at that time first.
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// rank orders the states: a job only moves to a state of higher rank.
func rank(s State) int {
	switch s {
	case Queued:
		return 0
	case Delivered:
		return 1
	case Running:
		return 2
	}
	if s.Final() {
		return 3
	}
	return -1
}

// Allowed reports whether a job in state from may move to state to:
// never from a final state, never back, never to the state it is in.
func Allowed(from, to State) bool {
	return !from.Final() && rank(to) > rank(from)
}

// Update is the model.RecordUpdater of job records (KindJob): it applies
// a change to the record cur (nil: none) and returns the new record. It
// refuses with model.ErrConflict a transition the job's state does not
// allow (see Allowed) and a note on a job not final; with
// model.ErrNotFound a change of a missing job or one for another device
// than the job's.
func Update(key string, cur, arg []byte) ([]byte, error) {
	// A creation first, as its job's JSON: only its id is read (a
	// device job of a bulk job is created this way, thousands at once).
	var create struct {
		Create json.RawMessage `json:"create"`
	}
	if err := json.Unmarshal(arg, &create); err != nil {
		return nil, fmt.Errorf("%w: job change: %v", model.ErrInvalid, err)
	}
	if len(create.Create) > 0 && string(create.Create) != "null" {
		if cur != nil {
			return nil, fmt.Errorf("%w: job %s exists", ErrExists, key)
		}
		var id struct {
			ID *string `json:"id"`
		}
		if err := json.Unmarshal(create.Create, &id); err != nil || id.ID == nil || *id.ID != key {
			got := ""
			if id.ID != nil {
				got = *id.ID
			}
			return nil, fmt.Errorf("%w: job %s created as %q", model.ErrInvalid, key, got)
		}
		var out bytes.Buffer
		if err := json.Compact(&out, create.Create); err != nil {
			return nil, fmt.Errorf("%w: job change: %v", model.ErrInvalid, err)
		}
		return out.Bytes(), nil
	}
	var c change
	if err := json.Unmarshal(arg, &c); err != nil {
		return nil, fmt.Errorf("%w: job change: %v", model.ErrInvalid, err)
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: job %q", model.ErrNotFound, key)
	}
	var j Job
	if err := json.Unmarshal(cur, &j); err != nil {
		return nil, fmt.Errorf("%w: job %s: damaged record: %v", model.ErrInvalid, key, err)
	}
	if c.Device != "" && c.Device != j.Device {
		return nil, fmt.Errorf("%w: job %q", model.ErrNotFound, key)
	}
	at := c.At.UTC().Round(0)
	switch {
	case c.Note != "":
		if !j.State.Final() {
			return nil, fmt.Errorf("%w: job %s is %s, not final", model.ErrConflict, key, j.State)
		}
		j.History = appendHistory(j.History, Transition{State: c.Note, Time: at, Detail: "late answer ignored: job was " + string(j.State)})
	case c.To != "":
		if !Allowed(j.State, c.To) {
			return nil, fmt.Errorf("%w: job %s is already %s", model.ErrConflict, key, j.State)
		}
		if c.DeliveredAt != nil && j.State == Queued && rank(c.To) > rank(Delivered) {
			j.History = appendHistory(j.History, Transition{State: Delivered, Time: c.DeliveredAt.UTC().Round(0)})
		}
		j.State, j.Updated = c.To, at
		if c.Result != nil {
			j.Result = c.Result
		}
		if c.Error != "" {
			j.Error = c.Error
		}
		j.History = appendHistory(j.History, Transition{State: c.To, Time: at, Detail: c.Detail})
	default:
		return nil, fmt.Errorf("%w: job %s: an empty change", model.ErrInvalid, key)
	}
	return json.Marshal(&j)
}
