// Command fedprop measures federation over two hops on loopback: a probe
// publishes to a regional node, which republishes to HQ, each with its own
// durable Badger store in a temporary folder.
//
//	go run ./tests/bench/fedprop -mode latency -rate 10000 -duration 20s
//	go run ./tests/bench/fedprop -mode catchup -changes 1000000
//
// latency: device changes are written at the probe at a steady rate (each
// a put of one variable holding its send time); HQ observes each commit of
// a mirrored change and records now − send time: the propagation latency
// of a change from the probe's durable commit to HQ's durable commit,
// through the regional node's.
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
	"strings"
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

// join makes p publish to t.
func (t *tier) join(p *tier, publish ...model.Path) error {
	tok, _, err := t.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: p.name, Grant: federation.GrantOperate})
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
	flag.Parse()
	if *cpuprofile != "" {
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

	dir, err := os.MkdirTemp("", "fedprop-")
	check(err)
	defer os.RemoveAll(dir)
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

// latency writes at a steady rate in 1 ms ticks and collects HQ's
// observed latencies.
func latency(probe, eu, hq *tier, rate, devices int, warmup, duration time.Duration) {
	var (
		mu        sync.Mutex
		lat       = map[string][]time.Duration{}
		measuring atomic.Bool
		seen      atomic.Int64
	)
	// Each tier's commits are timed against the change's creation, so
	// the delay of each hop shows.
	for _, t := range []*tier{probe, eu, hq} {
		t.model.OnCommit(func(es []model.Entry) {
			now := time.Now().UnixNano()
			for _, e := range es {
				v, ok := e.Mutation.Variables["sent"]
				if !ok {
					continue
				}
				ts, err := strconv.ParseInt(string(v.Value), 10, 64)
				if err != nil || ts == 0 {
					continue
				}
				if t == hq {
					seen.Add(1)
				}
				if measuring.Load() {
					mu.Lock()
					lat[t.name] = append(lat[t.name], time.Duration(now-ts))
					mu.Unlock()
				}
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var written atomic.Int64
	tick := time.Millisecond
	// One pacer makes a batch per tick; a pool of writers applies them,
	// so that commit latency does not slow the offered rate.
	batches := make(chan []model.Mutation, 1024)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		t := time.NewTicker(tick)
		defer t.Stop()
		i, t0 := 0, time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// Ticks can be late or lost on a busy machine: send what is
			// due by the clock, not one tick's worth.
			due := int(time.Since(t0).Seconds()*float64(rate)) - i
			if due <= 0 {
				continue
			}
			muts := make([]model.Mutation, due)
			now := time.Now().UnixNano()
			for k := range muts {
				muts[k] = put(i%devices, now)
				i++
			}
			select {
			case batches <- muts:
			default: // writers saturated: the offered rate is not met
			}
		}
	}()
	for range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for muts := range batches {
				if _, err := probe.model.Apply(context.Background(), muts...); err == nil {
					written.Add(int64(len(muts)))
				}
			}
		}()
	}
	time.Sleep(warmup)
	measuring.Store(true)
	w0, start := written.Load(), time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	w1, elapsed := written.Load(), time.Since(start)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	pcts := func(lat []time.Duration) string {
		slices.Sort(lat)
		pct := func(p float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
		}
		return fmt.Sprintf("p50 %v  p90 %v  p99 %v  p99.9 %v  max %v", pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1))
	}
	fmt.Printf("two hops (probe → regional → HQ), %s at every tier\n", storeKind())
	fmt.Printf("written at probe: %.0f changes/s (target %d)\n", float64(w1-w0)/elapsed.Seconds(), rate)
	fmt.Printf("observed at HQ:   %d changes in %v (%.0f/s)\n", len(lat[hq.name]), elapsed.Round(time.Millisecond), float64(len(lat[hq.name]))/elapsed.Seconds())
	fmt.Printf("durable at the probe:    %s\n", pcts(lat[probe.name]))
	fmt.Printf("durable at the regional: %s\n", pcts(lat[eu.name]))
	fmt.Printf("latency p50 %s\n", strings.TrimPrefix(pcts(lat[hq.name]), "p50 "))
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
