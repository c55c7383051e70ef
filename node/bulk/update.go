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
	// Refuse adds a refused device (a conflict when it is there already,
	// so that its failure event, in the same commit, is not repeated).
	Refuse *Refusal `json:"refuse,omitempty"`
	// Link names the link that Sent, Error or CancelSent change.
	Link       string `json:"link,omitempty"`
	Sent       bool   `json:"sent,omitempty"`
	Error      string `json:"error,omitempty"`
	CancelSent bool   `json:"cancel_sent,omitempty"`
	// Cancel cancels the part (a conflict once cancelled or finished).
	Cancel bool `json:"cancel,omitempty"`
	// Finish marks the part finished.
	Finish bool `json:"finish,omitempty"`
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
			p.Expanded, p.Links = true, *c.Expanded
		}
	case c.Refuse != nil:
		if len(p.Refused) >= maxRefused || slices.ContainsFunc(p.Refused, func(r Refusal) bool { return r.Path == c.Refuse.Path }) {
			return nil, fmt.Errorf("%w: bulk job %s: %s is refused already", model.ErrConflict, key, c.Refuse.Path)
		}
		p.Refused = append(p.Refused, *c.Refuse)
	case c.Link != "":
		l := p.Links[c.Link]
		if l == nil {
			return nil, fmt.Errorf("%w: bulk job %s has no link %q", model.ErrNotFound, key, c.Link)
		}
		switch {
		case c.Sent:
			l.Sent = true
		case c.Error != "":
			if !l.Sent {
				l.Error = c.Error
			}
		case c.CancelSent:
			l.CancelSent = true
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
