package history

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	t   *testing.T
	dir string
	st  model.Store
	// pg, when set, is the PostgreSQL database the store is in.
	pg    string
	m     *model.Model
	clk   *clock
	reg   *prometheus.Registry
	h     *Service
	tweak func(*Config)
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newEnv(t *testing.T, tweak func(*Config)) *env {
	return newEnvPG(t, "", tweak)
}

func newEnvPG(t *testing.T, dsn string, tweak func(*Config)) *env {
	e := &env{t: t, dir: t.TempDir(), clk: &clock{t: t0}, tweak: tweak, pg: dsn}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	t := e.t
	var st model.Store
	var err error
	if e.pg != "" {
		st, err = store.OpenPostgres(context.Background(), store.PostgresOptions{DSN: e.pg})
	} else {
		st, err = store.OpenBadger(store.BadgerOptions{Dir: e.dir, CacheMB: 8})
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.st, e.m, e.reg = st, m, prometheus.NewRegistry()
	cfg := Config{Model: m, Now: e.clk.Now, Registry: e.reg, FlushInterval: time.Hour, CompactInterval: time.Hour,
		Select: Selector{Types: []string{"device"}}}
	if e.tweak != nil {
		e.tweak(&cfg)
	}
	if e.h, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	e.h.Start()
}

func (e *env) close() {
	if e.h == nil {
		return
	}
	e.h.Close()
	e.m.Close()
	e.st.Close()
	e.h = nil
}

// crash stops everything without history's last flush.
func (e *env) crash() {
	e.h.crash = true
	e.close()
}

func (e *env) put(p string, typ string, vars map[string]any, at time.Time) {
	e.t.Helper()
	mvars := map[string]model.Variable{}
	for k, v := range vars {
		raw, _ := json.Marshal(v)
		vv, err := model.NewVariable(raw, at)
		if err != nil {
			e.t.Fatal(err)
		}
		mvars[k] = vv
	}
	if _, err := e.m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: model.Path(p), Type: typ, Variables: mvars}); err != nil {
		e.t.Fatal(err)
	}
}

// caughtUp waits until history has read the whole log.
func (e *env) caughtUp() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.h.Position() < e.m.LastSeq() || !e.h.isLoaded() {
		if time.Now().After(deadline) {
			e.t.Fatalf("history at %d, log at %d", e.h.Position(), e.m.LastSeq())
		}
		select {
		case <-e.m.Changed():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (e *env) read(p, v string, from, to time.Time, step time.Duration, agg string) []Point {
	e.t.Helper()
	q := Query{Var: v, From: from.UnixMilli(), To: to.UnixMilli(), Step: step.Milliseconds(), Agg: agg}
	if q.Step > 0 && q.Agg == "" {
		q.Agg = AggAvg
	}
	ps, err := e.h.Read(context.Background(), model.Path(p), q)
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

func TestIngestAndRead(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ChunkSamples = 16 })
	e.caughtUp()
	e.put("/devices/d1", "device", map[string]any{"temp": 20.0}, t0)
	e.caughtUp()
	for i := 1; i <= 100; i++ {
		e.put("/devices/d1", "", map[string]any{"temp": 20 + float64(i)/10, "on": i%2 == 0, "name": "x"}, t0.Add(time.Duration(i)*time.Second))
	}
	e.put("/folders/f", "folder", map[string]any{"temp": 1.0}, t0.Add(time.Second))
	e.caughtUp()
	ps := e.read("/devices/d1", "temp", t0, t0.Add(time.Hour), 0, "")
	if len(ps) != 101 {
		t.Fatalf("%d points, want 100", len(ps))
	}
	for i, p := range ps {
		want := 20 + float64(i)/10
		if p.T != t0.Add(time.Duration(i)*time.Second).UnixMilli() || p.V != want {
			t.Fatalf("point %d = %v, want %v", i, p, want)
		}
	}
	if on := e.read("/devices/d1", "on", t0, t0.Add(time.Hour), 0, ""); len(on) != 100 || on[0].V != 0 || on[1].V != 1 {
		t.Fatalf("booleans: %v", on[:2])
	}
	if n := e.read("/devices/d1", "name", t0, t0.Add(time.Hour), 0, ""); len(n) != 0 {
		t.Fatalf("a string variable has history: %v", n)
	}
	if n := e.read("/folders/f", "temp", t0, t0.Add(time.Hour), 0, ""); len(n) != 0 {
		t.Fatalf("a folder's variable has history (types: device): %v", n)
	}
	// Steps: 10 s averages, min, count.
	avg := e.read("/devices/d1", "temp", t0, t0.Add(time.Hour), 10*time.Second, AggAvg)
	if len(avg) != 11 || avg[0].T != t0.UnixMilli() || math.Abs(avg[0].V-(20.0+20.9)/2) > 1e-9 {
		t.Fatalf("avg: %v", avg)
	}
	cnt := e.read("/devices/d1", "temp", t0, t0.Add(time.Hour), time.Minute, AggCount)
	if len(cnt) != 2 || cnt[0].V != 60 || cnt[1].V != 41 {
		t.Fatalf("count: %v", cnt)
	}
	// Full chunks were flushed on the way; the flush writes the rest and the cursor.
	lastData := e.m.LastSeq()
	e.caughtUp()
	e.h.onLoop(e.h.flushAll)
	if cur, _ := e.h.Cursor(); cur < lastData {
		t.Fatalf("after a flush the cursor %d is before the last write %d", cur, lastData)
	}
	if got := testutil.ToFloat64(e.h.metrics.points); got != 201 {
		t.Fatalf("points ingested %v, want 200", got)
	}
	// Out-of-order samples are dropped.
	e.put("/devices/d1", "", map[string]any{"temp": 99.0}, t0.Add(5*time.Second))
	e.caughtUp()
	if ps := e.read("/devices/d1", "temp", t0, t0.Add(time.Hour), 0, ""); len(ps) != 101 {
		t.Fatalf("after an out-of-order sample: %d points", len(ps))
	}
}

// A sample whose write was acknowledged reaches history across a crash
// before any flush, exactly once.
func TestReplayAfterCrash(t *testing.T) {
	replayAfterCrash(t, newEnv(t, func(c *Config) { c.ChunkSamples = 8 }))
}

// The same on PostgreSQL: history's records are the store's, whatever its
// kind.
func TestReplayAfterCrashPostgres(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	replayAfterCrash(t, newEnvPG(t, dsn, func(c *Config) { c.ChunkSamples = 8 }))
}

func replayAfterCrash(t *testing.T, e *env) {
	e.caughtUp()
	e.put("/devices/d1", "device", map[string]any{"v": 0}, t0)
	e.caughtUp()
	for i := 1; i <= 50; i++ { // 6 full chunks flushed, 2 samples in the head only
		e.put("/devices/d1", "", map[string]any{"v": i}, t0.Add(time.Duration(i)*time.Second))
	}
	e.caughtUp()
	cur, _ := e.h.Cursor()
	if cur >= e.m.LastSeq() {
		t.Fatalf("cursor %d already at the log's end %d: nothing to replay", cur, e.m.LastSeq())
	}
	e.crash()
	e.open()
	e.caughtUp()
	ps := e.read("/devices/d1", "v", t0, t0.Add(time.Hour), 0, "")
	if len(ps) != 51 {
		t.Fatalf("%d points after the crash, want 51", len(ps))
	}
	for i, p := range ps {
		if p.V != float64(i) {
			t.Fatalf("point %d = %v", i, p)
		}
	}
	// More samples continue the series; a clean stop flushes them all.
	for i := 51; i <= 60; i++ {
		e.put("/devices/d1", "", map[string]any{"v": i}, t0.Add(time.Duration(i)*time.Second))
	}
	e.caughtUp()
	lastData := e.m.LastSeq()
	e.close()
	e.open()
	e.caughtUp()
	ps = e.read("/devices/d1", "v", t0, t0.Add(time.Hour), 0, "")
	if len(ps) != 61 {
		t.Fatalf("%d points after a clean restart, want 61", len(ps))
	}
	if cur, _ := e.h.Cursor(); cur < lastData {
		t.Fatalf("after a clean stop the cursor %d is before the last write %d", cur, lastData)
	}
	// The open chunk (61 = 7 full chunks and 5) is continued after the
	// restart, and reads back whole.
	for i := 61; i <= 63; i++ {
		e.put("/devices/d1", "", map[string]any{"v": i}, t0.Add(time.Duration(i)*time.Second))
	}
	e.caughtUp()
	e.h.onLoop(e.h.flushAll)
	e.close()
	e.open()
	e.caughtUp()
	ps = e.read("/devices/d1", "v", t0, t0.Add(time.Hour), 0, "")
	for i, p := range ps {
		if p.V != float64(i) {
			t.Fatalf("after continuing the open chunk, point %d = %v", i, p)
		}
	}
	if len(ps) != 64 {
		t.Fatalf("%d points, want 64", len(ps))
	}
}

// The log compacted past the cursor is a gap: counted and logged.
func TestReplayGap(t *testing.T) {
	e := newEnv(t, nil)
	e.put("/devices/d1", "device", map[string]any{"v": 0}, t0)
	e.caughtUp()
	e.h.onLoop(e.h.flushAll)
	e.crash()
	// While history is down, 2000 entries are written and the log is
	// compacted to the last 1000.
	st, err := store.OpenBadger(store.BadgerOptions{Dir: e.dir, CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2000; i++ {
		v, _ := model.NewVariable(json.RawMessage(fmt.Sprint(i)), t0.Add(time.Duration(i)*time.Second))
		if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/d1", Variables: map[string]model.Variable{"v": v}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CompactLog(1000); err != nil {
		t.Fatal(err)
	}
	m.Close()
	st.Close()
	e.open()
	e.caughtUp()
	if g := testutil.ToFloat64(e.h.metrics.gaps); g != 1 {
		t.Fatalf("gaps %v, want 1", g)
	}
	lost := testutil.ToFloat64(e.h.metrics.gapEntries)
	ps := e.read("/devices/d1", "v", t0, t0.Add(time.Hour), 0, "")
	if lost < 900 || float64(len(ps))+lost < 2000 || len(ps) < 900 {
		t.Fatalf("%d points kept, %v entries lost", len(ps), lost)
	}
}

// Compaction: raw days past the raw retention become 1-minute rows,
// those past theirs 1-hour rows, then nothing.
func TestCompactionTiers(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ChunkSamples = 120 })
	e.put("/devices/d1", "device", map[string]any{"v": 0}, t0)
	e.caughtUp()
	start := t0.Truncate(24 * time.Hour).Add(12 * time.Hour) // midday of a day
	e.clk.Set(start)
	var sum float64
	for i := 0; i < 600; i++ { // 10 minutes at 1 s
		v := float64(i % 7)
		sum += v
		e.put("/devices/d1", "", map[string]any{"v": v}, start.Add(time.Duration(i)*time.Second))
	}
	e.caughtUp()
	e.h.onLoop(e.h.flushAll)
	want := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Minute, AggAvg)
	wantMax := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Minute, AggMax)
	e.checkStored("after the flush")
	if len(want) != 10 {
		t.Fatalf("%d minutes", len(want))
	}
	// 8 days later the day is past the raw retention (7 days).
	e.clk.Add(8 * 24 * time.Hour)
	e.h.onLoop(e.h.compactRound)
	if n := e.rawRecords(); n != 0 {
		t.Fatalf("%d raw chunks left after compaction", n)
	}
	e.checkStored("after the raw tier's compaction")
	got := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Minute, AggAvg)
	gotMax := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Minute, AggMax)
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(gotMax) != fmt.Sprint(wantMax) {
		t.Fatalf("1-minute tier:\n got %v\nwant %v", got, want)
	}
	if rawPts := e.read("/devices/d1", "v", start, start.Add(time.Hour), 0, ""); len(rawPts) != 10 {
		t.Fatalf("a raw read of the 1-minute tier: %d points, want one per minute", len(rawPts))
	}
	// 91 days: the 1-hour tier.
	e.clk.Add(83 * 24 * time.Hour)
	e.h.onLoop(e.h.compactRound)
	e.checkStored("after the 1-minute tier's compaction")
	h := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Hour, AggCount)
	if len(h) != 1 || h[0].V != 600 {
		t.Fatalf("1-hour tier count: %v", h)
	}
	avg := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Hour, AggAvg)
	if math.Abs(avg[0].V-sum/600) > 1e-9 {
		t.Fatalf("1-hour avg %v, want %v", avg[0].V, sum/600)
	}
	// Past two years: gone.
	e.clk.Add(2 * 366 * 24 * time.Hour)
	e.h.onLoop(e.h.compactRound)
	if h := e.read("/devices/d1", "v", start, start.Add(time.Hour), time.Hour, AggCount); len(h) != 0 {
		t.Fatalf("past the last retention: %v", h)
	}
	if d := testutil.ToFloat64(e.h.metrics.deleted); d != 1 {
		t.Fatalf("expired records %v, want 1", d)
	}
	e.checkStored("after expiry")
	// Kept across a restart, with the cursor.
	e.close()
	e.open()
	e.caughtUp()
	e.checkStored("after a restart")
}

// storedBytes sums the records of series (p, v) as the gauge counts them.
func (e *env) storedBytes(p model.Path, v string) int64 {
	sid := seriesID(p, v)
	var n int64
	add := func(kind string) {
		e.m.Records(kind, func(key string, val []byte) error { n += recordSize(kind, key, val); return nil })
	}
	for day := floorDiv(t0.UnixMilli(), dayMs) - 1; day < floorDiv(t0.UnixMilli(), dayMs)+2; day++ {
		add(rawKind(sid, day))
	}
	add(minKind(sid))
	add(hourKind(sid))
	return n
}

func (e *env) checkStored(what string) {
	e.t.Helper()
	want := e.storedBytes("/devices/d1", "v")
	if got := testutil.ToFloat64(e.h.metrics.stored); int64(got) != want {
		e.t.Fatalf("%s: strata_history_stored_bytes %v, records hold %d", what, got, want)
	}
}

func (e *env) rawRecords() int {
	n := 0
	for day := floorDiv(t0.UnixMilli(), dayMs) - 1; day < floorDiv(t0.UnixMilli(), dayMs)+2; day++ {
		e.m.Records(rawKind(seriesID("/devices/d1", "v"), day), func(string, []byte) error { n++; return nil })
	}
	return n
}

func TestSelectorLabels(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Select = Selector{Labels: map[string]string{"hist": "yes"}} })
	ctx := context.Background()
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/a", Type: "pump", Labels: map[string]string{"hist": "yes"}},
		model.Mutation{Op: model.OpPut, Path: "/b", Type: "pump"}); err != nil {
		t.Fatal(err)
	}
	e.caughtUp()
	e.put("/a", "", map[string]any{"v": 1}, t0.Add(time.Second))
	e.put("/b", "", map[string]any{"v": 1}, t0.Add(time.Second))
	e.caughtUp()
	if n := len(e.read("/a", "v", t0, t0.Add(time.Hour), 0, "")); n != 1 {
		t.Fatalf("/a: %d points", n)
	}
	if n := len(e.read("/b", "v", t0, t0.Add(time.Hour), 0, "")); n != 0 {
		t.Fatalf("/b (not labelled): %d points", n)
	}
	// Labelled later: its next samples keep history.
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/b", Labels: map[string]string{"hist": "yes"}}); err != nil {
		t.Fatal(err)
	}
	e.put("/b", "", map[string]any{"v": 2}, t0.Add(2*time.Second))
	e.caughtUp()
	if n := len(e.read("/b", "v", t0, t0.Add(time.Hour), 0, "")); n != 1 {
		t.Fatalf("/b after labelling: %d points", n)
	}
}

// A context's history is its own: deleted and made again (by another
// tenant, or the same), or given to another tenant, it shows none of the
// samples from before, also after a restart.
func TestHistoryEndsWithItsContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.caughtUp()
	put := func(p model.Path, tenant string, v float64, at time.Time) {
		t.Helper()
		vv, _ := model.NewVariable(json.RawMessage(fmt.Sprint(v)), at)
		if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device", Tenant: tenant,
			Variables: map[string]model.Variable{"v": vv}}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(p model.Path) int {
		t.Helper()
		e.caughtUp()
		return len(e.read(string(p), "v", t0, t0.Add(time.Hour), 0, ""))
	}
	// Deleted, then made again by another tenant.
	put("/devices/a", "acme", 1, t0.Add(1*time.Second))
	put("/devices/a", "", 2, t0.Add(2*time.Second))
	if n := count("/devices/a"); n != 2 {
		t.Fatalf("%d points", n)
	}
	e.h.onLoop(e.h.flushAll)
	e.clk.Set(t0.Add(3 * time.Second))
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpDelete, Path: "/devices/a"}); err != nil {
		t.Fatal(err)
	}
	e.clk.Set(t0.Add(4 * time.Second))
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device", Tenant: "globex"}); err != nil {
		t.Fatal(err)
	}
	if n := count("/devices/a"); n != 0 {
		t.Fatalf("the context made again by another tenant shows %d points of the one before", n)
	}
	put("/devices/a", "", 3, t0.Add(5*time.Second))
	e.caughtUp()
	if ps := e.read("/devices/a", "v", t0, t0.Add(time.Hour), 0, ""); len(ps) != 1 || ps[0].V != 3 {
		t.Fatalf("after a sample of its own: %v", ps)
	}
	// Given to another tenant, with no sample since: nothing; with one:
	// that one.
	put("/devices/b", "acme", 1, t0.Add(1*time.Second))
	if _, err := e.m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/b", Tenant: "globex"}); err != nil {
		t.Fatal(err)
	}
	if n := count("/devices/b"); n != 0 {
		t.Fatalf("given to another tenant: %d points of the tenant before", n)
	}
	put("/devices/b", "", 2, t0.Add(6*time.Second))
	if n := count("/devices/b"); n != 1 {
		t.Fatalf("given to another tenant, then a sample: %d points", n)
	}
	// The same after a restart, from the records.
	e.close()
	e.open()
	e.caughtUp()
	if ps := e.read("/devices/a", "v", t0, t0.Add(time.Hour), 0, ""); len(ps) != 1 || ps[0].V != 3 {
		t.Fatalf("/devices/a after a restart: %v", ps)
	}
	if ps := e.read("/devices/b", "v", t0, t0.Add(time.Hour), 0, ""); len(ps) != 1 || ps[0].V != 2 {
		t.Fatalf("/devices/b after a restart: %v", ps)
	}
}
