package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/auth"
)

// Alerts and their rules (docs/alerts.md). One rule everywhere, checked
// here and again where the alert lives:
//
//   - a rule is read with the viewer role, created and deleted with the
//     operator role, on its selector's path; a tenant's user sees and
//     makes only its tenant's rules (another tenant's answers 404);
//   - an alert is seen with the viewer role on its path or on its
//     device's path (as seen from this node), and acknowledged or
//     silenced with the operator role there; an alert of another tenant
//     answers 404. A mirrored alert's action goes down the links to the
//     node that owns it, which checks its grant to the consumer
//     (operate) and the operator's tenant again.

const (
	alertsPrefix   = "/api/v1/alerts"
	alertActionAck = "ack"
	alertSilence   = "silence"
)

var errNoAlerts = apiError(http.StatusNotImplemented, codeNotImplemented, "alerts are not enabled on this node (its store has no search)")

func actor(p *auth.Principal) alerts.Actor {
	return alerts.Actor{User: p.User, Tenant: p.Tenant, System: p.System}
}

func (s *Server) listAlertRules(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	rules, err := s.cfg.Alerts.Rules(actor(p))
	if err != nil {
		return err
	}
	out := apitypes.AlertRuleList{Rules: []apitypes.AlertRule{}}
	for _, rl := range rules {
		if p.Can(auth.RoleViewer, model.Path(rl.Selector.Path)) {
			out.Rules = append(out.Rules, rl)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createAlertRule(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, min(s.cfg.MaxBodyBytes, alerts.MaxRuleBytes)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, errBodyTimeout) {
			return err
		}
		return invalidf("body: %v", err)
	}
	rl, err := alerts.ParseRule(body)
	if err != nil {
		return err
	}
	sel := model.Path(rl.Spec.Selector.Path)
	if !p.Can(auth.RoleOperator, sel) {
		return forbidden("making alert rules on", auth.RoleOperator, sel)
	}
	spec, err := s.cfg.Alerts.CreateRule(r.Context(), actor(p), rl.Spec)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target, e.rec.Path = spec.ID, sel })
	writeJSON(w, http.StatusCreated, spec)
	return nil
}

// alertRule returns rule id if p may see it with role need: one of
// another tenant, or out of p's grants for reading, answers 404.
func (s *Server) alertRule(p *auth.Principal, id string, need auth.Role) (apitypes.AlertRule, error) {
	if s.cfg.Alerts == nil {
		return apitypes.AlertRule{}, errNoAlerts
	}
	rl, err := s.cfg.Alerts.Rule(actor(p), id)
	if err != nil {
		return rl, err
	}
	sel := model.Path(rl.Selector.Path)
	if !p.Can(auth.RoleViewer, sel) {
		return rl, fmt.Errorf("%w: alert rule %s", model.ErrNotFound, id)
	}
	if !p.Can(need, sel) {
		return rl, forbidden("changing alert rules on", need, sel)
	}
	return rl, nil
}

func (s *Server) getAlertRule(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rl, err := s.alertRule(p, r.PathValue("id"), auth.RoleViewer)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rl)
	return nil
}

func (s *Server) deleteAlertRule(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rl, err := s.alertRule(p, r.PathValue("id"), auth.RoleOperator)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Path = model.Path(rl.Selector.Path) })
	if err := s.cfg.Alerts.DeleteRule(r.Context(), rl.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// alertDevicePath is the path, as seen from this node, of the device of
// the alert c (its device label is a path of the node that owns it).
func alertDevicePath(c *model.Context) model.Path {
	dev := c.Labels[alerts.LabelDevice]
	if dev == "" {
		return ""
	}
	d, err := model.ParsePath(dev)
	if err != nil {
		return ""
	}
	segs := c.Path.Segments()
	if len(segs) < 2 {
		return ""
	}
	node, err := joinPath(segs[:len(segs)-2])
	if err != nil {
		return ""
	}
	return mapPath(node, d)
}

// canAlert reports whether p holds role on the alert c: on its path or
// its device's.
func canAlert(p *auth.Principal, role auth.Role, c *model.Context) bool {
	if p.Can(role, c.Path) {
		return true
	}
	d := alertDevicePath(c)
	return d != "" && p.Can(role, d)
}

// listAlerts: GET /api/v1/alerts?path=&state=&limit=&after=, the alerts
// under path (default /: this node's and its mirrors') that p sees.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Alerts == nil || s.cfg.Search == nil {
		return errNoAlerts
	}
	qv := r.URL.Query()
	prefix := model.Root
	if v := qv.Get("path"); v != "" {
		var err error
		if prefix, err = model.ParsePath(v); err != nil {
			return invalidf("path: %v", err)
		}
	}
	q := model.SearchQuery{Prefix: prefix, Type: alerts.AlertType, Limit: defaultSearchLimit}
	switch st := qv.Get("state"); st {
	case "":
	case apitypes.AlertPending, apitypes.AlertFiring, apitypes.AlertResolved:
		q.Vars = map[string]json.RawMessage{"state": json.RawMessage(strconv.Quote(st))}
	default:
		return invalidf("state %q: want pending, firing or resolved", st)
	}
	if v := qv.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSearchLimit {
			return invalidf("limit: want 1..%d", maxSearchLimit)
		}
		q.Limit = n
	}
	if v := qv.Get("after"); v != "" {
		a, err := model.ParsePath(v)
		if err != nil {
			return invalidf("after: %v", err)
		}
		q.After = a
	}
	var err error
	if q.Tenants, err = searchTenants(p, ""); err != nil {
		return err
	}
	page, err := s.cfg.Search.Search(r.Context(), q)
	if err != nil {
		return err
	}
	now := time.Now()
	out := apitypes.AlertPage{Alerts: []apitypes.Alert{}, Next: string(page.Next)}
	for _, c := range page.Contexts {
		if !alerts.IsAlertPath(c.Path) || !p.SeesTenant(c.Tenant) || !canAlert(p, auth.RoleViewer, c) {
			continue
		}
		out.Alerts = append(out.Alerts, alerts.AlertOf(c, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// alertAction: POST /api/v1/alerts/{path}/ack and /silence, on an alert
// of this node (/alerts/<id>, or just <id>) or mirrored (/peers/...).
func (s *Server) alertAction(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	segs, err := pathSegments(r.URL.EscapedPath(), alertsPrefix)
	if err != nil {
		return err
	}
	n := len(segs)
	if n < 2 || (segs[n-1] != alertActionAck && segs[n-1] != alertSilence) {
		return apiError(http.StatusNotFound, codeNotFound, "POST %s/{path}/ack or /silence", alertsPrefix)
	}
	action, segs := segs[n-1], segs[:n-1]
	if len(segs) == 1 {
		segs = []string{"alerts", segs[0]}
	}
	path, err := joinPath(segs)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Path, e.rec.Function = path, action })
	var until time.Time
	if action == alertSilence {
		var body apitypes.AlertSilence
		if err := s.decodeJSON(w, r, &body); err != nil {
			return err
		}
		if body.Until.IsZero() {
			return invalidf("until: a time is required (RFC 3339; one not after now lifts the silence)")
		}
		until = body.Until
	}
	notFound := apiError(http.StatusNotFound, codeNotFound, "alert %s not found", path)
	c, err := s.model.Get(path)
	if errors.Is(err, model.ErrNotFound) || (err == nil && (c.Type != alerts.AlertType || !alerts.IsAlertPath(path) || !p.SeesTenant(c.Tenant))) {
		return notFound
	}
	if err != nil {
		return err
	}
	if !canAlert(p, auth.RoleOperator, c) {
		if !canAlert(p, auth.RoleViewer, c) {
			return notFound
		}
		return forbidden("acting on alert", auth.RoleOperator, path)
	}
	var a apitypes.Alert
	switch {
	case path.Within(federation.PeersRoot):
		if !s.mounted(path) {
			return notFound
		}
		fed, err := s.federation()
		if err != nil {
			return err
		}
		body, _ := json.Marshal(struct {
			Action string    `json:"action"`
			Until  time.Time `json:"until,omitzero"`
		}{action, until})
		ctx, cancel := context.WithTimeout(r.Context(), remoteCallMargin)
		defer cancel()
		res, err := fed.Alert(ctx, identity(p), path, body)
		if err != nil {
			return peerError(path, err)
		}
		if err := json.Unmarshal(res, &a); err != nil {
			return fmt.Errorf("alert %s: the owner's answer: %w", path, err)
		}
		a.Path = string(path)
		noteAudit(r, func(e *auditEntry) { e.outcome = "forwarded" })
	case action == alertActionAck:
		if a, err = s.cfg.Alerts.Ack(r.Context(), actor(p), path); err != nil {
			return err
		}
	default:
		if a, err = s.cfg.Alerts.Silence(r.Context(), actor(p), path, until); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}
