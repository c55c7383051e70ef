package bulk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/jobs"
)

// The health gate of a rollout (docs/jobs.md "Health gate"): a device
// whose device job succeeded counts as succeeded only once its own
// context, on the node that owns it, shows the gate's condition, checked
// at or after the job's success; until then it counts as verifying, and
// Within after the success without the condition it counts as failed.

// Bounds of a health gate.
const (
	MinHealthWithin   = time.Second
	MaxHealthWithin   = jobs.MaxDeadline
	maxHealthValueLen = 1024 // bytes of a wanted value, as given
)

// OnlineVar is the variable of a device's context that the node sets
// true while the device is connected (probes/mqtt, docs/mqtt.md).
const OnlineVar = "online"

// Health is a rollout's health gate: the condition a device must show
// (Online: its OnlineVar true; Vars: each variable equal to the value, as
// a search's var.<name> filter compares it) within Within of its device
// job's success.
type Health struct {
	Online bool `json:"online,omitempty"`
	// Vars are the wanted values as given; a string that parses as JSON
	// is that value (model.SearchVarValue).
	Vars map[string]string `json:"vars,omitempty"`
	// WithinText is Within as given ("10m").
	WithinText string        `json:"within"`
	Within     time.Duration `json:"-"`
}

type healthWire struct {
	Online *bool                      `json:"online"`
	Vars   map[string]json.RawMessage `json:"vars"`
	Within *string                    `json:"within"`
}

func parseHealth(raw json.RawMessage) (*Health, error) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil, invalidf("rollout health: want an object such as {\"online\": true, \"within\": \"10m\"}")
	}
	var w healthWire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, invalidf("rollout health: %v (fields: online, vars, within)", err)
	}
	h := &Health{}
	if w.Online != nil {
		h.Online = *w.Online
	}
	if len(w.Vars) > model.MaxSearchFilters {
		return nil, invalidf("rollout health vars: more than %d", model.MaxSearchFilters)
	}
	for name, v := range w.Vars {
		if err := model.ValidateName(name); err != nil {
			return nil, invalidf("rollout health var name %q: %v", name, err)
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, invalidf("rollout health var %s: %s: want a string, read as a search filter's var.%s is (\"4\" is the number 4, \"2.1.0\" the string)", name, v, name)
		}
		if len(s) > maxHealthValueLen {
			return nil, invalidf("rollout health var %s: longer than %d bytes", name, maxHealthValueLen)
		}
		if h.Vars == nil {
			h.Vars = map[string]string{}
		}
		h.Vars[name] = s
	}
	if !h.Online && len(h.Vars) == 0 {
		return nil, invalidf("rollout health: give the condition a device must show: \"online\": true, \"vars\", or both")
	}
	if w.Within == nil {
		return nil, invalidf("rollout health within: required: how long after its device job succeeded a device may take to show the condition, e.g. \"10m\"")
	}
	d, err := time.ParseDuration(*w.Within)
	if err != nil {
		return nil, invalidf("rollout health within %q: want a duration such as \"90s\" or \"10m\"", *w.Within)
	}
	if d < MinHealthWithin || d > MaxHealthWithin {
		return nil, invalidf("rollout health within %q: want %v to %v", *w.Within, MinHealthWithin, MaxHealthWithin)
	}
	h.WithinText, h.Within = *w.Within, d
	return h, nil
}

// unmet is what context c (nil: gone) lacks of h's condition, one phrase
// per condition not met, in order (online, then the variables by name);
// none: the condition holds.
func (h *Health) unmet(c *model.Context) []string {
	if c == nil {
		return []string{"the device's context is gone"}
	}
	var out []string
	check := func(name string, want json.RawMessage) {
		v, ok := c.Variables[name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s is not set, want %s", name, want))
		case !model.EqualValues(v.Value, want):
			got := string(v.Value)
			if len(got) > 64 {
				got = got[:61] + "..."
			}
			if got == "" {
				got = "null"
			}
			out = append(out, fmt.Sprintf("%s is %s, want %s", name, got, want))
		}
	}
	if h.Online {
		check(OnlineVar, json.RawMessage("true"))
	}
	for _, name := range sortedKeys(h.Vars) {
		check(name, model.SearchVarValue(h.Vars[name]))
	}
	return out
}

// failure is the error of a device that did not meet h within its time.
func (h *Health) failure(unmet []string) string {
	return "health gate: " + strings.Join(unmet, "; ") + " after " + h.WithinText
}

// gateOf is part's health gate (nil: none).
func gateOf(part *Part) *Health {
	if len(part.Rollout) == 0 {
		return nil
	}
	r, _ := ParseRollout(part.Rollout) // checked when the part was made
	return r.Health
}

// gate decides the health gate of part's members that await it: passed
// once the device's context shows the condition (checked at or after
// its job's success), failed when Within has passed since the success
// without it. It reports whether it decided any.
func (s *Service) gate(ctx context.Context, part *Part) (bool, error) {
	h := gateOf(part)
	if h == nil {
		return false, nil
	}
	var ds []gateDecision
	for i, m := range s.memberStates(part) {
		if m.state != verifying {
			continue
		}
		mem := part.Members[i]
		jid := AttemptJobID(part.ID, mem.Device, m.attempt)
		at, err := s.succeededAt(part.ID, jid)
		if errors.Is(err, model.ErrNotFound) {
			// Pruned (a job retention shorter than within): its success
			// cannot be dated, the gate cannot pass.
			ds = append(ds, gateDecision{mem, jid, "health gate: the device job's record is gone"})
			continue
		}
		if err != nil {
			return false, err
		}
		now := s.clock()
		if now.Before(at) {
			continue // only what the device shows after its job's success
		}
		c, err := s.cfg.Tree.Get(mem.Path)
		switch {
		case errors.Is(err, model.ErrNotFound):
			c = nil
		case err != nil:
			return false, err
		}
		why := ""
		if unmet := h.unmet(c); len(unmet) > 0 {
			if now.Sub(at) < h.Within {
				continue
			}
			why = truncate(h.failure(unmet), maxGateError)
		}
		ds = append(ds, gateDecision{mem, jid, why})
	}
	decided := len(ds) > 0
	for len(ds) > 0 {
		n := min(len(ds), maxGatesPerCommit)
		if err := s.decideGates(ctx, part.ID, ds[:n]); err != nil {
			return true, err
		}
		ds = ds[n:]
	}
	return decided, nil
}

// maxGatesPerCommit bounds the gate outcomes (and their events) of one
// commit: a part's record is rewritten once for a round's decisions, not
// once per device.
const maxGatesPerCommit = 256

// gateDecision is the outcome of member's device job jid: why "" passed.
type gateDecision struct {
	member Member
	jid    string
	why    string
}

// decideGates records the gate outcomes ds, with the bulk.failure event
// of each failure, in one commit decided by the log: an outcome repeated
// (after a restart, by another replica) is refused, so each failure is
// recorded once. When one of ds is decided already, each is recorded on
// its own.
func (s *Service) decideGates(ctx context.Context, id string, ds []gateDecision) error {
	c := change{Gates: make([]GateOutcome, len(ds))}
	var events []model.Mutation
	for i, d := range ds {
		c.Gates[i] = GateOutcome{Job: d.jid, Error: d.why}
		if d.why != "" {
			payload, _ := json.Marshal(jobs.BulkFailureEvent{Job: d.jid, Device: d.member.Device, Path: d.member.Path, State: jobs.Failed, Error: d.why})
			events = append(events, model.Mutation{Op: model.OpEvent, Path: jobs.BulkPath(id),
				Event: &model.Event{Name: jobs.BulkFailureEventName, Level: model.LevelWarning, Payload: payload}})
		}
	}
	_, err := s.update(ctx, id, c, events...)
	switch {
	case errors.Is(err, model.ErrConflict) && len(ds) > 1:
		for i := range ds {
			if err := s.decideGates(ctx, id, ds[i:i+1]); err != nil {
				return err
			}
		}
		return nil
	case errors.Is(err, model.ErrConflict):
		return nil // decided already
	case err != nil:
		return err
	}
	s.mu.Lock()
	for _, d := range ds {
		delete(s.okAt[id], d.jid)
	}
	s.mu.Unlock()
	for _, d := range ds {
		if d.why == "" {
			s.gated.WithLabelValues("passed").Inc()
			s.log.Debug("bulk job: health gate passed", "bulk", id, "device", d.member.Device)
			continue
		}
		s.gated.WithLabelValues("failed").Inc()
		s.log.Info("bulk job: health gate failed", "bulk", id, "device", d.member.Device, "err", d.why)
	}
	return nil
}

// maxGateError bounds a health gate failure's error, as jobs bound a
// device job's.
const maxGateError = 512

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// succeededAt is when device job jid of bulk job id succeeded.
func (s *Service) succeededAt(id, jid string) (time.Time, error) {
	s.mu.Lock()
	at, ok := s.okAt[id][jid]
	s.mu.Unlock()
	if ok {
		return at, nil
	}
	j, err := s.cfg.Jobs.Get(jid)
	if err != nil {
		return time.Time{}, fmt.Errorf("bulk: device job %s: %w", jid, err)
	}
	s.mu.Lock()
	if _, live := s.parts[id]; live {
		if s.okAt[id] == nil {
			s.okAt[id] = map[string]time.Time{}
		}
		s.okAt[id][jid] = j.Updated
	}
	s.mu.Unlock()
	return j.Updated, nil
}
