package alerts

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// Notifications, as Alertmanager groups them. Every alert of the tree —
// this node's and its mirrors' — goes to the first route whose matchers
// its labels all satisfy, into the group of that route named by the
// values of the route's group_by labels. A group is notified:
//
//   - group_wait after it was made, then at most every group_interval,
//     when it holds a change not notified yet: an alert that began
//     firing or resolved;
//   - every repeat_interval while it holds firing alerts and nothing
//     changed.
//
// Pending and silenced alerts are not in groups. What each group last
// notified (hashes of its alerts' path and state) and when is a record
// (kind alert-notify), written after the receiver accepted the
// notification: a restart does not notify again what was notified. A
// crash between the receiver's answer and that record's commit notifies
// that change again after the restart (at least once).

// Receiver is where notifications go; Webhook is its only kind yet.
type Receiver struct {
	Name    string
	Webhook *Webhook
}

// Webhook posts notifications as JSON to URL; CAFile, when set, is the
// PEM of the CA its TLS certificate must chain to (else the system's).
type Webhook struct {
	URL     string
	CAFile  string
	Timeout time.Duration // default 10s
}

// Route sends the alerts matching Match to Receiver, grouped by GroupBy.
type Route struct {
	Receiver       string
	Match          map[string]string
	GroupBy        []string
	GroupWait      time.Duration
	GroupInterval  time.Duration
	RepeatInterval time.Duration // 0: never repeat
}

// WebhookMessage is the body a webhook receives (the shape of
// Alertmanager's webhook, version 4, with Strata's fields added).
type WebhookMessage struct {
	Version      string            `json:"version"`
	GroupKey     string            `json:"groupKey"`
	Receiver     string            `json:"receiver"`
	Status       string            `json:"status"`
	Node         string            `json:"node"`
	GroupLabels  map[string]string `json:"groupLabels"`
	CommonLabels map[string]string `json:"commonLabels"`
	Alerts       []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status   string            `json:"status"`
	Labels   map[string]string `json:"labels"`
	Path     string            `json:"path"`
	Tenant   string            `json:"tenant,omitempty"`
	StartsAt time.Time         `json:"startsAt"`
	EndsAt   time.Time         `json:"endsAt,omitzero"`
	Value    json.RawMessage   `json:"value,omitempty"`
	Summary  string            `json:"summary,omitempty"`
	Acked    bool              `json:"acked"`
}

type receiver struct {
	name   string
	url    string
	client *http.Client
}

type notifier struct {
	s         *Service
	receivers map[string]*receiver
	routes    []Route
	in        chan model.Path
	overflow  atomic.Bool

	alerts map[model.Path]*view
	groups map[string]*group
}

type view struct {
	alert apitypes.Alert
	group string // "" when in none
	// until is when a silence ends: the alert is taken again then (the
	// end of a silence is no change of the tree).
	until time.Time
}

type group struct {
	id      string
	route   int
	labels  map[string]string
	members map[model.Path]bool
	created time.Time
	retry   time.Time
	st      groupState
}

// groupState is what a group last notified: the record of kind
// alert-notify.
type groupState struct {
	Receiver string            `json:"receiver"`
	Labels   map[string]string `json:"labels,omitempty"`
	Sent     []string          `json:"sent,omitempty"` // sorted hashes of "path state"
	LastSent time.Time         `json:"last_sent,omitzero"`
}

func newNotifier(s *Service, rs []Receiver, routes []Route) (*notifier, error) {
	n := &notifier{s: s, receivers: map[string]*receiver{}, routes: routes, in: make(chan model.Path, 4096)}
	for _, r := range rs {
		if r.Name == "" || n.receivers[r.Name] != nil {
			return nil, fmt.Errorf("alerts: receiver %q: names must be given and unique", r.Name)
		}
		if r.Webhook == nil {
			return nil, fmt.Errorf("alerts: receiver %q has no webhook", r.Name)
		}
		rc, err := newWebhook(r.Name, *r.Webhook)
		if err != nil {
			return nil, err
		}
		n.receivers[r.Name] = rc
	}
	for i, rt := range routes {
		if n.receivers[rt.Receiver] == nil {
			return nil, fmt.Errorf("alerts: route %d: no receiver %q", i, rt.Receiver)
		}
		if rt.GroupWait < 0 || rt.GroupInterval < 0 || rt.RepeatInterval < 0 {
			return nil, fmt.Errorf("alerts: route %d: durations must not be negative", i)
		}
	}
	return n, nil
}

func newWebhook(name string, w Webhook) (*receiver, error) {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("alerts: receiver %q: webhook url %q: want an http or https URL", name, w.URL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if w.CAFile != "" {
		pem, err := os.ReadFile(w.CAFile)
		if err != nil {
			return nil, fmt.Errorf("alerts: receiver %q: ca_file: %w", name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("alerts: receiver %q: ca_file %s holds no PEM certificate", name, w.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if w.Timeout <= 0 {
		w.Timeout = 10 * time.Second
	}
	return &receiver{name: name, url: w.URL, client: &http.Client{Transport: tr, Timeout: w.Timeout}}, nil
}

// observe hands a changed alert path to the notifier, never waiting.
func (n *notifier) observe(p model.Path) {
	if len(n.routes) == 0 {
		return
	}
	select {
	case n.in <- p:
	default:
		n.overflow.Store(true)
		n.s.m.dropped.Inc()
	}
}

func (n *notifier) run() {
	if len(n.routes) == 0 {
		return
	}
	s := n.s
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	leading := false
	take := func() {
		if s.leading() {
			if err := n.load(); err != nil {
				s.log.Warn("alerts: loading notification state", "err", err)
				return
			}
			leading = true
		}
	}
	take()
	for {
		select {
		case <-s.stop:
			return
		case p := <-n.in:
			if leading {
				n.update(p)
			}
		case <-t.C:
			switch {
			case leading && !s.leading():
				leading = false
				n.alerts, n.groups = nil, nil
			case !leading:
				take()
			default:
				if n.overflow.Swap(false) {
					if err := n.load(); err != nil {
						s.log.Warn("alerts: reloading notification state", "err", err)
					}
				}
				n.flush(s.now())
			}
		}
	}
}

// load reads the groups' records and every alert of the tree.
func (n *notifier) load() error {
	s := n.s
	saved := map[string]groupState{}
	err := s.cfg.Tree.Records(KindNotify, func(key string, b []byte) error {
		var st groupState
		if json.Unmarshal(b, &st) == nil {
			saved[key] = st
		}
		return nil
	})
	if err != nil {
		return err
	}
	n.alerts, n.groups = map[model.Path]*view{}, map[string]*group{}
	now := s.now()
	err = s.each(model.SearchQuery{Type: AlertType}, func(c *model.Context) {
		if IsAlertPath(c.Path) {
			n.put(c, now, saved)
		}
	})
	if err != nil {
		return err
	}
	// Groups that hold no alert any more: their records go.
	var stale []model.Mutation
	for id := range saved {
		if n.groups[id] == nil {
			stale = append(stale, model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: KindNotify, Key: id}})
		}
	}
	if len(stale) > 0 {
		if _, err := s.cfg.Tree.Apply(context.Background(), stale...); err != nil {
			s.log.Warn("alerts: dropping stale notification groups", "err", err)
		}
	}
	s.m.groups.Set(float64(len(n.groups)))
	return nil
}

// update takes the alert at p as the tree now has it.
func (n *notifier) update(p model.Path) {
	c, err := n.s.cfg.Tree.Get(p)
	if err != nil || c.Type != AlertType {
		n.drop(p)
		return
	}
	n.put(c, n.s.now(), nil)
}

func (n *notifier) drop(p model.Path) {
	v := n.alerts[p]
	if v == nil {
		return
	}
	delete(n.alerts, p)
	if g := n.groups[v.group]; g != nil {
		delete(g.members, p)
	}
}

// put places alert c in its group (or none), making the group with its
// saved state when new.
func (n *notifier) put(c *model.Context, now time.Time, saved map[string]groupState) {
	n.drop(c.Path)
	a := AlertOf(c, now)
	v := &view{alert: a}
	n.alerts[c.Path] = v
	if a.Silenced {
		v.until = a.SilencedUntil
	}
	if (a.State != apitypes.AlertFiring && a.State != apitypes.AlertResolved) || a.Silenced {
		return
	}
	ri := -1
	for i, rt := range n.routes {
		if matches(rt.Match, c.Labels) {
			ri = i
			break
		}
	}
	if ri < 0 {
		return
	}
	rt := n.routes[ri]
	gl := map[string]string{}
	for _, k := range rt.GroupBy {
		gl[k] = c.Labels[k]
	}
	id := groupID(ri, rt.Receiver, gl)
	g := n.groups[id]
	if g == nil {
		g = &group{id: id, route: ri, labels: gl, members: map[model.Path]bool{}, created: now}
		if st, ok := saved[id]; ok {
			g.st = st
		} else if b, err := n.s.cfg.Tree.Record(KindNotify, id); err == nil {
			json.Unmarshal(b, &g.st)
		}
		n.groups[id] = g
		n.s.m.groups.Set(float64(len(n.groups)))
	}
	g.members[c.Path] = true
	v.group = id
}

func matches(want, labels map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func groupID(route int, receiver string, labels map[string]string) string {
	h := fnv.New128a()
	fmt.Fprintf(h, "%d\x00%s", route, receiver)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(h, "\x00%s=%s", k, labels[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func memberHash(p model.Path, state string) string {
	h := fnv.New64a()
	io.WriteString(h, string(p)+" "+state)
	return hex.EncodeToString(h.Sum(nil))
}

// flush notifies the groups that are due at now.
func (n *notifier) flush(now time.Time) {
	for p, v := range n.alerts {
		if !v.until.IsZero() && !now.Before(v.until) {
			n.update(p) // its silence ended
		}
	}
	for _, id := range slices.Sorted(maps.Keys(n.groups)) {
		g := n.groups[id]
		if len(g.members) == 0 {
			delete(n.groups, id)
			n.s.m.groups.Set(float64(len(n.groups)))
			if _, err := n.s.cfg.Tree.Apply(context.Background(), model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: KindNotify, Key: id}}); err != nil {
				n.s.log.Warn("alerts: dropping an empty notification group", "err", err)
			}
			continue
		}
		if now.Before(g.retry) {
			continue
		}
		rt := n.routes[g.route]
		sent := map[string]bool{}
		for _, h := range g.st.Sent {
			sent[h] = true
		}
		changed, firing := false, false
		for p := range g.members {
			st := n.alerts[p].alert.State
			firing = firing || st == apitypes.AlertFiring
			changed = changed || !sent[memberHash(p, st)]
		}
		switch {
		case changed && g.st.LastSent.IsZero() && !now.Before(g.created.Add(rt.GroupWait)):
		case changed && !g.st.LastSent.IsZero() && !now.Before(g.st.LastSent.Add(rt.GroupInterval)):
		case !changed && firing && rt.RepeatInterval > 0 && !now.Before(g.st.LastSent.Add(rt.RepeatInterval)):
		default:
			continue
		}
		n.send(g, sent, now)
	}
}

// send notifies g's receiver of its firing alerts and of its resolved
// ones not notified yet, and records what it notified.
func (n *notifier) send(g *group, sent map[string]bool, now time.Time) {
	rt := n.routes[g.route]
	rc := n.receivers[rt.Receiver]
	msg := WebhookMessage{Version: "4", GroupKey: g.id, Receiver: rc.name, Status: apitypes.AlertResolved,
		Node: n.s.cfg.Node, GroupLabels: g.labels}
	var hashes []string
	var common map[string]string
	for _, p := range slices.Sorted(maps.Keys(g.members)) {
		a := n.alerts[p].alert
		h := memberHash(p, a.State)
		hashes = append(hashes, h)
		if a.State == apitypes.AlertResolved && sent[h] {
			continue
		}
		if a.State == apitypes.AlertFiring {
			msg.Status = apitypes.AlertFiring
		}
		msg.Alerts = append(msg.Alerts, WebhookAlert{Status: a.State, Labels: a.Labels, Path: a.Path, Tenant: a.Tenant,
			StartsAt: a.Since, EndsAt: a.Resolved, Value: a.Value, Summary: a.Summary, Acked: a.Acked})
		if common == nil {
			common = maps.Clone(a.Labels)
		} else {
			maps.DeleteFunc(common, func(k, v string) bool { return a.Labels[k] != v })
		}
	}
	msg.CommonLabels = common
	if msg.CommonLabels == nil {
		msg.CommonLabels = map[string]string{}
	}
	if err := rc.post(n.s.stop, msg); err != nil {
		n.s.m.notified.WithLabelValues(rc.name, "failed").Inc()
		n.s.log.Warn("alerts: notification failed", "receiver", rc.name, "group", g.id, "err", err)
		g.retry = now.Add(min(max(rt.GroupInterval, n.s.cfg.Interval), time.Minute))
		return
	}
	n.s.m.notified.WithLabelValues(rc.name, "sent").Inc()
	slices.Sort(hashes)
	g.st = groupState{Receiver: rc.name, Labels: g.labels, Sent: hashes, LastSent: now}
	b, _ := json.Marshal(g.st)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.s.cfg.Tree.Apply(ctx, model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindNotify, Key: g.id, Value: b}}); err != nil {
		n.s.log.Warn("alerts: recording a notification", "group", g.id, "err", err)
	}
}

// post sends msg; a status other than 2xx is an error.
func (r *receiver) post(stop <-chan struct{}, msg WebhookMessage) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "strata-alerts")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return errors.New("webhook answered " + resp.Status)
	}
	return nil
}
