package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// The durable-write benchmarks: concurrent callers updating device
// contexts through the model (each call answered only once durable), and
// the raw Badger baseline writing the same records (the encoded context and
// log entry per mutation) in durable batches of the same size. Run both in
// one invocation:
//
//	go test ./node/store -run XXX -bench 'Durable' -benchtime 200000x
const (
	benchDevices = 10000
	benchCallers = 1024 // concurrent callers of Model.Apply
)

func benchMutation(i int) model.Mutation {
	now := time.Now()
	return model.Mutation{
		Op:   model.OpPut,
		Path: model.Path("/devices/d" + strconv.Itoa(i%benchDevices)),
		Type: "device",
		Variables: map[string]model.Variable{
			"temp":   {Value: json.RawMessage(strconv.Itoa(i % 100)), Type: model.TypeNumber, Time: now},
			"status": {Value: json.RawMessage(`"ok"`), Type: model.TypeString, Time: now},
		},
	}
}

func BenchmarkDurableModelApply(b *testing.B) {
	s, err := OpenBadger(BadgerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchModelApply(b, s)
}

// BenchmarkDurableModelApplyPostgres is the same load on a PostgreSQL
// store: a throwaway cluster on loopback with fsync on, as in production.
func BenchmarkDurableModelApplyPostgres(b *testing.B) {
	c, err := pgtest.StartWith(pgtest.Options{Durable: true})
	if err != nil {
		pgtest.Missing(b)
		b.Fatal(err)
	}
	b.Cleanup(c.Stop) // after the database is dropped
	s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: c.NewDatabase(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchModelApply(b, s)
}

// BenchmarkDurableModelApplyPostgresFenced is the same with the store
// fenced, as a cluster's writer in PostgreSQL mode: every commit checks
// the fence in its transaction (postgres_fence.go). Run it beside the
// unfenced one:
//
//	go test ./node/store -run XXX -bench 'DurableModelApplyPostgres' -benchtime 300000x -count 2
func BenchmarkDurableModelApplyPostgresFenced(b *testing.B) {
	c, err := pgtest.StartWith(pgtest.Options{Durable: true})
	if err != nil {
		pgtest.Missing(b)
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: c.NewDatabase(b), Fenced: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Claim(context.Background(), 1, "bench"); err != nil {
		b.Fatal(err)
	}
	benchModelApply(b, s)
}

func benchModelApply(b *testing.B, s model.Store) {
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	// Create the devices first so the timed part measures updates.
	var seed []model.Mutation
	for i := range benchDevices {
		seed = append(seed, benchMutation(i))
		if len(seed) == 1000 {
			if _, err := m.Apply(context.Background(), seed...); err != nil {
				b.Fatal(err)
			}
			seed = seed[:0]
		}
	}
	var n, commits, entries atomic.Int64
	m.OnCommit(func(es []model.Entry) { commits.Add(1); entries.Add(int64(len(es))) })
	b.SetParallelism(max(1, benchCallers/runtime.GOMAXPROCS(0))) // × GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Apply(context.Background(), benchMutation(int(n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s")
	b.ReportMetric(float64(entries.Load())/float64(max(commits.Load(), 1)), "entries/commit")
}

// BenchmarkDurableRawBadger writes, per batch of 1024 mutations, exactly
// the records the store's Commit writes for them (log blocks and the last
// sequence number: the contexts they update go to the overlay), in one
// durable transaction, with no state machine, no overlay, no checkpoints
// and no callers to answer.
// openRawBadger opens Badger as the store configures it, but durable on
// its own: every transaction synced (SyncWrites), as an application
// using Badger directly would write.
func openRawBadger(b *testing.B) *badger.DB {
	s, err := OpenBadger(BadgerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	bo, err := s.opts.badgerOptions()
	if err != nil {
		b.Fatal(err)
	}
	db, err := badger.Open(bo.WithSyncWrites(true))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func BenchmarkDurableRawBadger(b *testing.B) {
	db := openRawBadger(b)
	const batch = 1024
	b.ResetTimer()
	for done := 0; done < b.N; {
		w := &txnWriter{db: db}
		w.begin()
		k := min(batch, b.N-done)
		es := make([]model.Entry, 0, k)
		for j := range k {
			i := done + j + 1
			es = append(es, model.Entry{Seq: uint64(i), Mutation: benchMutation(i)})
		}
		if _, err := writeBlocks(w, &model.Batch{Entries: es}); err != nil {
			b.Fatal(err)
		}
		if err := w.set(keyLast, seqBytes(uint64(done+k))); err != nil {
			b.Fatal(err)
		}
		if err := w.commit(); err != nil {
			b.Fatal(err)
		}
		done += k
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s")
}

// BenchmarkDurableRawBadgerKeyPerRecord is the layout before log blocks
// and the overlay: one key per log entry and one per changed context, in
// durable transactions of 1024 mutations. It shows what they save.
func BenchmarkDurableRawBadgerKeyPerRecord(b *testing.B) {
	db := openRawBadger(b)
	const batch = 1024
	b.ResetTimer()
	for done := 0; done < b.N; {
		txn := db.NewTransaction(true)
		k := min(batch, b.N-done)
		for j := range k {
			i := done + j
			m := benchMutation(i)
			c := &model.Context{Path: m.Path, Type: m.Type, Variables: m.Variables, Version: uint64(i)}
			cv, _ := model.Marshal(c)
			ev, _ := model.Marshal(&model.Entry{Seq: uint64(i), Mutation: m})
			if err := txn.Set(contextKey(m.Path), cv); err != nil {
				b.Fatal(err)
			}
			if err := txn.Set(append([]byte{pLegacy}, seqBytes(uint64(i))...), ev); err != nil {
				b.Fatal(err)
			}
		}
		if err := txn.Commit(); err != nil {
			b.Fatal(err)
		}
		done += k
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s")
}

// BenchmarkDurableModelApplyBatched is the same load proposed 16 mutations
// at a time (as an ingest worker that gathers a few devices' messages
// does): each proposal is still acknowledged only once durable.
func BenchmarkDurableModelApplyBatched(b *testing.B) {
	s, err := OpenBadger(BadgerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	const per = 16
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		muts := make([]model.Mutation, 0, per)
		for pb.Next() {
			muts = append(muts, benchMutation(int(n.Add(1))))
			if len(muts) == per {
				if _, err := m.Apply(context.Background(), muts...); err != nil {
					b.Error(err)
					return
				}
				muts = muts[:0]
			}
		}
		if len(muts) > 0 {
			if _, err := m.Apply(context.Background(), muts...); err != nil {
				b.Error(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s")
}

// BenchmarkReplayAtOpen times a start after kill -9 with the most log a
// checkpoint leaves behind by default (64 MiB, about 350,000 of these
// mutations over 10,000 devices): the open replays it into the overlay.
//
//	go test ./node/store -run XXX -bench ReplayAtOpen -benchtime 1x
func BenchmarkReplayAtOpen(b *testing.B) { replayAtOpen(b, false) }

// BenchmarkReplayAtOpenWithWAL is the same start as after kill -9 exactly:
// the store's write-ahead log still holds the writes (its segments stay
// until Badger's memtables flush, or 45 s), and the open applies it again
// before replaying the change log.
func BenchmarkReplayAtOpenWithWAL(b *testing.B) { replayAtOpen(b, true) }

func replayAtOpen(b *testing.B, keepWAL bool) {
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		opts := BadgerOptions{Dir: dir, CheckpointContexts: 1 << 30, CheckpointBytes: 1 << 40, CheckpointInterval: time.Hour}
		s, err := OpenBadger(opts)
		if err != nil {
			b.Fatal(err)
		}
		m, err := model.New(model.Config{Store: s})
		if err != nil {
			b.Fatal(err)
		}
		const batch = 1000
		n := 0
		for s.ov.bytes < DefaultCheckpointBytes {
			muts := make([]model.Mutation, batch)
			for j := range muts {
				muts[j] = benchMutation(n)
				n++
			}
			if _, err := m.Apply(context.Background(), muts...); err != nil {
				b.Fatal(err)
			}
		}
		m.Close()
		walBytes := int64(0)
		if keepWAL {
			// As kill -9 leaves it: no checkpoint, no sync, the log kept.
			close(s.quit)
			<-s.done
			<-s.walDone
			s.db.Close()
			s.wal.close()
			segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.log"))
			for _, seg := range segs {
				if st, err := os.Stat(seg); err == nil {
					walBytes += st.Size()
				}
			}
		} else {
			s.skipFinalCheckpoint = true
			s.Close()
		}
		b.StartTimer()
		start := time.Now()
		s, err = OpenBadger(opts)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		if len(s.ov.dirty) != benchDevices+1 { // and /devices
			b.Fatalf("%d contexts replayed, want %d", len(s.ov.dirty), benchDevices+1)
		}
		s.Close()
		b.ReportMetric(float64(n), "entries")
		b.ReportMetric(took.Seconds(), "s/open")
		if keepWAL {
			b.ReportMetric(float64(walBytes)/(1<<20), "MiB-of-wal")
		}
	}
}

// BenchmarkDurableSerialApplyPostgres is one caller applying one mutation
// at a time, so every commit carries one entry: the fence check's cost
// per commit, unfenced then fenced, on one cluster.
//
//	go test ./node/store -run XXX -bench 'DurableSerialApplyPostgres' -benchtime 3000x -count 2
func BenchmarkDurableSerialApplyPostgres(b *testing.B) {
	c, err := pgtest.StartWith(pgtest.Options{Durable: true})
	if err != nil {
		pgtest.Missing(b)
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	for _, fenced := range []bool{false, true} {
		name := map[bool]string{false: "unfenced", true: "fenced"}[fenced]
		b.Run(name, func(b *testing.B) {
			s, err := OpenPostgres(context.Background(), PostgresOptions{DSN: c.NewDatabase(b), Fenced: fenced})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if fenced {
				if err := s.Claim(context.Background(), 1, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			m, err := model.New(model.Config{Store: s})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.ResetTimer()
			for i := range b.N {
				if _, err := m.Apply(context.Background(), benchMutation(i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
