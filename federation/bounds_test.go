package federation_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// peerField reads one field of a peer's status as the API shows it.
func peerField(p federation.PeerStatus, field string) any {
	b, _ := json.Marshal(p)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m[field]
}

// counter sums a counter of the service's metrics over the series whose
// labels include all of want.
func counter(t *testing.T, n *tnode, name string, want map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.svc.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// A provider that sends paths that are not canonical ("0/devices/d1"
// once mounted is /peers/p10/devices/d1: another provider's mirror), its
// own root (in log entries and in a snapshot), or paths outside what it
// publishes or was accepted for, has them all refused: nothing lands
// outside /peers/<it>/<its granted subtrees>, each refusal is counted by
// reason, and the link shows it.
func TestMountEscapeRefused(t *testing.T) {
	hq := newTNode(t, "hq", true)
	victim := newTNode(t, "p10", false)
	victim.put("/devices/d1", map[string]string{"a": "1"})
	hq.join(victim, federation.GrantRead)
	tstest.WaitFor(t, wait, "victim mirrored", func() bool { return hq.has("/peers/p10/devices/d1", varIs("a", "1")) })

	// p1 publishes its whole tree and hq accepts all of it: the escape.
	h := joinHostile(t, hq, "p1", federation.GrantRead)
	h.connect(federation.WireHello{})
	const victimPath = "/peers/p10/devices/d1"
	h.batch(4,
		putEntry(1, "0/devices/d1", map[string]string{"a": "666"}),
		entry(2, model.Mutation{Op: model.OpEvent, Path: "0/devices/d1", Event: &model.Event{Name: "forged", Level: model.LevelAlert}}),
		putEntry(3, "/", nil),
		putEntry(4, "/devices/ok", map[string]string{"a": "7"}),
	)
	// A snapshot carries the same attempt.
	h.send(federation.KindSnapshotBegin, federation.WireSnapBeg{})
	h.send(federation.KindSnapshotChunk, federation.WireSnapChk{Contexts: []*model.Context{
		{Path: "0/devices/d1", Type: "device", Variables: map[string]model.Variable{"a": {Value: []byte("667"), Type: model.TypeNumber}}},
		{Path: "/devices/ok", Type: "device", Variables: map[string]model.Variable{"a": {Value: []byte("7"), Type: model.TypeNumber}}},
	}})
	h.send(federation.KindSnapshotEnd, federation.WireSnapEnd{Seq: 10})
	tstest.WaitFor(t, wait, "snapshot acknowledged", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.acked >= 10
	})
	// p2 publishes /devices and /secret; hq accepted /devices and /groups.
	h2 := joinHostile(t, hq, "p2", federation.GrantRead, "/devices", "/groups")
	h2.connect(federation.WireHello{Publish: []model.Path{"/devices", "/secret"}})
	h2.batch(3,
		putEntry(1, "/secret/x", nil),
		putEntry(2, "/groups/g", nil),
		putEntry(3, "/devices/ok", nil),
	)

	if !hq.has(victimPath, varIs("a", "1")) {
		c, _ := hq.model.Get(victimPath)
		t.Fatalf("another provider's mirror was changed: %+v", c)
	}
	if evs, _ := hq.model.Events(victimPath, model.EventQuery{}); len(evs) != 0 {
		t.Fatalf("an event landed in another provider's mirror: %+v", evs)
	}
	root, err := hq.model.Get("/peers/p1")
	if err != nil || root.Type != "peer" || root.Tenant != "" {
		t.Fatalf("the mount's root was changed by the provider: %+v %v", root, err)
	}
	for _, p := range []string{"/peers/p2/secret/x", "/peers/p2/groups/g"} {
		if hq.has(p, nil) {
			t.Fatalf("%s mirrored: outside what p2 publishes or was accepted for", p)
		}
	}
	if !hq.has("/peers/p1/devices/ok", varIs("a", "7")) || !hq.has("/peers/p2/devices/ok", nil) {
		t.Fatal("the providers' valid entries were not applied")
	}
	// Nothing else exists under /peers.
	if err := walk(hq.model, "/peers", func(c *model.Context) {
		if !c.Path.Within("/peers/p1") && !c.Path.Within("/peers/p2") && !c.Path.Within("/peers/p10") && c.Path != "/peers" {
			t.Errorf("unexpected context %s", c.Path)
		}
	}); err != nil {
		t.Fatal(err)
	}

	// Entries 1-3 and the snapshot's first context have bad paths; /groups
	// is accepted but not published, /secret published but not accepted.
	for _, c := range []struct {
		peer, reason string
		want         float64
	}{{"p1", "bad_path", 4}, {"p2", "not_published", 1}, {"p2", "not_granted", 1}} {
		got := counter(t, hq, "strata_federation_entries_rejected_total", map[string]string{"provider": c.peer, "reason": c.reason})
		if got != c.want {
			t.Errorf("rejected{provider=%s,reason=%s} = %v, want %v", c.peer, c.reason, got, c.want)
		}
	}
	st := hq.peer("p1", "provider")
	if st.State != "connected" || !strings.Contains(st.LastError, "refused") {
		t.Fatalf("link not flagged: state %s, last error %q", st.State, st.LastError)
	}
	if n, _ := peerField(st, "rejected_entries").(float64); n != 4 {
		t.Fatalf("rejected_entries = %v", peerField(st, "rejected_entries"))
	}
}

func walk(m *model.Model, root model.Path, fn func(*model.Context)) error {
	_, err := m.Snapshot(root, func(c *model.Context) error { fn(c); return nil })
	return err
}
