package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/jobs"
)

// Bounds of an event page.
const (
	defaultEventLimit = 100
	maxEventLimit     = 10000
)

// eventPage is one page of event history, newest first; Next, when set, is
// the "before" of the next page.
type eventPage struct {
	Events []model.Event `json:"events"`
	Next   uint64        `json:"next,omitempty"`
}

func parseEventQuery(q url.Values) (model.EventQuery, error) {
	eq := model.EventQuery{Limit: defaultEventLimit}
	var err error
	if v := q.Get("limit"); v != "" {
		if eq.Limit, err = strconv.Atoi(v); err != nil || eq.Limit < 1 || eq.Limit > maxEventLimit {
			return eq, invalidf("limit must be 1 to %d", maxEventLimit)
		}
	}
	if v := q.Get("before"); v != "" {
		if eq.Before, err = strconv.ParseUint(v, 10, 64); err != nil {
			return eq, invalidf("before must be a sequence number")
		}
	}
	if v := q.Get("since"); v != "" {
		if eq.Since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return eq, invalidf("since must be an RFC 3339 time")
		}
	}
	if v := q.Get("level"); v != "" {
		if eq.Level, err = parseLevel(v); err != nil {
			return eq, err
		}
	}
	return eq, nil
}

func parseLevel(s string) (model.Level, error) {
	switch l := model.Level(s); l {
	case model.LevelInfo, model.LevelWarning, model.LevelAlert:
		return l, nil
	}
	return "", invalidf("level must be info, warning or alert, not %q", s)
}

// seesEvent reports whether p may see an event named name recorded with
// tenant (its context's): as SeesTenant, except that the job events of a
// shared device (no tenant) are seen by system users only, as its jobs
// are (they name the job, its function, its creator and its error).
func seesEvent(p *auth.Principal, tenant, name string) bool {
	if tenant == "" && name == jobs.EventName {
		return p != nil && p.System
	}
	return p.SeesTenant(tenant)
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, eventsPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleViewer, path) {
		return forbidden("reading events of", auth.RoleViewer, path)
	}
	q, err := parseEventQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if _, err := s.visibleContext(p, path); err != nil {
		return err
	}
	evs, err := s.model.Events(path, q)
	if err != nil {
		return err
	}
	page := eventPage{Events: make([]model.Event, 0, len(evs))}
	for _, ev := range evs {
		// An event keeps the tenant its context had when it was
		// recorded; history from before a change of tenant stays hidden.
		if seesEvent(p, ev.Tenant, ev.Name) {
			page.Events = append(page.Events, ev)
		}
	}
	if len(evs) == q.Limit && len(evs) > 0 {
		page.Next = evs[len(evs)-1].Seq
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// eventBody is the body recording an event.
type eventBody struct {
	Level   string          `json:"level"`
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload"`
}

// decodeEvent reads an event body into the event mutation of path. Every
// error wraps model.ErrInvalid, except a body over its limit.
func decodeEvent(rd io.Reader, path model.Path) (model.Mutation, error) {
	var b eventBody
	if err := decodeStrict(rd, &b); err != nil {
		return model.Mutation{}, err
	}
	level, err := parseLevel(b.Level)
	if err != nil {
		return model.Mutation{}, err
	}
	ev := &model.Event{Path: path, Name: b.Name, Level: level}
	if len(b.Payload) > 0 && !bytes.Equal(b.Payload, []byte("null")) {
		if len(b.Payload) > model.MaxPayloadSize {
			return model.Mutation{}, invalidf("payload larger than %d bytes", model.MaxPayloadSize)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b.Payload); err != nil {
			return model.Mutation{}, invalidf("payload: %v", err)
		}
		ev.Payload = buf.Bytes()
	}
	m := model.Mutation{Op: model.OpEvent, Path: path, Event: ev}
	if err := m.Validate(); err != nil {
		return model.Mutation{}, err
	}
	return m, nil
}

func (s *Server) postEvent(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, eventsPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleOperator, path) {
		return forbidden("recording events on", auth.RoleOperator, path)
	}
	if err := readOnlyMount(path); err != nil {
		return err
	}
	m, err := decodeEvent(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), path)
	if err != nil {
		return err
	}
	if !p.System {
		m.Actor = p.Tenant
	}
	cur, err := s.visibleContext(p, path)
	if err != nil {
		return err
	}
	if !p.System && cur.Tenant == "" {
		// An event on a shared folder would reach every tenant.
		return errSharedFolder
	}
	es, err := s.model.Apply(r.Context(), m)
	if errors.Is(err, model.ErrNotFound) {
		return contextNotFound(path)
	}
	if err != nil {
		return err
	}
	if len(es) != 1 || es[0].Mutation.Event == nil {
		return fmt.Errorf("api: event apply returned %d entries", len(es))
	}
	ev := *es[0].Mutation.Event
	ev.Seq = es[0].Seq
	writeJSON(w, http.StatusCreated, ev)
	return nil
}
