package alerts

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// fakeTree is the tree in memory: contexts and records, puts merged as
// the model merges them.
type fakeTree struct {
	mu   sync.Mutex
	ctxs map[model.Path]*model.Context
	recs map[string]map[string][]byte
}

func newFakeTree() *fakeTree {
	return &fakeTree{ctxs: map[model.Path]*model.Context{}, recs: map[string]map[string][]byte{}}
}

func (f *fakeTree) Get(p model.Path) (*model.Context, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.ctxs[p]; ok {
		return c.Clone(), nil
	}
	return nil, model.ErrNotFound
}

func (f *fakeTree) Record(kind, key string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.recs[kind][key]; ok {
		return b, nil
	}
	return nil, model.ErrNotFound
}

func (f *fakeTree) Records(kind string, fn func(string, []byte) error) error {
	f.mu.Lock()
	m := maps.Clone(f.recs[kind])
	f.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := fn(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeTree) Apply(_ context.Context, muts ...model.Mutation) ([]model.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range muts {
		switch m.Op {
		case model.OpPut:
			c := f.ctxs[m.Path]
			if c == nil {
				c = &model.Context{Path: m.Path, Labels: map[string]string{}, Variables: map[string]model.Variable{}}
				f.ctxs[m.Path] = c
			}
			if m.Type != "" {
				c.Type = m.Type
			}
			if m.Tenant != "" {
				c.Tenant = m.Tenant
			}
			maps.Copy(c.Labels, m.Labels)
			maps.Copy(c.Variables, m.Variables)
		case model.OpDelete:
			delete(f.ctxs, m.Path)
		case model.OpPutRecord:
			if f.recs[m.Record.Kind] == nil {
				f.recs[m.Record.Kind] = map[string][]byte{}
			}
			f.recs[m.Record.Kind][m.Record.Key] = m.Record.Value
		case model.OpDeleteRecord:
			delete(f.recs[m.Record.Kind], m.Record.Key)
		}
	}
	return nil, nil
}

func (f *fakeTree) search(_ context.Context, q model.SearchQuery) (model.SearchPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*model.Context
	for _, p := range slices.Sorted(maps.Keys(f.ctxs)) {
		c := f.ctxs[p]
		match := true
		for k, v := range q.Vars {
			match = match && string(c.Variables[k].Value) == string(v)
		}
		if match && (q.Type == "" || c.Type == q.Type) && (q.Prefix == "" || p.Within(q.Prefix)) && p > q.After {
			out = append(out, c.Clone())
		}
	}
	return model.SearchPage{Contexts: out}, nil
}

// receiverLog is a webhook that keeps what it received.
type receiverLog struct {
	mu   sync.Mutex
	msgs []WebhookMessage
	fail bool
}

func (r *receiverLog) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var m WebhookMessage
	json.Unmarshal(b, &m)
	r.msgs = append(r.msgs, m)
}

func (r *receiverLog) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *receiverLog) last() WebhookMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[len(r.msgs)-1]
}

// clock is the tests' fake time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	return t
}

func testNotifier(t *testing.T, tree *fakeTree, url string, clk *clock) *notifier {
	t.Helper()
	s, err := New(Config{Node: "hq", Tree: tree, Search: tree.search, Now: clk.Now,
		Receivers: []Receiver{{Name: "ops", Webhook: &Webhook{URL: url}}},
		Routes: []Route{{Receiver: "ops", Match: map[string]string{"severity": "critical"}, GroupBy: []string{"alertname"},
			GroupWait: 30 * time.Second, GroupInterval: 5 * time.Minute, RepeatInterval: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.notifier.load(); err != nil {
		t.Fatal(err)
	}
	return s.notifier
}

func putAlert(t *testing.T, tree *fakeTree, n *notifier, p model.Path, name, severity, state string, at time.Time) {
	t.Helper()
	tree.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: AlertType,
		Labels:    map[string]string{LabelName: name, LabelSeverity: severity},
		Variables: map[string]model.Variable{"state": strVar(state, at), "since": timeVar(at)}})
	n.update(p)
}

// Grouping with a fake clock: group_wait, then one notification per
// change at most every group_interval, repeats every repeat_interval,
// pending, silenced and unrouted alerts left out, resolved alerts
// notified once, and nothing notified again after a restart.
func TestNotifyGroups(t *testing.T) {
	rl := &receiverLog{}
	srv := httptest.NewServer(rl)
	defer srv.Close()
	tree := newFakeTree()
	clk := &clock{now: t0}
	n := testNotifier(t, tree, srv.URL, clk)

	putAlert(t, tree, n, "/alerts/a1", "hot", "critical", apitypes.AlertFiring, t0)
	putAlert(t, tree, n, "/peers/p1/alerts/a2", "hot", "critical", apitypes.AlertFiring, t0)
	putAlert(t, tree, n, "/alerts/a3", "hot", "critical", apitypes.AlertPending, t0)
	putAlert(t, tree, n, "/alerts/a4", "hot", "warning", apitypes.AlertFiring, t0)
	n.flush(clk.set(t0.Add(29 * time.Second)))
	if rl.count() != 0 {
		t.Fatal("notified before group_wait")
	}
	n.flush(clk.set(t0.Add(30 * time.Second)))
	if rl.count() != 1 || len(rl.last().Alerts) != 2 || rl.last().Status != "firing" || rl.last().GroupLabels["alertname"] != "hot" {
		t.Fatalf("first: %d %+v", rl.count(), rl.last())
	}
	n.flush(clk.set(t0.Add(40 * time.Second)))
	if rl.count() != 1 {
		t.Fatal("notified again without a change")
	}
	// a1 resolves: notified at the next group_interval, once.
	putAlert(t, tree, n, "/alerts/a1", "hot", "critical", apitypes.AlertResolved, t0.Add(time.Minute))
	n.flush(clk.set(t0.Add(5 * time.Minute)))
	if rl.count() != 1 {
		t.Fatal("notified before group_interval")
	}
	n.flush(clk.set(t0.Add(5*time.Minute + 30*time.Second)))
	if m := rl.last(); rl.count() != 2 || len(m.Alerts) != 2 || m.Alerts[0].Status != "resolved" || m.Alerts[1].Status != "firing" {
		t.Fatalf("second: %+v", m)
	}
	// A silenced alert joining is no change.
	tree.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/alerts/a5", Type: AlertType,
		Labels: map[string]string{LabelName: "hot", LabelSeverity: "critical"},
		Variables: map[string]model.Variable{"state": strVar("firing", t0), "silenced": {Value: json.RawMessage("true"), Type: model.TypeBool},
			"silenced_until": timeVar(t0.Add(90 * time.Minute))}})
	n.update("/alerts/a5")
	n.flush(clk.set(t0.Add(20 * time.Minute)))
	if rl.count() != 2 {
		t.Fatalf("a silenced alert was notified: %+v", rl.last())
	}
	// repeat_interval: the firing a2 again, not the resolved a1.
	n.flush(clk.set(t0.Add(5*time.Minute + 30*time.Second + time.Hour)))
	if m := rl.last(); rl.count() != 3 || len(m.Alerts) != 1 || m.Alerts[0].Path != "/peers/p1/alerts/a2" {
		t.Fatalf("repeat: %+v", m)
	}

	// The silence ends: a5 joins the group, a change.
	n.flush(clk.set(t0.Add(95 * time.Minute)))
	if m := rl.last(); rl.count() != 4 || len(m.Alerts) != 2 || m.Alerts[0].Path != "/alerts/a5" {
		t.Fatalf("the silence ended: %+v", m)
	}

	// A restart: the state comes back from the records; nothing is sent
	// until something changes.
	n2 := testNotifier(t, tree, srv.URL, clk)
	n2.flush(clk.set(t0.Add(2 * time.Hour)))
	if rl.count() != 4 {
		t.Fatalf("notified again after a restart: %+v", rl.last())
	}
	putAlert(t, tree, n2, "/alerts/a6", "hot", "critical", apitypes.AlertFiring, t0.Add(2*time.Hour))
	n2.flush(clk.set(t0.Add(2*time.Hour + 10*time.Minute)))
	if m := rl.last(); rl.count() != 5 || len(m.Alerts) != 3 {
		t.Fatalf("after the restart: %+v", m)
	}

	// A failed send is tried again, and counted.
	rl.mu.Lock()
	rl.fail = true
	rl.mu.Unlock()
	putAlert(t, tree, n2, "/alerts/a7", "hot", "critical", apitypes.AlertFiring, t0.Add(3*time.Hour))
	n2.flush(clk.set(t0.Add(3 * time.Hour)))
	rl.mu.Lock()
	rl.fail = false
	rl.mu.Unlock()
	n2.flush(clk.set(t0.Add(3*time.Hour + 30*time.Second)))
	if rl.count() != 5 {
		t.Fatal("retried before the retry time")
	}
	n2.flush(clk.set(t0.Add(3*time.Hour + time.Minute)))
	if m := rl.last(); rl.count() != 6 || len(m.Alerts) != 4 {
		t.Fatalf("retry: %+v", m)
	}
	// Deleted alerts leave their group; an empty group goes with its
	// record.
	for _, p := range []model.Path{"/alerts/a1", "/peers/p1/alerts/a2", "/alerts/a5", "/alerts/a6", "/alerts/a7"} {
		tree.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: p})
		n2.update(p)
	}
	n2.flush(clk.set(t0.Add(4 * time.Hour)))
	if len(n2.groups) != 0 || len(tree.recs[KindNotify]) != 0 || rl.count() != 6 {
		t.Fatalf("groups %d, records %d, sent %d", len(n2.groups), len(tree.recs[KindNotify]), rl.count())
	}
}
