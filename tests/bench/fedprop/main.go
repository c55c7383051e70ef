// Command fedprop measures federation over two hops on loopback: a probe
// publishes to a regional node, which republishes to HQ, each with its own
// durable Badger store in a temporary folder.
//
//	go run ./tests/bench/fedprop -mode latency -rate 10000 -duration 20s
//	go run ./tests/bench/fedprop -mode latency -rate 10000 -duration 20s -separate
//	go run ./tests/bench/fedprop -mode catchup -changes 1000000
//
// latency: device changes are written at the probe at a steady rate (each
// a put of one variable holding its send time); HQ observes each commit of
// a mirrored change and records now − send time: the propagation latency
// of a change from its creation, through the probe's and the regional
// node's durable commits, to HQ's. Every change sent during the measured
// duration counts, however late it arrives. With -separate, each tier
// runs in a process of its own (procs.go).
//
// catchup: the probe's link up is down while the probe writes N changes;
// the link comes back and the program reports how long until HQ has
// applied the last of them, and the rate: over two hops (through the
// regional node) or, with -hops 1, with the probe publishing to HQ
// directly.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/store"
)

type tier struct {
	name  string
	store *store.Badger
	model *model.Model
	svc   *federation.Service
	ups   []federation.Upstream
}

// noSync: the stores skip fsync (diagnostic: what the disk costs).
var noSync bool

func storeKind() string {
	if noSync {
		return "Badger WITHOUT fsync (not durable; diagnostic)"
	}
	return "durable Badger"
}

func newTier(dir, name string, listen bool) (*tier, error) {
	s, err := store.OpenBadger(store.BadgerOptions{Dir: filepath.Join(dir, name, "data"), NoSync: noSync})
	if err != nil {
		return nil, err
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		return nil, err
	}
	ca, err := certs.NewCA(name)
	if err != nil {
		return nil, err
	}
	cfg := federation.Config{Name: name, Model: m, CA: ca.Cert, CAKey: ca.Key, StateDir: filepath.Join(dir, name, "federation")}
	if os.Getenv("STRATA_BENCH_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if listen {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	svc, err := federation.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := svc.Start(context.Background()); err != nil {
		return nil, err
	}
	return &tier{name: name, store: s, model: m, svc: svc}, nil
}

func (t *tier) close() {
	t.svc.Close()
	t.model.Close()
	t.store.Close()
}

// token creates a join token for peer to publish to t.
func (t *tier) token(peer string) (string, error) {
	tok, _, err := t.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: peer, Grant: federation.GrantOperate})
	return tok, err
}

// join makes p publish to t.
func (t *tier) join(p *tier, publish ...model.Path) error {
	tok, err := t.token(p.name)
	if err != nil {
		return err
	}
	p.ups = []federation.Upstream{{Address: t.svc.Addr(), Token: tok, Publish: publish}}
	return p.svc.SetUpstreams(p.ups)
}

func main() {
	mode := flag.String("mode", "latency", "latency or catchup")
	rate := flag.Int("rate", 10000, "latency: changes per second written at the probe")
	duration := flag.Duration("duration", 20*time.Second, "latency: measured duration")
	warmup := flag.Duration("warmup", 3*time.Second, "latency: unmeasured load first")
	devices := flag.Int("devices", 10000, "devices changed in turn")
	changes := flag.Int("changes", 1_000_000, "catchup: changes buffered during the outage")
	hops := flag.Int("hops", 2, "2: probe → regional → HQ; 1: probe → HQ")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured phase")
	memprofile := flag.String("memprofile", "", "write an allocation profile at the end")
	flag.BoolVar(&noSync, "nosync", false, "diagnostic: stores skip fsync, so commits are not durable; shows the disk's share of the latency")
	flag.BoolVar(&separate, "separate", false, "latency: each tier in a process of its own, as deployed (-cpuprofile then writes one profile per tier, named with the tier's name)")
	// A tier process started by -separate.
	tierName := flag.String("tier", "", "internal: run this tier for a parent (see -separate)")
	tierDir := flag.String("dir", "", "internal: the tier's folder")
	tierListen := flag.Bool("listen", false, "internal: the tier listens for providers")
	flag.Parse()
	if *cpuprofile != "" && !separate {
		f, err := os.Create(*cpuprofile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if *memprofile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(*memprofile)
			check(err)
			runtime.GC()
			check(pprof.Lookup("allocs").WriteTo(f, 0))
			f.Close()
		}()
	}

	if *tierName != "" {
		check(serveTier(*tierDir, *tierName, *tierListen))
		return
	}
	dir, err := os.MkdirTemp("", "fedprop-")
	check(err)
	defer os.RemoveAll(dir)
	if separate {
		if *mode != "latency" {
			check(fmt.Errorf("-separate measures latency only"))
		}
		check(latencySeparate(dir, *rate, *devices, *warmup, *duration, *cpuprofile))
		return
	}
	hq, err := newTier(dir, "hq", true)
	check(err)
	defer hq.close()
	eu, err := newTier(dir, "eu", true)
	check(err)
	defer eu.close()
	probe, err := newTier(dir, "plant7", false)
	check(err)
	defer probe.close()

	// Devices exist before the links, so both modes measure changes only.
	fill(probe.model, *devices)
	// mounted is where HQ shows the probe's devices.
	mounted, parent := "/peers/eu/peers/plant7/devices/", eu
	switch *hops {
	case 2:
		check(hq.join(eu))
		check(eu.join(probe, "/devices"))
	case 1:
		check(hq.join(probe, "/devices"))
		mounted, parent = "/peers/plant7/devices/", hq
	default:
		check(fmt.Errorf("-hops must be 1 or 2"))
	}
	last := fmt.Sprintf("%sd%07d", mounted, *devices-1)
	waitFor(2*time.Minute, "initial sync", func() bool { _, err := hq.model.Get(model.Path(last)); return err == nil })

	switch *mode {
	case "latency":
		if *hops != 2 {
			check(fmt.Errorf("latency is measured over two hops"))
		}
		latency(probe, eu, hq, *rate, *devices, *warmup, *duration)
	case "catchup":
		catchup(probe, parent, hq, mounted, *hops, *devices, *changes)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", *mode)
		os.Exit(2)
	}
}

func fill(m *model.Model, n int) {
	muts := make([]model.Mutation, 0, 1000)
	for i := range n {
		muts = append(muts, put(i, 0))
		if len(muts) == cap(muts) || i == n-1 {
			_, err := m.Apply(context.Background(), muts...)
			check(err)
			muts = muts[:0]
		}
	}
}

func put(i int, ts int64) model.Mutation {
	return model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("/devices/d%07d", i)), Type: "device", Tenant: "acme",
		Variables: map[string]model.Variable{"sent": {Value: json.RawMessage(strconv.FormatInt(ts, 10)), Type: model.TypeNumber}}}
}

// recorder keeps the latencies of the changes sent in [from, until) as a
// tier commits them: now − the send time the change carries.
type recorder struct {
	from, until int64
	mu          sync.Mutex
	lat         []time.Duration
}

func newRecorder(from, until time.Time) *recorder {
	return &recorder{from: from.UnixNano(), until: until.UnixNano()}
}

func (r *recorder) observe(es []model.Entry) {
	now := time.Now().UnixNano()
	var got []time.Duration
	for _, e := range es {
		v, ok := e.Mutation.Variables["sent"]
		if !ok {
			continue
		}
		ts, err := strconv.ParseInt(string(v.Value), 10, 64)
		if err != nil || ts < r.from || ts >= r.until {
			continue
		}
		got = append(got, time.Duration(now-ts))
	}
	if len(got) > 0 {
		r.mu.Lock()
		r.lat = append(r.lat, got...)
		r.mu.Unlock()
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lat)
}

// summary gives the percentiles of what was recorded.
func (r *recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := r.lat
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  p99.9 %v  max %v", pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1))
}

// load writes device changes to m at a steady rate in 1 ms ticks until
// until, each carrying its send time, and returns how many of those sent
// in [from, until) were applied. One pacer makes a batch per tick; a pool
// of writers applies them, so that commit latency does not slow the
// offered rate.
func load(m *model.Model, rate, devices int, from, until time.Time) int64 {
	var written atomic.Int64
	var wg sync.WaitGroup
	batches := make(chan []model.Mutation, 1024)
	for range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for muts := range batches {
				_, err := m.Apply(context.Background(), muts...)
				if ts, _ := strconv.ParseInt(string(muts[0].Variables["sent"].Value), 10, 64); err == nil && ts >= from.UnixNano() {
					written.Add(int64(len(muts)))
				}
			}
		}()
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	i, t0 := 0, time.Now()
	for range t.C {
		now := time.Now()
		if !now.Before(until) {
			break
		}
		// Ticks can be late or lost on a busy machine: send what is due
		// by the clock, not one tick's worth.
		due := int(now.Sub(t0).Seconds()*float64(rate)) - i
		if due <= 0 {
			continue
		}
		muts := make([]model.Mutation, due)
		for k := range muts {
			muts[k] = put(i%devices, now.UnixNano())
			i++
		}
		select {
		case batches <- muts:
		default: // writers saturated: the offered rate is not met
		}
	}
	close(batches)
	wg.Wait()
	return written.Load()
}

// latency loads the probe for warmup+duration and reports, for the
// changes sent during duration, when each tier committed them.
func latency(probe, eu, hq *tier, rate, devices int, warmup, duration time.Duration) {
	from := time.Now().Add(warmup)
	until := from.Add(duration)
	recs := map[*tier]*recorder{}
	for _, t := range []*tier{probe, eu, hq} {
		r := newRecorder(from, until)
		recs[t] = r
		t.model.OnCommit(r.observe)
	}
	written := load(probe.model, rate, devices, from, until)
	drained := waitDrained(written, recs[hq].count)
	report(rate, written, duration, drained, recs[probe].summary(), recs[eu].summary(), recs[hq].summary(), recs[hq].count())
}

// waitDrained waits until HQ has committed every change written in the
// window (or 30 s) and reports whether it did.
func waitDrained(written int64, seen func() int) bool {
	deadline := time.Now().Add(30 * time.Second)
	for int64(seen()) < written {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func report(rate int, written int64, duration time.Duration, drained bool, probe, eu, hq string, seen int) {
	fmt.Printf("two hops (probe → regional → HQ), %s at every tier, %s\n", storeKind(), processes())
	fmt.Printf("written at probe: %.0f changes/s (target %d), %d changes sent in the measured %v\n", float64(written)/duration.Seconds(), rate, written, duration)
	fmt.Printf("observed at HQ:   %d of them", seen)
	if !drained {
		fmt.Printf(" (NOT all: HQ had not committed the rest 30 s after the load ended)")
	}
	fmt.Println()
	fmt.Printf("durable at the probe:    %s\n", probe)
	fmt.Printf("durable at the regional: %s\n", eu)
	fmt.Printf("latency %s\n", hq)
}

// catchup buffers changes at the probe while its link is down, then times
// HQ applying all of them.
func catchup(probe, parent, hq *tier, mounted string, hops, devices, changes int) {
	check(probe.svc.SetUpstreams(nil))
	waitFor(time.Minute, "link down", func() bool {
		for _, p := range parent.svc.Peers() {
			if p.Name == "plant7" && p.Direction == "provider" {
				return p.State != "connected"
			}
		}
		return false
	})
	start := time.Now()
	muts := make([]model.Mutation, 0, 1000)
	var lastTS int64
	for i := range changes {
		lastTS = int64(i + 1)
		muts = append(muts, put(i%devices, lastTS))
		if len(muts) == cap(muts) || i == changes-1 {
			_, err := probe.model.Apply(context.Background(), muts...)
			check(err)
			muts = muts[:0]
		}
	}
	fmt.Printf("buffered %d changes at the probe in %v (link down)\n", changes, time.Since(start).Round(time.Millisecond))
	lastDev := fmt.Sprintf("%sd%07d", mounted, (changes-1)%devices)
	want := strconv.FormatInt(lastTS, 10)
	var applied atomic.Int64
	hq.model.OnCommit(func(es []model.Entry) {
		n := 0
		for _, e := range es {
			if _, ok := e.Mutation.Variables["sent"]; ok {
				n++
			}
		}
		applied.Add(int64(n))
	})
	start = time.Now()
	check(probe.svc.SetUpstreams(probe.ups))
	waitFor(10*time.Minute, "HQ caught up", func() bool {
		c, err := hq.model.Get(model.Path(lastDev))
		return err == nil && string(c.Variables["sent"].Value) == want
	})
	el := time.Since(start)
	if hops == 2 {
		fmt.Printf("two hops (probe → regional → HQ), %s at every tier\n", storeKind())
	} else {
		fmt.Printf("one hop (probe → HQ), %s at both\n", storeKind())
	}
	fmt.Printf("HQ applied %d changes in %v after the link came back: %.0f changes/s\n", applied.Load(), el.Round(time.Millisecond), float64(applied.Load())/el.Seconds())
}

func waitFor(d time.Duration, what string, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "timed out waiting for", what)
			os.Exit(1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
