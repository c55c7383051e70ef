package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/history"
)

func mustQuery(t *testing.T, v string) history.Query {
	t.Helper()
	q, err := history.ParseQuery(map[string][]string{"var": {v}}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// historyUser creates a user of tenant with a viewer grant on subtree and
// returns a client with its token and the token's id.
func historyUser(t *testing.T, f *fedNode, name, tenant, subtree string) (*client.Client, string) {
	t.Helper()
	ctx := context.Background()
	sys := &auth.Principal{User: "admin", System: true}
	if _, err := f.n.auth.CreateUser(ctx, sys, auth.UserSpec{Name: name, Password: "password-" + name, Tenant: tenant,
		Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: subtree}}}); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := f.n.auth.CreateToken(ctx, sys, name, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f.admin.WithToken(secret), tok.ID
}

// putSamples writes values of variable name on the context at p, one
// second apart, ending now.
func putSamples(t *testing.T, n *Node, p model.Path, name string, vals ...float64) {
	t.Helper()
	start := time.Now().Add(-time.Duration(len(vals)) * time.Second)
	for i, v := range vals {
		vv, err := model.NewVariable(json.RawMessage(fmt.Sprint(v)), start.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p,
			Variables: map[string]model.Variable{name: vv}}); err != nil {
			t.Fatal(err)
		}
	}
}

func values(h *client.History) []float64 {
	out := make([]float64, len(h.Points))
	for i, p := range h.Points {
		if p.V != nil {
			out[i] = *p.V
		}
	}
	return out
}

// TestHistoryAPI reads a device's history and tries to cross the
// checks: another tenant, a user without a grant on the path, a revoked
// token, a bad query.
func TestHistoryAPI(t *testing.T) {
	ctx := context.Background()
	f := startFedNode(t, "plant7", "")
	tstest.WaitFor(t, harnessWait, "history following the log", func() bool { _, ok := f.n.History().Cursor(); return ok })
	d := enrollDevice(t, f.n, "acme", "hw-1")
	other := enrollDevice(t, f.n, "globex", "hw-2")
	putSamples(t, f.n, d, "temp", 20, 20.5, 21, 21.5, 22)
	putSamples(t, f.n, other, "temp", 1)
	// A string variable keeps no history.
	if _, _, err := f.admin.PutContext(ctx, string(d), client.ContextUpdate{Variables: map[string]json.RawMessage{"fw": json.RawMessage(`"1.2"`)}}); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessWait, "five points", func() (bool, error) {
		h, err := f.admin.History(ctx, string(d), client.HistoryQuery{Var: "temp"})
		return err == nil && len(h.Points) == 5, err
	})
	alice, aliceTok := historyUser(t, f, "alice", "acme", "/")
	bob, _ := historyUser(t, f, "bob", "globex", "/")
	carol, _ := historyUser(t, f, "carol", "acme", "/sites")

	h, err := alice.History(ctx, string(d), client.HistoryQuery{Var: "temp"})
	if err != nil || h.Path != string(d) || h.Var != "temp" || fmt.Sprint(values(h)) != "[20 20.5 21 21.5 22]" {
		t.Fatalf("alice: %+v, %v", h, err)
	}
	h, err = alice.History(ctx, string(d), client.HistoryQuery{Var: "temp", Step: "1h", Agg: "count"})
	if err != nil || len(h.Points) < 1 || h.Step != 3600_000 || h.Agg != "count" {
		t.Fatalf("alice with a step: %+v, %v", h, err)
	}
	if n := 0.0; len(h.Points) > 0 {
		for _, p := range h.Points {
			n += *p.V
		}
		if n != 5 {
			t.Fatalf("counts add up to %v", n)
		}
	}
	if h, err := alice.History(ctx, string(d), client.HistoryQuery{Var: "fw"}); err != nil || len(h.Points) != 0 {
		t.Fatalf("a string variable: %+v, %v", h, err)
	}

	// Another tenant's device answers exactly as a missing context.
	_, errOther := bob.History(ctx, string(d), client.HistoryQuery{Var: "temp"})
	_, errMissing := bob.History(ctx, "/devices/nothing-here", client.HistoryQuery{Var: "temp"})
	if apiStatus(errOther) != http.StatusNotFound || apiStatus(errMissing) != http.StatusNotFound ||
		strings.Replace(errOther.Error(), string(d), "P", 1) != strings.Replace(errMissing.Error(), "/devices/nothing-here", "P", 1) {
		t.Fatalf("another tenant's device: %v; a missing one: %v", errOther, errMissing)
	}
	if h, err := bob.History(ctx, string(other), client.HistoryQuery{Var: "temp"}); err != nil || len(h.Points) != 1 {
		t.Fatalf("bob's own device: %+v, %v", h, err)
	}
	// No grant on the path.
	if _, err := carol.History(ctx, string(d), client.HistoryQuery{Var: "temp"}); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("no grant: %v", err)
	}
	// Bad queries.
	for _, q := range []client.HistoryQuery{{}, {Var: "temp", Agg: "avg"}, {Var: "temp", Step: "1ms"}, {Var: "temp", Agg: "median", Step: "1m"},
		{Var: "temp", From: "yesterday"}, {Var: "temp", From: "2026-12-07T10:00:00Z", To: "2026-12-07T09:00:00Z"},
		{Var: "temp", From: "0", To: "253402300799999", Step: "1s"}} {
		if _, err := alice.History(ctx, string(d), q); !client.IsCode(err, "invalid") {
			t.Errorf("query %+v: %v, want 400 invalid", q, err)
		}
	}
	// The node's metrics carry history's.
	mfs, err := f.n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]float64{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "strata_history_") && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			seen[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for _, name := range []string{"strata_history_points_ingested_total", "strata_history_chunks_flushed_total", "strata_history_stored_bytes",
		"strata_history_compaction_runs_total", "strata_history_replay_gaps_total"} {
		if _, ok := seen[name]; !ok {
			t.Errorf("metric %s missing: %v", name, seen)
		}
	}
	if seen["strata_history_points_ingested_total"] < 6 {
		t.Errorf("points ingested: %v", seen)
	}
	// A revoked token.
	if err := f.admin.RevokeToken(ctx, aliceTok); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.History(ctx, string(d), client.HistoryQuery{Var: "temp"}); apiStatus(err) != http.StatusUnauthorized {
		t.Fatalf("a revoked token: %v", err)
	}
}

// TestHistoryRoutedDown reads a device's history at HQ through its
// mount: the read goes to the probe that owns the device, which checks
// the operator's tenant and the subtrees it publishes.
func TestHistoryRoutedDown(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p7 := startFedNode(t, "plant7", "")
	tstest.WaitFor(t, harnessWait, "history following the log", func() bool { _, ok := p7.n.History().Cursor(); return ok })
	d := enrollDevice(t, p7.n, "acme", "hw-1")
	hidden := model.Path("/secret/d")
	if _, err := p7.n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: hidden, Type: "device", Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	putSamples(t, p7.n, d, "temp", 1, 2, 3)
	putSamples(t, p7.n, hidden, "temp", 9)
	joinNode(t, eu, hq, "eu", "read")
	joinNode(t, p7, eu, "plant7", "read", "/devices")
	mounted := "/peers/eu/peers/plant7" + string(d)
	tstest.WaitForErr(t, harnessWait, "plant7's device at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, mounted)
		return err == nil, err
	})
	tstest.WaitForErr(t, harnessWait, "three points at plant7", func() (bool, error) {
		h, err := p7.admin.History(ctx, string(d), client.HistoryQuery{Var: "temp"})
		return err == nil && len(h.Points) == 3, err
	})
	h, err := hq.admin.History(ctx, mounted, client.HistoryQuery{Var: "temp"})
	if err != nil || h.Path != mounted || fmt.Sprint(values(h)) != "[1 2 3]" {
		t.Fatalf("hq: %+v, %v", h, err)
	}
	h, err = hq.admin.History(ctx, mounted, client.HistoryQuery{Var: "temp", Step: "1h", Agg: "max"})
	if err != nil || len(h.Points) == 0 || *h.Points[len(h.Points)-1].V != 3 {
		t.Fatalf("hq with a step: %+v, %v", h, err)
	}
	// HQ keeps no history of its mirrors: the answer came from plant7.
	if ps, err := hq.n.History().Read(ctx, model.Path(mounted), mustQuery(t, "temp")); err != nil || len(ps) != 0 {
		t.Fatalf("hq recorded a mirror's history: %v, %v", ps, err)
	}
	// Another tenant's operator at hq: plant7 answers not found.
	sys := &auth.Principal{User: "admin", System: true}
	if _, err := hq.n.auth.CreateUser(ctx, sys, auth.UserSpec{Name: "bob", Password: "password-bob", Tenant: "globex",
		Grants: []auth.Grant{{Role: auth.RoleViewer, Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}
	bobTok, _, err := hq.n.auth.CreateToken(ctx, sys, "bob", "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hq.admin.WithToken(bobTok).History(ctx, mounted, client.HistoryQuery{Var: "temp"}); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("another tenant at hq: %v", err)
	}
	// A subtree plant7 does not publish is not read through the link,
	// even by a system administrator asking for it directly.
	if _, err := hq.n.Federation().History(ctx, federation.Identity{User: "admin", System: true}, "/peers/eu/peers/plant7"+model.Path(hidden), []byte("var=temp")); err == nil ||
		!strings.Contains(err.Error(), "not published") {
		t.Fatalf("an unpublished subtree: %v", err)
	}
	// plant7 audited the reads it answered.
	recs, err := p7.admin.Audit(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	var reads int
	for _, r := range overLinks(recs) {
		if r.Op == "history" {
			reads++
		}
	}
	if reads < 3 {
		t.Fatalf("plant7 audited %d history reads: %+v", reads, recs)
	}
}
