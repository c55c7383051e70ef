package alerts

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// When the evaluator's queue is full, changes are dropped and counted,
// and the next tick rescans the rules' devices from the tree, so the
// alert a dropped change should have raised is raised all the same.
func TestQueueFullRescans(t *testing.T) {
	tree := newFakeTree()
	spec, _ := json.Marshal(apitypes.AlertRule{ID: "r1", Name: "hot", Kind: "threshold", Var: "temp", Op: ">", Value: ptrTo(80.0)})
	tree.Apply(context.Background(), model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindRule, Key: "r1", Value: spec}})
	s, err := New(Config{Node: "p1", Tree: tree, Search: tree.search, Queue: 1, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	// Hold the evaluator while changes arrive.
	hold, held := make(chan struct{}), make(chan struct{})
	go s.do(context.Background(), func(bool) error { close(held); <-hold; return nil })
	<-held
	var es []model.Entry
	for _, d := range []model.Path{"/devices/d1", "/devices/d2", "/devices/d3"} {
		m := model.Mutation{Op: model.OpPut, Path: d, Type: "device", Variables: num(95, t0)}
		tree.Apply(context.Background(), m)
		es = append(es, model.Entry{Time: t0, Mutation: m})
	}
	s.Observe(es)
	if got := testutil.ToFloat64(s.m.dropped); got != 2 {
		t.Fatalf("dropped %v, want 2", got)
	}
	close(hold)
	tstest.WaitFor(t, 10*time.Second, "an alert per device", func() bool {
		page, _ := tree.search(context.Background(), model.SearchQuery{Prefix: Root, Type: AlertType})
		return len(page.Contexts) == 3
	})
}

// Resolved alerts are deleted once older than the retention; active
// ones stay.
func TestResolvedRetention(t *testing.T) {
	tree := newFakeTree()
	clk := &clock{now: t0}
	s, err := New(Config{Node: "p1", Tree: tree, Search: tree.search, Now: clk.Now, ResolvedRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	put := func(id, state string, resolved time.Time) {
		vars := map[string]model.Variable{"state": strVar(state, t0)}
		if !resolved.IsZero() {
			vars["resolved_at"] = timeVar(resolved)
		}
		tree.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: alertPath(id), Type: AlertType, Variables: vars})
	}
	put("old", apitypes.AlertResolved, t0.Add(-2*time.Hour))
	put("new", apitypes.AlertResolved, t0.Add(-30*time.Minute))
	put("on", apitypes.AlertFiring, time.Time{})
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"old": false, "new": true, "on": true} {
		if _, err := tree.Get(alertPath(id)); (err == nil) != want {
			t.Errorf("%s kept: %v, want %v", id, err == nil, want)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
