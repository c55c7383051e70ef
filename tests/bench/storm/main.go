// Command storm measures a reconnect storm on one node: every device of a
// fleet comes back at once, each with a command queued for it while it was
// away, beside the same storm with nothing queued, and beside the same
// storm on Mosquitto (mosquitto.go), in the same run.
//
//	go run ./tests/bench/storm -devices 15000
//
// It starts a node (node.New on a temporary Badger store, as strata serve
// does) in a process of its own (this executable, -role node), enrolls the
// devices through POST /api/v1/enroll, and runs them (probes/sim, MQTT
// over TLS, persistent sessions) in a third process (-role sim): a process
// may hold 20,000 open files, not 15,000 device connections and the node.
//
// Steps: connect every device (paced), disconnect them all; baseline:
// reconnect them all at once with nothing queued, time until every session
// is back, disconnect them all again; then queue one command ("echo", a
// per-device call with no wait) for each device while it is offline, and
// reconnect them all at once: time until every device has received and
// answered its command, sessions dropped by the node (disconnects the
// simulator did not ask for), connection attempts, delivery latency, and
// the node's CPU and memory over each storm, sessions dropped (unasked
// disconnects, and CONNACKs with no session present).
//
// Then, with -brokers strata,mosquitto (the default), the Mosquitto side
// (mosquitto.go): the same clients and storm on a Mosquitto the bench
// starts, one QoS 1 message queued for each client. Each side prints one
// RESULT line, and the lines are printed together again at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

type options struct {
	devices     int
	connectRate float64 // first, paced connection of the fleet
	stormConc   int     // connection attempts in progress at once during a storm
	queueConc   int     // API calls in flight while queueing the commands
	simNice     int
	sources     int // source addresses the devices connect from (127.0.0.1 and up)
	timeout     time.Duration
	dir         string
	profile     string
	brokers     string // strata, mosquitto, or both (comma separated)
	mosquitto   string // the mosquitto executable
}

func main() {
	role := flag.String("role", "bench", "bench, or the child processes it starts: node, sim")
	var o options
	flag.IntVar(&o.devices, "devices", 15000, "simulated devices")
	flag.IntVar(&o.sources, "sources", 1, "loopback source addresses the devices connect from, 127.0.0.1 and up (several, as devices on a network; 1, as devices behind one NAT)")
	flag.Float64Var(&o.connectRate, "connect-rate", 1000, "connections/s of the first (paced) connection of the fleet")
	flag.IntVar(&o.stormConc, "storm-concurrency", 0, "connection attempts in progress at once in a storm (0: every device)")
	flag.IntVar(&o.queueConc, "queue-concurrency", 16, "API calls in flight while queueing the commands")
	flag.IntVar(&o.simNice, "sim-nice", 0, "niceness of the simulator process relative to the bench")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on a storm after this long")
	flag.StringVar(&o.dir, "dir", "", "node directory (default: a temporary one, removed after)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the node over the storm with commands")
	flag.StringVar(&o.brokers, "brokers", "strata,mosquitto", "the sides to run, one after the other: strata (the node), mosquitto (the baseline), or both")
	flag.StringVar(&o.mosquitto, "mosquitto", "", "the mosquitto executable (default: mosquitto in PATH, or /usr/sbin/mosquitto; scripts/install-test-deps.sh installs it)")
	anonymous := flag.Bool("sim-anonymous", false, "(-role sim) anonymous clients storm-0..storm-N-1 (the Mosquitto side)")
	creds := flag.String("sim-credentials", "", "(-role sim) device credentials, JSON lines")
	mqttAddr := flag.String("sim-mqtt", "", "(-role sim) the node's MQTT address")
	caFile := flag.String("sim-ca", "", "(-role sim) the node's CA certificate")
	flag.Parse()
	var err error
	switch *role {
	case "bench":
		err = run(o)
	case "node":
		err = runNode(o.dir)
	case "sim":
		err = runSim(o, *creds, *mqttAddr, *caFile, *anonymous)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "storm (%s): %v\n", *role, err)
		os.Exit(1)
	}
}

// nodeInfo is what the node process announces once it serves.
type nodeInfo struct {
	API  string `json:"api"`
	MQTT string `json:"mqtt"`
}

// nodeUsage is the node process's CPU and memory over a phase.
type nodeUsage struct {
	Wall    time.Duration `json:"wall"`
	CPU     time.Duration `json:"cpu"`
	RSSMB   float64       `json:"rss_mb"`    // at the end
	PeakMB  float64       `json:"peak_mb"`   // VmHWM: the process's peak so far
	HeapMB  float64       `json:"heap_mb"`   // Go heap in use at the end
	Threads int           `json:"threads"`   // OS threads at the end
	Gs      int           `json:"goroutine"` // goroutines at the end
	Load    string        `json:"load"`
}

// runNode is the node process: a node on dir, serving the API and MQTT
// over TLS on loopback, answering the bench's commands until its input
// ends.
func runNode(dir string) error {
	cfg, err := setup(dir)
	if err != nil {
		return err
	}
	cfg.MQTT.Addr = "127.0.0.1:0"
	n, err := benchproc.StartNode(cfg) // as strata serve does
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	if err := benchproc.Announce(nodeInfo{API: n.APIAddr(), MQTT: n.MQTTAddr("tls")}); err != nil {
		return err
	}
	var t0 time.Time
	var cpu0 time.Duration
	var prof benchproc.Profiler
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		switch cmd {
		case "begin":
			t0, cpu0 = time.Now(), benchproc.CPUTime()
			return struct{}{}, nil
		case "end":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			threads, _ := os.ReadDir("/proc/self/task")
			return nodeUsage{Wall: time.Since(t0), CPU: benchproc.CPUTime() - cpu0, RSSMB: benchproc.StatusMB("VmRSS"), PeakMB: benchproc.StatusMB("VmHWM"),
				HeapMB: float64(ms.HeapInuse) / (1 << 20), Threads: len(threads), Gs: runtime.NumGoroutine(), Load: benchproc.LoadAvg()}, nil
		case "profile-start":
			return struct{}{}, prof.Start(args)
		case "profile-stop":
			prof.Stop()
			return struct{}{}, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	return nil
}

func setup(dir string) (config.Config, error) {
	ca, err := certs.NewCA("storm CA")
	if err != nil {
		return config.Config{}, err
	}
	srv, err := ca.IssueServer("storm", certs.ServerHosts())
	if err != nil {
		return config.Config{}, err
	}
	if err := ca.WriteFiles(filepath.Join(dir, "tls/ca.crt"), filepath.Join(dir, "tls/ca.key")); err != nil {
		return config.Config{}, err
	}
	if err := srv.WriteFiles(filepath.Join(dir, "tls/api.crt"), filepath.Join(dir, "tls/api.key")); err != nil {
		return config.Config{}, err
	}
	t, err := auth.NewTokenSecret()
	if err != nil {
		return config.Config{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, node.AdminTokenFile), []byte(t), 0o600); err != nil {
		return config.Config{}, err
	}
	cfg := config.Default()
	cfg.Name = "bench"
	cfg.Dir = dir
	cfg.API.Addr = "127.0.0.1:0"
	return cfg, nil
}

// stormResult is what the simulator reports of one storm.
type stormResult struct {
	Report figures `json:"report"`
	// AllConnected, AllReceived and AllAnswered are from the start of
	// the storm to the last device connected, to the last command
	// received, and to the last command answered (its result
	// acknowledged by the broker); zero when not reached.
	AllConnected time.Duration `json:"all_connected"`
	AllReceived  time.Duration `json:"all_received"`
	AllAnswered  time.Duration `json:"all_answered"`
	// Received and Answered are the distributions, over devices, of the
	// time from the start of the storm to the command's receipt and to
	// the PUBACK of its result.
	Received lat
	Err      string `json:"err,omitempty"`
}

// runSim is the simulator process. "storm N CONC TIMEOUT" connects every
// device of the credentials file at once (CONC attempts at a time) and
// reports when they are all connected and, when N > 0, when N commands are
// answered; "paced RATE" connects them at RATE/s; "disconnect" closes
// every session (MQTT DISCONNECT: the node keeps the sessions). Anonymous,
// the devices are clients storm-0..storm-N-1 with no credentials.
func runSim(o options, credsFile, mqttAddr, caFile string, anonymous bool) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	var fleet *sim.Fleet
	if err := benchproc.Announce(struct{}{}); err != nil {
		return err
	}
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		switch cmd {
		case "storm", "paced":
			if fleet != nil {
				return nil, errors.New("fleet running")
			}
			cfg := sim.DefaultConfig()
			cfg.Devices = o.devices
			if anonymous {
				cfg.Anonymous, cfg.IDPrefix = true, "storm-"
			} else {
				cfg.CredentialsFile = credsFile
			}
			cfg.MQTTAddr = mqttAddr
			cfg.CAPEM = caPEM
			for i := range max(o.sources, 1) {
				cfg.SourceAddrs = append(cfg.SourceAddrs, netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)}))
			}
			cfg.Idle = true
			cfg.Rate = 0
			cfg.ReportInterval = 0
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			want, timeout := 0, o.timeout
			if cmd == "paced" {
				fmt.Sscan(args[0], &cfg.ConnectRate)
				cfg.ConnectConcurrency = 256
			} else {
				fmt.Sscan(args[0], &want)
				fmt.Sscan(args[1], &cfg.ConnectConcurrency)
				cfg.ConnectRate = 1e9 // all at once: only the concurrency bounds it
			}
			var (
				mu       sync.Mutex
				received []time.Duration
				start    time.Time
				started  atomic.Bool
			)
			cfg.OnCommand = func(c sim.Command) {
				if !started.Load() {
					return
				}
				mu.Lock()
				received = append(received, c.ReceivedAt.Sub(start))
				mu.Unlock()
			}
			f, err := sim.NewFleet(cfg)
			if err != nil {
				return nil, err
			}
			fleet = f
			start = time.Now()
			started.Store(true)
			if err := f.Start(context.Background()); err != nil {
				return nil, err
			}
			var res stormResult
			deadline := time.Now().Add(timeout)
			for {
				r := f.Stats()
				now := time.Since(start)
				if res.AllConnected == 0 && r.Connected >= int64(o.devices) {
					res.AllConnected = now
				}
				if want > 0 && res.AllReceived == 0 && r.CommandsReceived-r.CommandsDuplicate >= int64(want) {
					res.AllReceived = now
				}
				if want > 0 && res.AllAnswered == 0 && r.CommandsAnswered >= int64(want) {
					res.AllAnswered = now
				}
				if res.AllConnected > 0 && (want == 0 || res.AllAnswered > 0) {
					break
				}
				if time.Now().After(deadline) {
					res.Err = fmt.Sprintf("timed out after %s: %d connected, %d answered", timeout, r.Connected, r.CommandsAnswered)
					break
				}
				time.Sleep(20 * time.Millisecond) // polling the simulator's counters, not synchronising
			}
			if want > 0 {
				// Let late duplicates (redeliveries) show before counting.
				time.Sleep(time.Second)
			}
			res.Report = figuresOf(f.Stats())
			mu.Lock()
			res.Received = dist(received)
			mu.Unlock()
			return res, nil
		case "disconnect":
			if fleet == nil {
				return struct{}{}, nil
			}
			fleet.Stop()
			r, err := fleet.Wait()
			fleet = nil
			if err != nil {
				return nil, err
			}
			return figuresOf(r), nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	if fleet != nil {
		fleet.Stop()
		fleet.Wait()
	}
	return nil
}

// lat is a latency distribution (sim.Latency, without its JSON in
// milliseconds).
type lat struct{ Count, P50, P90, P99, Max time.Duration }

// figures are the simulator's counters the bench reports.
type figures struct {
	Connected, ConnectAttempts, Reconnects, Disconnects, SessionsAbsent    int64
	CommandsReceived, CommandsDuplicate, CommandsExpired, CommandsAnswered int64
	ConnectFailures, DisconnectReasons                                     map[string]int64
	ConnectLatency, CommandLatency                                         lat
}

func latOf(l sim.Latency) lat {
	return lat{time.Duration(l.Count), l.P50, l.P90, l.P99, l.Max}
}

func figuresOf(r sim.Report) figures {
	return figures{r.Connected, r.ConnectAttempts, r.Reconnects, r.Disconnects, r.SessionsAbsent,
		r.CommandsReceived, r.CommandsDuplicate, r.CommandsExpired, r.CommandsAnswered,
		r.ConnectFailures, r.DisconnectReasons, latOf(r.ConnectLatency), latOf(r.CommandLatency)}
}

func dist(d []time.Duration) lat {
	if len(d) == 0 {
		return lat{}
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return lat{time.Duration(len(d)), q(0.5), q(0.9), q(0.99), d[len(d)-1]}
}

// enroll enrolls n devices through POST /api/v1/enroll.
func enroll(ctx context.Context, admin *client.Client, n int) ([]sim.Credentials, error) {
	tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "storm", TTL: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	creds := make([]sim.Credentials, n)
	err = parallel(16, n, func(i int) error {
		hw := fmt.Sprintf("sim-storm-%d", i)
		e, err := admin.Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: hw})
		if err != nil {
			return fmt.Errorf("enroll %s: %w", hw, err)
		}
		creds[i] = sim.Credentials{Enrollment: *e, HardwareID: hw}
		return nil
	})
	return creds, err
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

// run runs each side of o.brokers, one after the other, and prints their
// RESULT lines together at the end.
func run(o options) error {
	var lines []string
	var errs []error
	for _, b := range strings.Split(o.brokers, ",") {
		var side *sideResult
		var err error
		switch strings.TrimSpace(b) {
		case "strata":
			side, err = runStrata(o)
		case "mosquitto":
			side, err = runMosquitto(o)
		default:
			err = fmt.Errorf("unknown broker %q (strata, mosquitto)", b)
		}
		if side != nil {
			fmt.Println(side.line())
			lines = append(lines, side.line())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b, err))
		}
	}
	if len(lines) > 0 {
		fmt.Printf("\nmachine: %d cores, load average %s at the end\n", runtime.NumCPU(), benchproc.LoadAvg())
		for _, l := range lines {
			fmt.Println(l)
		}
	}
	return errors.Join(errs...)
}

// runStrata is the node's side: the storm with nothing queued, then the
// storm with a command queued for each device.
func runStrata(o options) (*sideResult, error) {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "strata-storm")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	if o.stormConc <= 0 {
		o.stormConc = o.devices
	}
	nd, err := benchproc.StartChild("node", 0, false, nil, "-role", "node", "-dir", o.dir)
	if err != nil {
		return nil, err
	}
	defer nd.Stop()
	var info nodeInfo
	if err := nd.Read(&info); err != nil {
		return nil, err
	}
	caFile := filepath.Join(o.dir, "tls/ca.crt")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(filepath.Join(o.dir, node.AdminTokenFile))
	if err != nil {
		return nil, err
	}
	admin, err := client.New("https://"+info.API, string(token), caPEM)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	fmt.Printf("machine: %d cores, load average %s; node GOMAXPROCS default, MQTT over TLS on loopback\n", runtime.NumCPU(), benchproc.LoadAvg())

	t0 := time.Now()
	creds, err := enroll(ctx, admin, o.devices)
	if err != nil {
		return nil, err
	}
	fmt.Printf("enrolled %d devices through POST /api/v1/enroll in %s\n", len(creds), time.Since(t0).Round(time.Millisecond))
	credsFile := filepath.Join(o.dir, "storm-devices.jsonl")
	if err := sim.SaveCredentialsFile(credsFile, creds); err != nil {
		return nil, err
	}

	sc, err := benchproc.StartChild("simulator", o.simNice, false, nil, "-role", "sim", "-devices", fmt.Sprint(o.devices),
		"-sim-credentials", credsFile, "-sim-mqtt", info.MQTT, "-sim-ca", caFile, "-timeout", o.timeout.String(), "-sources", fmt.Sprint(o.sources))
	if err != nil {
		return nil, err
	}
	defer sc.Stop()
	if err := sc.Read(&struct{}{}); err != nil {
		return nil, err
	}
	metrics := func() map[string]float64 { return scrape(info.API, string(token), caPEM) }
	waitSessions := func(want float64) error {
		deadline := time.Now().Add(o.timeout)
		for time.Now().Before(deadline) {
			if metrics()["strata_mqtt_sessions"] == want {
				return nil
			}
			time.Sleep(100 * time.Millisecond) // polling the node's metric
		}
		return fmt.Errorf("node sessions not %v after %s (now %v)", want, o.timeout, metrics()["strata_mqtt_sessions"])
	}
	disconnect := func() error {
		if err := sc.Call(nil, "disconnect"); err != nil {
			return err
		}
		return waitSessions(0)
	}

	// The fleet connects once, paced, so every device has a session, then
	// leaves.
	var first stormResult
	if err := sc.Call(&first, "paced", fmt.Sprint(o.connectRate)); err != nil {
		return nil, err
	}
	if first.Err != "" {
		return nil, errors.New(first.Err)
	}
	if err := waitSessions(float64(o.devices)); err != nil {
		return nil, err
	}
	fmt.Printf("first connection, paced at %.0f/s: all %d connected in %s\n", o.connectRate, o.devices, first.AllConnected.Round(time.Millisecond))
	if err := disconnect(); err != nil {
		return nil, err
	}

	storm := func(name string, commands int) (stormResult, nodeUsage, map[string]float64, error) {
		var res stormResult
		var u nodeUsage
		m0 := metrics()
		if err := nd.Call(nil, "begin"); err != nil {
			return res, u, nil, err
		}
		if err := sc.Call(&res, "storm", fmt.Sprint(commands), fmt.Sprint(o.stormConc)); err != nil {
			return res, u, nil, err
		}
		if err := nd.Call(&u, "end"); err != nil {
			return res, u, nil, err
		}
		m1 := metrics()
		d := map[string]float64{}
		for k, v := range m1 {
			d[k] = v - m0[k]
		}
		report(name, o, res, u, d)
		return res, u, d, nil
	}

	// Baseline: the same storm with nothing queued.
	base, _, _, err := storm("baseline: reconnect storm, no queued command", 0)
	if err != nil {
		return nil, err
	}
	if err := disconnect(); err != nil {
		return nil, err
	}

	// One command queued for each device while it is offline.
	t0 = time.Now()
	jobIDs := make([]string, len(creds))
	err = parallel(o.queueConc, len(creds), func(i int) error {
		j, status, err := admin.CallFunction(ctx, creds[i].Path, "echo", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), 0)
		if err != nil {
			return fmt.Errorf("call %s: %w", creds[i].Path, err)
		}
		if status != 202 && status != 200 {
			return fmt.Errorf("call %s: status %d", creds[i].Path, status)
		}
		jobIDs[i] = j.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("queued %d commands (POST .../functions/echo, no wait, %d in flight) in %s\n", len(jobIDs), o.queueConc, time.Since(t0).Round(time.Millisecond))

	if o.profile != "" {
		abs, _ := filepath.Abs(o.profile)
		if err := nd.Call(nil, "profile-start", abs); err != nil {
			return nil, err
		}
	}
	res, usage, _, err := storm("reconnect storm, one queued command per device", len(creds))
	if o.profile != "" {
		nd.Call(nil, "profile-stop")
	}
	if err != nil {
		return nil, err
	}

	// The node's truth: every job's state.
	states := map[string]int{}
	var smu sync.Mutex
	err = parallel(16, len(jobIDs), func(i int) error {
		j, err := admin.GetJob(ctx, jobIDs[i])
		if err != nil {
			return err
		}
		smu.Lock()
		states[string(j.State)]++
		smu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("node's job states after the storm: %v\n", states)
	if res.AllAnswered > 0 && base.AllConnected > 0 {
		fmt.Printf("summary: %d devices, all commands answered %s after the storm began (every session back in %s); baseline (nothing queued) every session back in %s\n",
			o.devices, res.AllAnswered.Round(time.Millisecond), res.AllConnected.Round(time.Millisecond), base.AllConnected.Round(time.Millisecond))
	}
	side := &sideResult{broker: "strata", devices: o.devices, sources: o.sources, res: res, cpu: usage.CPU, rssMB: usage.RSSMB,
		note: fmt.Sprintf("node's jobs %v", states)}
	if err := sc.Call(nil, "disconnect"); err != nil {
		return side, err
	}
	if res.Err != "" {
		return side, errors.New(res.Err)
	}
	return side, nil
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func report(name string, o options, res stormResult, u nodeUsage, m map[string]float64) {
	r := res.Report
	fmt.Printf("%s (%d devices, %d connection attempts in progress at once):\n", name, o.devices, o.stormConc)
	if res.Err != "" {
		fmt.Printf("  NOT COMPLETE: %s\n", res.Err)
	}
	fmt.Printf("  every session back in %s", ms(res.AllConnected))
	if res.AllAnswered > 0 {
		fmt.Printf("; every command received and answered in %s", ms(res.AllAnswered))
	}
	fmt.Println()
	fmt.Printf("  sessions dropped (not asked by the devices): %d %v, no session present on reconnect: %d; connection attempts %d (failures %v), reconnects %d; connect latency p50 %s p99 %s max %s\n",
		r.Disconnects, r.DisconnectReasons, r.SessionsAbsent, r.ConnectAttempts, r.ConnectFailures, r.Reconnects,
		ms(r.ConnectLatency.P50), ms(r.ConnectLatency.P99), ms(r.ConnectLatency.Max))
	if r.CommandsReceived > 0 {
		fmt.Printf("  commands received %d (duplicates %d, expired %d), answered %d; from the storm's start to receipt p50 %s p90 %s p99 %s max %s; receipt to result PUBACK p50 %s p99 %s max %s\n",
			r.CommandsReceived, r.CommandsDuplicate, r.CommandsExpired, r.CommandsAnswered,
			ms(res.Received.P50), ms(res.Received.P90), ms(res.Received.P99), ms(res.Received.Max),
			ms(r.CommandLatency.P50), ms(r.CommandLatency.P99), ms(r.CommandLatency.Max))
	}
	if m == nil { // not the node
		fmt.Printf("  broker: CPU %.1f s over %s (%.2f cores), RSS %.0f MB at the end; load average %s\n",
			u.CPU.Seconds(), ms(u.Wall), u.CPU.Seconds()/u.Wall.Seconds(), u.RSSMB, u.Load)
		return
	}
	fmt.Printf("  node: CPU %.1f s over %s (%.2f cores), RSS %.0f MB at the end (peak %.0f MB), heap %.0f MB, %d threads, %d goroutines; load average %s\n",
		u.CPU.Seconds(), ms(u.Wall), u.CPU.Seconds()/u.Wall.Seconds(), u.RSSMB, u.PeakMB, u.HeapMB, u.Threads, u.Gs, u.Load)
	var keys []string
	for k, v := range m {
		if v != 0 && !strings.Contains(k, "_bucket") && !strings.Contains(k, "sessions") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %+g", strings.TrimPrefix(k, "strata_"), m[k]))
	}
	fmt.Printf("  node metrics over the storm: %s\n", strings.Join(parts, ", "))
}

// scrape reads the node's strata_mqtt_* and strata_jobs_* metrics.
func scrape(api, token string, caPEM []byte) map[string]float64 {
	return benchproc.Metrics(api, token, caPEM, "strata_mqtt_", "strata_jobs_")
}
