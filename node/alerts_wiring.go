package node

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/audit"
)

// Interface guards.
var _ federation.AlertActor = (*fedLocal)(nil)

// wireAlerts builds the alerts service: it follows the model's changes
// (a commit hook that only queues) and is started with the node.
func (n *Node) wireAlerts() error {
	search := searchOf(n.store)
	if search == nil {
		n.log.Info("alerts are off: the store has no search")
		return nil
	}
	ac := n.cfg.Alerts
	cfg := alerts.Config{
		Node: n.cfg.Name, Tree: n.model, Search: search.Search, Logger: n.log, Registerer: n.reg,
		Interval: ac.EvalInterval.D(), Queue: ac.Queue, ResolvedRetention: ac.ResolvedRetention.D(),
	}
	if n.cluster != nil {
		cfg.Leading = n.cluster.IsLeader // the leader evaluates and notifies
	}
	for _, r := range ac.Receivers {
		rc := alerts.Receiver{Name: r.Name}
		if r.Webhook != nil {
			rc.Webhook = &alerts.Webhook{URL: r.Webhook.URL, CAFile: n.cfg.Path(r.Webhook.CAFile), Timeout: r.Webhook.Timeout.D()}
		}
		cfg.Receivers = append(cfg.Receivers, rc)
	}
	for _, r := range ac.Routes {
		wait, interval, repeat := r.Timing()
		cfg.Routes = append(cfg.Routes, alerts.Route{Receiver: r.Receiver, Match: r.Match, GroupBy: r.GroupBy,
			GroupWait: wait, GroupInterval: interval, RepeatInterval: repeat})
	}
	var err error
	if n.alerts, err = alerts.New(cfg); err != nil {
		return err
	}
	n.model.OnCommit(n.alerts.Observe)
	return nil
}

// AlertAction is the body of an alert request over a link: "ack", or
// "silence" until Until.
type AlertAction struct {
	Action string    `json:"action"`
	Until  time.Time `json:"until,omitzero"`
}

// Alert actions.
const (
	AlertAck     = "ack"
	AlertSilence = "silence"
)

// auditAlert is the audit operation of an alert request over a link.
const auditAlert = "alert"

// Alert acts on an alert this node owns for the operator a consumer's
// request carries: another tenant's alert answers as a missing one.
func (l *fedLocal) Alert(ctx context.Context, consumer string, id federation.Identity, p model.Path, body []byte) ([]byte, error) {
	var act AlertAction
	err := json.Unmarshal(body, &act)
	var a apitypes.Alert
	by := id.User + "@" + consumer
	if id.User == "" {
		by = consumer
	}
	switch {
	case err != nil:
		err = fmt.Errorf("%w: alert request: %v", model.ErrInvalid, err)
	case l.n.alerts == nil:
		err = fmt.Errorf("%w: this node keeps no alerts", model.ErrNotFound)
	case act.Action == AlertAck:
		a, err = l.n.alerts.Ack(ctx, alerts.Actor{User: by, Tenant: id.Tenant, System: id.System}, p)
	case act.Action == AlertSilence:
		a, err = l.n.alerts.Silence(ctx, alerts.Actor{User: by, Tenant: id.Tenant, System: id.System}, p, act.Until)
	default:
		err = fmt.Errorf("%w: alert action %q", model.ErrInvalid, act.Action)
	}
	rec := fedRecord(consumer, id, auditAlert, p, act.Action, err, audit.OK)
	l.n.audit.Write(rec)
	if err != nil {
		return nil, err
	}
	return json.Marshal(a)
}
