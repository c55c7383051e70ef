package node

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// TestStoreFenceMetrics: a write the PostgreSQL fence refuses is counted
// in strata_store_fenced_writes_total, and the claimed term is exported.
func TestStoreFenceMetrics(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Shared(t).NewDatabase(t)
	open := func() *store.Postgres {
		s, err := store.OpenPostgres(ctx, store.PostgresOptions{DSN: dsn, Fenced: true, Logger: tstest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	reg := prometheus.NewRegistry()
	reg.MustRegister(replicaCollector{a})
	if err := a.Claim(ctx, 4, "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, 5, "b"); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: a})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("deposed writer's commit: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				got[mf.GetName()] = c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				got[mf.GetName()] = g.GetValue()
			}
		}
	}
	if len(got) != 3 || got["strata_store_fenced_writes_total"] != 1 || got["strata_store_writer_term"] != 4 ||
		got["strata_store_fence_sessions_ended_total"] != 0 {
		t.Fatalf("metrics %v, want 1 fenced write and term 4", got)
	}
}
