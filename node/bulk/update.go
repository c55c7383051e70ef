package bulk

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/strata-dm/strata/model"
)

// Every write of a part's record after its creation is a change decided
// against the record as the log has it (model.OpUpdateRecord with a
// change as argument; Update is the kind's updater), as jobs' are: a
// cancel made through one replica of a cluster and the leader's work on
// the part never undo each other, and a step repeated after a restart or
// a change of leader changes nothing twice.

// change is the argument of an update of a part's record: one of its
// fields is set.
type change struct {
	// Create is a new part: put if no part has its id, else a conflict.
	Create *Part `json:"create,omitempty"`
	// Expanded marks the part expanded with its links (a no-op when it
	// is already).
	Expanded *map[string]*Link `json:"expanded,omitempty"`
	// Members are the local devices selected, with Expanded.
	Members []Member `json:"members,omitempty"`
	// Refuse adds a refused device (a conflict when it is there already,
	// so that its failure event, in the same commit, is not repeated).
	Refuse *Refusal `json:"refuse,omitempty"`
	// Gates records device jobs' health gate outcomes (a conflict when
	// one is there already, so that a failure's event, in the same
	// commit, is not repeated).
	Gates []GateOutcome `json:"gates,omitempty"`
	// Link names the link that Sent, Error or CancelSent change.
	Link       string `json:"link,omitempty"`
	Sent       bool   `json:"sent,omitempty"`
	Error      string `json:"error,omitempty"`
	CancelSent bool   `json:"cancel_sent,omitempty"`
	Ctl        int    `json:"ctl,omitempty"` // the Control Gen the link took
	// GiveUp, with Link and Error, ends the wait for a link that took
	// the part but did not report it done by the deadline and
	// reportGrace (an Error alone applies only to a link not sent).
	GiveUp bool `json:"give_up,omitempty"`
	// Wave opens waves up to this one.
	Wave int `json:"wave,omitempty"`
	// Trip holds the part for this node's own reason (a no-op when held
	// or finished); Approve, with it, is the wave waiting for approval + 1.
	Trip    string `json:"trip,omitempty"`
	Approve int    `json:"approve,omitempty"`
	// At is the Gen a Trip or Base was decided at: either is a no-op
	// once the part changed Gen since (resumed, retried).
	At int `json:"at,omitempty"`
	// Pause is the operator's hold with its reason (a conflict once
	// paused, cancelled or finished); Resume lifts every hold (a conflict
	// once cancelled or finished); Retry starts the next attempt of the
	// failed devices (a conflict once cancelled); Control applies the hold
	// and attempt of the node above (a no-op if not newer).
	Pause   string   `json:"pause,omitempty"`
	Resume  bool     `json:"resume,omitempty"`
	Retry   bool     `json:"retry,omitempty"`
	Control *Control `json:"control,omitempty"`
	// Base sets what max_failures counts from.
	Base *Base `json:"base,omitempty"`
	// Cancel cancels the part (a conflict once cancelled or finished).
	Cancel bool `json:"cancel,omitempty"`
	// Finish marks the part finished.
	Finish bool `json:"finish,omitempty"`
}

// GateOutcome is a device job's health gate outcome: Error "" passed.
type GateOutcome struct {
	Job   string `json:"job"`
	Error string `json:"error,omitempty"`
}

// Update is the model.RecordUpdater of parts (KindBulk).
func Update(key string, cur, arg []byte) ([]byte, error) {
	var c change
	if err := json.Unmarshal(arg, &c); err != nil {
		return nil, fmt.Errorf("%w: bulk job change: %v", model.ErrInvalid, err)
	}
	if c.Create != nil {
		if cur != nil {
			return nil, fmt.Errorf("%w: bulk job %s exists", model.ErrConflict, key)
		}
		if c.Create.ID != key {
			return nil, fmt.Errorf("%w: bulk job %s created as %q", model.ErrInvalid, key, c.Create.ID)
		}
		return json.Marshal(c.Create)
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: bulk job %q", model.ErrNotFound, key)
	}
	var p Part
	if err := json.Unmarshal(cur, &p); err != nil {
		return nil, fmt.Errorf("%w: bulk job %s: damaged record: %v", model.ErrInvalid, key, err)
	}
	switch {
	case c.Expanded != nil:
		if !p.Expanded {
			p.Expanded, p.Links, p.Members = true, *c.Expanded, c.Members
		}
	case c.Refuse != nil:
		if len(p.Refused) >= maxRefused || slices.ContainsFunc(p.Refused, func(r Refusal) bool { return r.Path == c.Refuse.Path }) {
			return nil, fmt.Errorf("%w: bulk job %s: %s is refused already", model.ErrConflict, key, c.Refuse.Path)
		}
		p.Refused = append(p.Refused, *c.Refuse)
	case len(c.Gates) > 0:
		if p.Gates == nil {
			p.Gates = map[string]string{}
		}
		for _, g := range c.Gates {
			if _, ok := p.Gates[g.Job]; ok {
				return nil, fmt.Errorf("%w: bulk job %s: the health gate of %s is decided already", model.ErrConflict, key, g.Job)
			}
			p.Gates[g.Job] = g.Error
		}
	case c.Link != "":
		l := p.Links[c.Link]
		if l == nil {
			return nil, fmt.Errorf("%w: bulk job %s has no link %q", model.ErrNotFound, key, c.Link)
		}
		switch {
		case c.Sent:
			l.Sent = true
		case c.Error != "":
			if !l.Sent || (c.GiveUp && l.Error == "") {
				l.Error = c.Error
			}
		case c.CancelSent:
			l.CancelSent = true
		case c.Ctl > 0:
			l.Ctl = max(l.Ctl, c.Ctl)
		}
	case c.Wave > 0:
		p.Wave = max(p.Wave, c.Wave)
	case c.Trip != "":
		if !p.Held() && !p.Finished && !p.Cancelled && !p.Rebase && p.Gen == c.At {
			p.Tripped, p.Approve = c.Trip, c.Approve
		}
	case c.Pause != "":
		if p.Cancelled || p.Finished {
			return nil, fmt.Errorf("%w: bulk job %s is already %s", model.ErrConflict, key, map[bool]string{true: "cancelled", false: "done"}[p.Cancelled])
		}
		if p.Paused {
			return nil, fmt.Errorf("%w: bulk job %s is paused already", model.ErrConflict, key)
		}
		p.Paused, p.Reason = true, c.Pause
		p.Gen++
	case c.Resume:
		if p.Cancelled || p.Finished {
			return nil, fmt.Errorf("%w: bulk job %s is already %s", model.ErrConflict, key, map[bool]string{true: "cancelled", false: "done"}[p.Cancelled])
		}
		resume(&p)
		p.Gen++
	case c.Retry:
		if p.Cancelled {
			return nil, fmt.Errorf("%w: bulk job %s is cancelled", model.ErrConflict, key)
		}
		retry(&p, p.Attempt+1)
		p.Gen++
	case c.Control != nil:
		if c.Control.Gen <= p.OriginGen || p.Cancelled {
			break
		}
		p.OriginGen = c.Control.Gen
		switch {
		case c.Control.Attempt > p.Attempt:
			retry(&p, c.Control.Attempt)
			p.Paused = c.Control.Paused
		case c.Control.Paused && !p.Paused && !p.Finished:
			p.Paused, p.Reason = true, "paused from above"
		case !c.Control.Paused && !p.Finished && p.Held():
			resume(&p)
		}
		// Sent on down in any case: the nodes below may be held where
		// this one is not.
		p.Gen++
	case c.Base != nil:
		if p.Gen == c.At {
			p.Base, p.Rebase = *c.Base, false
		}
	case c.Cancel:
		if p.Cancelled || p.Finished {
			return nil, fmt.Errorf("%w: bulk job %s is already %s", model.ErrConflict, key, map[bool]string{true: "cancelled", false: "done"}[p.Cancelled])
		}
		p.Cancelled = true
	case c.Finish:
		p.Finished = true
	default:
		return nil, fmt.Errorf("%w: bulk job %s: an empty change", model.ErrInvalid, key)
	}
	return json.Marshal(&p)
}

// resume lifts every hold of p: the operator's, a threshold's, and opens
// the wave waiting for approval; max_failures counts afresh.
func resume(p *Part) {
	if p.Approve > 0 {
		p.Wave = max(p.Wave, p.Approve-1)
	}
	p.Paused, p.Reason, p.Tripped, p.Approve = false, "", "", 0
	p.Rebase = true
}

// retry starts attempt of p's failed devices: p runs again, without a
// threshold's hold (a wave waiting for approval still waits).
func retry(p *Part, attempt int) {
	p.Attempt, p.Finished = attempt, false
	p.Paused, p.Reason = false, ""
	if p.Approve == 0 {
		p.Tripped = ""
	}
	p.Rebase = true
}
