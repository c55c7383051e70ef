package jobs

import (
	"context"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// BenchmarkLifecycle: one job created, delivered and answered (three
// durable writes, each decided against the job's record).
func BenchmarkLifecycle(b *testing.B) {
	run := func(b *testing.B, m *model.Model) {
		ctx := context.Background()
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/d1", Type: "device"}); err != nil {
			b.Fatal(err)
		}
		s, err := New(Config{Records: m})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.ResetTimer()
		for range b.N {
			j, err := s.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Function: "ping"})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.MarkDelivered(ctx, "d1", j.ID); err != nil {
				b.Fatal(err)
			}
			if err := s.Report(ctx, "d1", j.ID, Succeeded, []byte(`{"pong":true}`), ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("badger", func(b *testing.B) {
		m, closeStore := open(b, b.TempDir())
		defer closeStore()
		run(b, m)
	})
	b.Run("postgres", func(b *testing.B) {
		st, err := store.OpenPostgres(context.Background(), store.PostgresOptions{DSN: pgtest.Shared(b).NewDatabase(b), Logger: tstest.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		m, err := model.New(model.Config{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { m.Close(); st.Close() }()
		run(b, m)
	})
}
