// Command history measures telemetry history (node/history), each figure
// beside its baseline in the same run:
//
//   - ingest: samples per second history takes from the change log
//     (decode, compress, flush as model records), beside raw Badger
//     writes of the same bytes (the records history stored, written
//     with synced transactions to a Badger of its own);
//
//   - bytes per stored point of a regular 1 s float series (a sensor
//     value at 0.1 resolution, and the same curve at full float64
//     precision), beside Prometheus's XOR chunks of 120 samples encoding
//     the same samples with no record around them;
//
//   - the latency of reading a 24-hour, 1-second series (86,400 raw
//     points; and with step=1m), beside iterating the same records in
//     the store without decoding them.
//
//     go run ./tests/bench/history -dir /tmp -devices 1000 -vars 10 -samples 120 -reads 200
//
// Everything runs in one process on the real stores (node/store's
// Badger), with the model's group commit and fsync.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/history"
	"github.com/strata-dm/strata/node/store"
)

var profile string

var end = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the stores (removed after)")
	devices := flag.Int("devices", 1000, "devices in the ingest run")
	vars := flag.Int("vars", 10, "numeric variables per device message")
	samples := flag.Int("samples", 120, "messages per device (1 s apart)")
	writers := flag.Int("writers", 16, "concurrent writers of the log")
	reads := flag.Int("reads", 200, "reads of the 24-hour series")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the history ingest to this file")
	flag.Parse()
	profile = *cpuprofile
	tmp, err := os.MkdirTemp(*dir, "histbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	fmt.Printf("history benchmark: %d devices × %d variables × %d samples; %d reads\n", *devices, *vars, *samples, *reads)
	ingest(tmp, *devices, *vars, *samples, *writers)
	series(tmp, *reads)
}

type env struct {
	st *store.Badger
	m  *model.Model
}

func openEnv(dir string) *env {
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, CacheMB: 256})
	if err != nil {
		log.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st, Now: func() time.Time { return end }})
	if err != nil {
		log.Fatal(err)
	}
	return &env{st, m}
}

func (e *env) close() {
	e.m.Close()
	e.st.Close()
}

func (e *env) history() *history.Service {
	h, err := history.New(history.Config{Model: e.m, Now: func() time.Time { return end },
		Select: history.Selector{Types: []string{"device"}}, FlushInterval: time.Hour, CompactInterval: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	h.Start()
	for {
		if _, ok := h.Cursor(); ok {
			return h
		}
		time.Sleep(time.Millisecond) // a tool, not a test: waits for the service to load
	}
}

func caughtUp(h *history.Service, m *model.Model) {
	for h.Position() < m.LastSeq() {
		select {
		case <-m.Changed():
		case <-time.After(time.Millisecond):
		}
	}
}

func variable(v float64, at time.Time) model.Variable {
	vv, err := model.NewVariable(json.RawMessage(strconv.FormatFloat(v, 'f', -1, 64)), at)
	if err != nil {
		log.Fatal(err)
	}
	return vv
}

// sensor is a smoothly varying value at 0.1 resolution.
func sensor(k int, t float64) float64 {
	return math.Round((20+float64(k)+5*math.Sin(2*math.Pi*t/86400)+0.5*math.Sin(2*math.Pi*t/600))*10) / 10
}

func precise(t float64) float64 {
	return 20 + 5*math.Sin(2*math.Pi*t/86400) + 0.5*math.Sin(2*math.Pi*t/600)
}

func ingest(tmp string, devices, vars, samples, writers int) {
	ctx := context.Background()
	e := openEnv(tmp + "/ingest")
	defer e.close()
	var muts []model.Mutation
	for d := range devices {
		muts = append(muts, model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/devices/d%05d", d)), Type: "device"})
	}
	for len(muts) > 0 {
		k := min(len(muts), 4096)
		if _, err := e.m.Apply(ctx, muts[:k]...); err != nil {
			log.Fatal(err)
		}
		muts = muts[k:]
	}
	// History follows from here; it is stopped while the log is written,
	// so that its ingest is timed alone, replaying the log.
	h := e.history()
	h.Close()
	start := end.Add(-time.Duration(samples) * time.Second)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range samples {
				at := start.Add(time.Duration(i) * time.Second)
				for d := w; d < devices; d += writers {
					vs := make(map[string]model.Variable, vars)
					for k := range vars {
						vs["v"+strconv.Itoa(k)] = variable(sensor(k, float64(at.Unix())+float64(d)), at)
					}
					if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/devices/d%05d", d)), Variables: vs}); err != nil {
						log.Fatal(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	writeDur := time.Since(t0)
	points := devices * vars * samples
	fmt.Printf("log written: %d messages (%d points) in %s (%.0f messages/s, by %d writers through the model)\n",
		devices*samples, points, writeDur.Round(time.Millisecond), float64(devices*samples)/writeDur.Seconds(), writers)

	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
	}
	t0 = time.Now()
	h = e.history()
	caughtUp(h, e.m)
	h.Close() // the last flush
	dur := time.Since(t0)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	// The records history holds, for the baseline.
	type kv struct{ k, v []byte }
	var recs []kv
	var stored int
	for d := range devices {
		for k := range vars {
			err := h.RawRecords(model.Path(fmt.Sprintf("/devices/d%05d", d)), "v"+strconv.Itoa(k), func(kind, key string, v []byte) error {
				recs = append(recs, kv{[]byte("r" + kind + "\x00" + key), v})
				stored += len(kind) + len(key) + len(v)
				return nil
			})
			if err != nil {
				log.Fatal(err)
			}
		}
	}
	fmt.Printf("history ingest: %d points in %s: %.0f points/s (replaying the log, compressing, flushing %d records, %.1f MB)\n",
		points, dur.Round(time.Millisecond), float64(points)/dur.Seconds(), len(recs), float64(stored)/1e6)

	db, err := badger.Open(badger.DefaultOptions(tmp + "/raw").WithSyncWrites(true).WithLogger(nil))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	t0 = time.Now()
	for len(recs) > 0 {
		k := min(len(recs), 1000)
		err := db.Update(func(txn *badger.Txn) error {
			for _, r := range recs[:k] {
				if err := txn.Set(r.k, r.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			log.Fatal(err)
		}
		recs = recs[k:]
	}
	bdur := time.Since(t0)
	fmt.Printf("baseline, raw Badger writes of the same %.1f MB (synced transactions of 1000 records): %s: %.0f points/s equivalent\n",
		float64(stored)/1e6, bdur.Round(time.Millisecond), float64(points)/bdur.Seconds())
}

func series(tmp string, reads int) {
	ctx := context.Background()
	e := openEnv(tmp + "/series")
	defer e.close()
	dev := model.Path("/devices/s1")
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: dev, Type: "device"}); err != nil {
		log.Fatal(err)
	}
	h := e.history()
	const n = 86400
	start := end.Add(-n * time.Second)
	var sensorVals, preciseVals []float64
	var muts []model.Mutation
	for i := range n {
		at := start.Add(time.Duration(i) * time.Second)
		t := float64(i)
		sv, pv := sensor(0, t), precise(t)
		sensorVals, preciseVals = append(sensorVals, sv), append(preciseVals, pv)
		muts = append(muts, model.Mutation{Op: model.OpPut, Path: dev,
			Variables: map[string]model.Variable{"sensor": variable(sv, at), "precise": variable(pv, at)}})
		if len(muts) == 1000 || i == n-1 {
			if _, err := e.m.Apply(ctx, muts...); err != nil {
				log.Fatal(err)
			}
			muts = muts[:0]
		}
	}
	caughtUp(h, e.m)
	h.Close()
	for _, c := range []struct {
		name string
		vals []float64
	}{{"sensor", sensorVals}, {"precise", preciseVals}} {
		recs, bytes, got, err := h.Footprint(dev, c.name)
		if err != nil || got != n {
			log.Fatalf("%s: %d samples stored, %v", c.name, got, err)
		}
		fmt.Printf("bytes per point, %-7s (%s): %.3f (%d bytes in %d records, keys included)\n", c.name,
			map[string]string{"sensor": "0.1 resolution", "precise": "full float64"}[c.name], float64(bytes)/n, bytes, recs)
		// Prometheus's head chunks: 120 samples each, the bytes alone.
		pb := 0
		for i := 0; i < n; i += 120 {
			ch := chunkenc.NewXORChunk()
			app, _ := ch.Appender()
			for j := i; j < min(i+120, n); j++ {
				app.Append(0, start.Add(time.Duration(j)*time.Second).UnixMilli(), c.vals[j])
			}
			pb += len(ch.Bytes())
		}
		fmt.Printf("baseline, Prometheus XOR chunks of 120 samples, %-7s: %.3f bytes per point (%d bytes)\n", c.name, float64(pb)/n, pb)
	}

	// Reads, from a service that loaded its state from the store, with
	// the garbage of the phases before collected first.
	h = e.history()
	runtime.GC()
	defer h.Close()
	q := history.Query{Var: "sensor", From: start.UnixMilli(), To: end.UnixMilli()}
	lat := func(name string, fn func() int) {
		var ds []time.Duration
		got := 0
		for range reads {
			t0 := time.Now()
			got = fn()
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		fmt.Printf("%-58s %6d points: p50 %-9s p99 %-9s max %s\n", name, got,
			ds[len(ds)/2].Round(time.Microsecond), ds[len(ds)*99/100].Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
	}
	lat("read 24 h raw (Read)", func() int {
		ps, err := h.Read(ctx, dev, q)
		if err != nil {
			log.Fatal(err)
		}
		return len(ps)
	})
	lat("read 24 h raw and encode the JSON answer", func() int {
		ps, err := h.Read(ctx, dev, q)
		if err != nil {
			log.Fatal(err)
		}
		b := history.AppendJSON(nil, ps)
		return len(ps) + 0*len(b)
	})
	q1 := q
	q1.Step, q1.Agg = 60_000, history.AggAvg
	lat("read 24 h step=1m avg", func() int {
		ps, err := h.Read(ctx, dev, q1)
		if err != nil {
			log.Fatal(err)
		}
		return len(ps)
	})
	lat("baseline: iterate the same records in the store, no decode", func() int {
		k := 0
		if err := h.RawRecords(dev, "sensor", func(_, _ string, v []byte) error { k += len(v); return nil }); err != nil {
			log.Fatal(err)
		}
		return n
	})
}
