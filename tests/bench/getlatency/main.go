// Command getlatency measures the latency of GET /api/v1/contexts/{path}
// on a node holding a large tree, beside its baseline: a direct read of the
// same contexts from the node's store, in the same run.
//
//	go run ./tests/bench/getlatency -contexts 1000000 -duration 20s
//
// It starts a node in a process of its own (this executable, -role node)
// on a temporary Badger store and loopback HTTPS, fills the tree through
// the model (sites × devices), then runs concurrent keep-alive clients in
// this process against random device paths.
//
// With -device-rate, the same GETs are measured again, in the same run,
// while simulated devices (probes/sim, enrolled through the node's API)
// publish telemetry over MQTT to the node at that rate in all, then once
// more after they stop. The devices run in a third process (-role sim),
// standing for devices on other machines; it runs at the node's priority
// unless -sim-nice lowers it (so that on a small machine it gives the
// node's CPU back, as devices elsewhere would not take it), and the run
// prints which:
//
//	go run ./tests/bench/getlatency -contexts 100000 -devices 1000 -device-rate 20000
//
// -compare runs it three times in one invocation, the node's defaults,
// its device readers waiting in Go's network poller (-ingest-poller off),
// and its device work unbounded, and prints them side by side.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

func main() {
	role := flag.String("role", "bench", "bench, or the child processes it starts: node, sim")
	contexts := flag.Int("contexts", 100_000, "device contexts in the tree")
	perSite := flag.Int("per-site", 1000, "devices per site folder")
	clients := flag.Int("clients", 4, "concurrent clients")
	warmup := flag.Duration("warmup", 10*time.Second, "unmeasured load before measuring (lets compactions after the fill settle)")
	duration := flag.Duration("duration", 20*time.Second, "measuring time for each side")
	keep := flag.String("dir", "", "node directory (default: a temporary one, removed after)")
	baseline := flag.Bool("baseline", true, "also measure model.Get in the node's process (no HTTP)")
	getRate := flag.Float64("get-rate", 0, "GETs/s over all clients on a fixed schedule, latency counted from the scheduled time; 0: each client as fast as it can")
	var dl deviceLoad
	flag.IntVar(&dl.devices, "devices", 1000, "simulated devices publishing telemetry (with -device-rate)")
	flag.Float64Var(&dl.rate, "device-rate", 0, "telemetry messages/s over all devices while GET is measured again; 0: idle only")
	flag.IntVar(&dl.inflight, "inflight", 8, "each device's window of unacknowledged QoS 1 messages")
	flag.BoolVar(&dl.tls, "device-tls", false, "devices connect over MQTT/TLS instead of plain TCP")
	flag.StringVar(&dl.profile, "cpuprofile", "", "write a CPU profile of the node process over the loaded phase")
	flag.StringVar(&dl.trace, "trace", "", "write an execution trace of the node process over the first second of the loaded phase (go run ./tests/bench/schedwait FILE: run-queue waits by kind of goroutine)")
	ingestSlots := flag.Int("ingest-slots", 0, "the node's mqtt.ingest_slots (0: its default; -1: unbounded)")
	ingestPoller := flag.String("ingest-poller", "", "the node's mqtt.ingest_poller (on, off; empty: its default, on)")
	nodeProcs := flag.Int("node-gomaxprocs", 0, "GOMAXPROCS of the node process (0: the Go default, the cores available)")
	flag.IntVar(&dl.nice, "sim-nice", 0, "niceness of the simulator process (0: the same priority as the node and the clients; 10: it gives way to them, as devices on other machines would not take the node's CPU)")
	compare := flag.Bool("compare", false, "run three times, the node's defaults, then with -ingest-poller off, then with its device work unbounded (-ingest-slots -1, GOMAXPROCS = cores: the node without its isolation), and print them side by side")
	flag.BoolVar(&dl.idle, "sim-idle", false, "run the simulator in the kernel's idle scheduling class (SCHED_IDLE, chrt --idle): only on CPU the node and the clients leave")
	simCreds := flag.String("sim-credentials", "", "(-role sim) device credentials, JSON lines")
	simMQTT := flag.String("sim-mqtt", "", "(-role sim) the node's MQTT address")
	simCA := flag.String("sim-ca", "", "(-role sim) the node's CA certificate")
	flag.Parse()
	var err error
	switch *role {
	case "bench":
		b := benchArgs{contexts: *contexts, perSite: *perSite, clients: *clients, duration: *duration, warmup: *warmup, dir: *keep,
			baseline: *baseline, getRate: *getRate, ingestSlots: *ingestSlots, ingestPoller: *ingestPoller, nodeProcs: *nodeProcs, dl: dl}
		if !*compare {
			_, err = run(b)
			break
		}
		var res [3]result
		names := [3]string{"node defaults", "-ingest-poller off", "device work unbounded (-ingest-slots -1)"}
		for i := range res {
			switch i {
			case 1:
				b.ingestPoller = "off"
			case 2:
				b.ingestSlots, b.ingestPoller, b.nodeProcs = -1, "", 0
			}
			fmt.Printf("=== %s\n", names[i])
			if res[i], err = run(b); err != nil {
				break
			}
		}
		if err == nil {
			fmt.Println("=== side by side")
			for i, r := range res {
				fmt.Printf("%s: %s\n", names[i], r)
			}
		}
	case "node":
		err = runNode(*keep, *contexts, *perSite, dl.rate > 0 && dl.devices > 0, dl.tls, *ingestSlots, *ingestPoller)
	case "sim":
		err = runSim(dl, *simCreds, *simMQTT, *simCA)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "getlatency (%s): %v\n", *role, err)
		os.Exit(1)
	}
}

func devicePath(i, perSite int) model.Path {
	return model.Path(fmt.Sprintf("/sites/s%04d/devices/d%07d", i/perSite, i))
}

// benchArgs are the bench's settings for one run.
type benchArgs struct {
	contexts, perSite, clients int
	duration, warmup           time.Duration
	dir                        string
	baseline                   bool
	getRate                    float64
	ingestSlots, nodeProcs     int
	ingestPoller               string
	dl                         deviceLoad
}

// result is a run's outcome in brief, for -compare.
type result struct {
	procs                int
	slots                string
	idle, loaded         time.Duration // GET p99
	schedIdle, schedLoad time.Duration // the node's run-queue wait p99
	acked                float64       // device messages acknowledged per second, loaded
	nodeCores            float64       // the node's CPU, loaded
}

func (r result) String() string {
	ratio := 0.0
	if r.idle > 0 {
		ratio = float64(r.loaded) / float64(r.idle)
	}
	sched := 0.0
	if r.schedIdle > 0 {
		sched = float64(r.schedLoad) / float64(r.schedIdle)
	}
	return fmt.Sprintf("GOMAXPROCS %d, slots %s: GET p99 idle %s, loaded %s = %.2f×; node run-queue wait p99 idle %s, loaded %s = %.1f×; %.0f msg/s acknowledged; node %.2f cores loaded",
		r.procs, r.slots, r.idle, r.loaded, ratio, r.schedIdle, r.schedLoad, sched, r.acked, r.nodeCores)
}

func run(b benchArgs) (result, error) {
	contexts, perSite, clients, duration, warmup, dir, baseline, getRate, ingestSlots, nodeProcs, dl :=
		b.contexts, b.perSite, b.clients, b.duration, b.warmup, b.dir, b.baseline, b.getRate, b.ingestSlots, b.nodeProcs, b.dl
	var res result
	withDevices := dl.rate > 0 && dl.devices > 0
	if dir == "" {
		d, err := os.MkdirTemp("", "strata-getlatency")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var env []string
	if nodeProcs > 0 {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", nodeProcs))
	}
	nd, err := benchproc.StartChild("node", 0, false, env, "-role", "node", "-dir", dir, "-contexts", fmt.Sprint(contexts), "-per-site", fmt.Sprint(perSite),
		"-devices", fmt.Sprint(dl.devices), "-device-rate", fmt.Sprint(dl.rate), fmt.Sprintf("-device-tls=%t", dl.tls), "-ingest-slots", fmt.Sprint(ingestSlots),
		"-ingest-poller", b.ingestPoller)
	if err != nil {
		return res, err
	}
	defer nd.Stop()
	var info nodeInfo
	if err := nd.Read(&info); err != nil {
		return res, err
	}
	fmt.Printf("tree: %d device contexts (%d sites), filled in %s; node process GOMAXPROCS %d, mqtt.ingest_slots %s; machine %d cores\n",
		contexts, (contexts+perSite-1)/perSite, info.Fill, info.GOMAXPROCS, info.Slots, runtime.NumCPU())
	res.procs, res.slots = info.GOMAXPROCS, info.Slots
	if withDevices {
		fmt.Printf("simulator: nice %d%s (-sim-nice%s)\n", dl.nice, map[bool]string{true: ", SCHED_IDLE", false: ""}[dl.idle],
			map[bool]string{true: ", -sim-idle", false: ""}[dl.idle])
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "tls/ca.crt"))
	if err != nil {
		return res, err
	}
	token, err := os.ReadFile(filepath.Join(dir, node.AdminTokenFile))
	if err != nil {
		return res, err
	}

	// Baseline: the same random reads straight from the model, in the
	// node's process.
	if baseline {
		var base summary
		if err := nd.Call(&base, "baseline", fmt.Sprint(clients), warmup.String(), duration.String()); err != nil {
			return res, err
		}
		report("baseline model.Get (in the node's process, no HTTP)", base)
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: clients}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "https://" + info.API + "/api/v1/contexts"
	apiGet := func(r *rand.Rand) error {
		req, _ := http.NewRequest("GET", url+string(devicePath(r.IntN(contexts), perSite)), nil)
		req.Header.Set("Authorization", "Bearer "+string(token))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var creds []sim.Credentials
	if withDevices {
		// Enrolled before the idle side, so both sides read the same tree.
		admin, err := client.New("https://"+info.API, string(token), caPEM)
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		if creds, err = enroll(context.Background(), admin, dl.devices); err != nil {
			return res, err
		}
		fmt.Printf("enrolled %d devices through POST /api/v1/enroll in %s\n", len(creds), time.Since(t0).Round(time.Millisecond))
	}
	const what = "GET /api/v1/contexts/{path} (HTTPS, keep-alive)"
	measure(clients, warmup/2, getRate, apiGet)
	var idle []time.Duration
	ph, err := during(nd, nil, func() { idle = measure(clients, duration, getRate, apiGet) })
	if err != nil {
		return res, err
	}
	report(what+", idle", summarize(idle, duration))
	fmt.Printf("  %s\n", ph)
	res.schedIdle = ph.node.SchedP99
	if !withDevices {
		return res, nil
	}
	var loaded []time.Duration
	scrape := func() map[string]float64 { return scrapeMetrics(hc, "https://"+info.API+"/metrics", string(token)) }
	ph, err = dl.loaded(dir, creds, nd, info.MQTT, scrape,
		func() { measure(clients, warmup/2, getRate, apiGet) },
		func() { loaded = measure(clients, duration, getRate, apiGet) })
	if err != nil {
		return res, err
	}
	report(fmt.Sprintf("%s, devices asked %.0f msg/s", what, dl.rate), summarize(loaded, duration))
	fmt.Printf("  %s\n", ph)
	res.schedLoad, res.acked, res.nodeCores = ph.node.SchedP99, ph.acked, ph.node.cores()
	var after []time.Duration
	ph, err = during(nd, nil, func() { after = measure(clients, duration, getRate, apiGet) })
	if err != nil {
		return res, err
	}
	report(what+", idle again (devices stopped)", summarize(after, duration))
	fmt.Printf("  %s\n", ph)
	if len(idle) > 0 && len(loaded) > 0 {
		li, ll := q(idle, 0.99), q(loaded, 0.99)
		res.idle, res.loaded = li, ll
		fmt.Printf("p99 loaded / idle: %s / %s = %.2f× (target ≤ 1.5×)\n", ll, li, float64(ll)/float64(li))
	}
	return res, nil
}

func setup(dir string) (config.Config, []byte, string, error) {
	ca, err := certs.NewCA("getlatency CA")
	if err != nil {
		return config.Config{}, nil, "", err
	}
	srv, err := ca.IssueServer("getlatency", certs.ServerHosts())
	if err != nil {
		return config.Config{}, nil, "", err
	}
	if err := ca.WriteFiles(filepath.Join(dir, "tls/ca.crt"), filepath.Join(dir, "tls/ca.key")); err != nil {
		return config.Config{}, nil, "", err
	}
	if err := srv.WriteFiles(filepath.Join(dir, "tls/api.crt"), filepath.Join(dir, "tls/api.key")); err != nil {
		return config.Config{}, nil, "", err
	}
	token, err := os.ReadFile(filepath.Join(dir, node.AdminTokenFile))
	if err != nil {
		t, err := auth.NewTokenSecret()
		if err != nil {
			return config.Config{}, nil, "", err
		}
		token = []byte(t)
		if err := os.WriteFile(filepath.Join(dir, node.AdminTokenFile), token, 0o600); err != nil {
			return config.Config{}, nil, "", err
		}
	}
	cfg := config.Default()
	cfg.Name = "bench"
	cfg.Dir = dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.Store.CacheMB = 256
	return cfg, ca.CertPEM, string(token), cfg.Validate()
}

// measure runs clients concurrent loops of op for d and returns the
// sorted latencies. With rate > 0 the clients together start rate
// operations per second on a fixed schedule (open loop) and a latency is
// counted from the scheduled start, so time spent behind schedule counts;
// with rate 0 each client starts its next operation as soon as the last
// one ends (closed loop).
func measure(clients int, d time.Duration, rate float64, op func(*rand.Rand) error) []time.Duration {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(clients) / rate * float64(time.Second))
	}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 42))
			var mine []time.Duration
			next := start.Add(every * time.Duration(c) / time.Duration(clients))
			for time.Now().Before(end) {
				t0 := time.Now()
				if every > 0 {
					if w := time.Until(next); w > 0 {
						time.Sleep(w) // pacing the open-loop schedule
					}
					t0, next = next, next.Add(every)
				}
				if err := op(r); err != nil {
					fmt.Fprintln(os.Stderr, "request failed:", err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	return all
}

// scrapeMetrics reads the node's strata_mqtt_* samples; nil on failure.
func scrapeMetrics(hc *http.Client, url, token string) map[string]float64 {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "strata_mqtt_") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// summary is a latency distribution in brief.
type summary struct {
	N                        int
	Rate                     float64
	P50, P90, P99, P999, Max time.Duration
}

func summarize(lat []time.Duration, d time.Duration) summary {
	if len(lat) == 0 {
		return summary{}
	}
	return summary{N: len(lat), Rate: float64(len(lat)) / d.Seconds(),
		P50: q(lat, 0.50), P90: q(lat, 0.90), P99: q(lat, 0.99), P999: q(lat, 0.999), Max: lat[len(lat)-1]}
}

func report(what string, s summary) {
	if s.N == 0 {
		fmt.Printf("%s: no samples\n", what)
		return
	}
	fmt.Printf("%s: %d requests, %.0f/s, p50 %s, p90 %s, p99 %s, p99.9 %s, max %s\n",
		what, s.N, s.Rate, s.P50, s.P90, s.P99, s.P999, s.Max)
}

// q is the p-quantile of sorted latencies.
func q(lat []time.Duration, p float64) time.Duration {
	return lat[min(len(lat)-1, int(p*float64(len(lat))))]
}
