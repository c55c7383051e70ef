// Command bulkjob measures a bulk job over a hierarchy: HQ issues one job
// to every device below it, spread over several probes, beside Mosquitto
// delivering one QoS 1 message to as many subscribed clients, in the same
// run.
//
//	go run ./tests/bench/bulkjob -devices 100000 -probes 6
//
// Every node is a process of its own (this executable, -role node:
// node.New on a temporary Badger store, as strata serve builds it); HQ
// listens for federation, each probe joins it with a peer token
// (grant operate, publishing /devices). The devices (probes/sim, MQTT
// over TLS, persistent sessions, answering every command) run in one
// simulator process per probe: a process may hold 20,000 open files.
//
// Steps:
//
//  1. Baseline: as many Mosquitto brokers as probes (TLS on loopback),
//     the same simulators connected to them (anonymous), and one QoS 1
//     message published to each client's command topic, from one
//     publisher per broker; the time from the first publish to the last
//     message received by a client.
//  2. The hierarchy: HQ and the probes, the devices enrolled (through
//     POST /api/v1/enroll, -subset of them with the enrollment group
//     "small", the others "big") and connected.
//  3. The operator API's latency at HQ, idle: GET
//     /api/v1/contexts/{path} of random mirrored device contexts at a
//     steady rate, for -idle.
//  4. A small job (the "small" devices, a filter on their label) and then
//     the big one (every device: filter type=device), each from its
//     POST /api/v1/jobs at HQ until HQ's counters show every device's
//     command acknowledged (no device pending or queued), and until every
//     device's result is in; the GETs go on meanwhile. Per job: the
//     federation entries each probe sent up to HQ while it ran (HQ's
//     strata_federation_entries_applied_total by provider): the messages
//     the job cost each link, beside its number of devices.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

type options struct {
	devices     int
	probes      int
	subset      float64
	connectRate float64
	getRate     float64
	idle        time.Duration
	timeout     time.Duration
	mosquitto   bool
	nice        int
	dir         string
	profile     string
}

func main() {
	role := flag.String("role", "bench", "bench, or the child processes it starts: node, sim")
	var o options
	flag.IntVar(&o.devices, "devices", 100000, "simulated devices, spread evenly over the probes")
	flag.IntVar(&o.probes, "probes", 6, "probe processes (and Mosquitto brokers in the baseline)")
	flag.Float64Var(&o.subset, "subset", 0.1, "share of the devices in the small job")
	flag.Float64Var(&o.connectRate, "connect-rate", 3000, "device connections/s, over all simulators")
	flag.Float64Var(&o.getRate, "get-rate", 100, "GET /api/v1/contexts/{path} per second at HQ")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "how long the idle GET latency is measured")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a step after this long")
	flag.BoolVar(&o.mosquitto, "mosquitto", true, "run the Mosquitto baseline first")
	flag.IntVar(&o.nice, "nice", 0, "niceness of the probes, the simulators and the Mosquitto brokers (HQ and its GET clients stay at 0): as if they ran on other machines than HQ")
	flag.StringVar(&o.dir, "dir", "", "folder of the nodes and brokers (default: a temporary one, removed after)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write CPU profiles of the first probe (FILE) and HQ (FILE.hq) over the big job")
	var na nodeArgs
	flag.StringVar(&na.name, "name", "", "(-role node) the node's name")
	flag.StringVar(&na.upstream, "upstream", "", "(-role node) the consumer's federation address")
	flag.StringVar(&na.token, "token", "", "(-role node) the join token")
	flag.BoolVar(&na.listen, "listen", false, "(-role node) listen for federation")
	var sa simArgs
	flag.StringVar(&sa.creds, "sim-credentials", "", "(-role sim) device credentials, JSON lines; none: anonymous")
	flag.StringVar(&sa.mqtt, "sim-mqtt", "", "(-role sim) the MQTT address")
	flag.StringVar(&sa.ca, "sim-ca", "", "(-role sim) the CA certificate")
	flag.StringVar(&sa.prefix, "sim-prefix", "m", "(-role sim) anonymous client id prefix")
	flag.Parse()
	var err error
	switch *role {
	case "bench":
		err = run(o)
	case "node":
		na.dir = o.dir
		err = runNode(na)
	case "sim":
		sa.devices, sa.connectRate, sa.sources = o.devices, o.connectRate, 1+o.devices/20000
		err = runSim(sa)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bulkjob (%s): %v\n", *role, err)
		os.Exit(1)
	}
}

// share is the number of devices of probe i of n.
func share(total, n, i int) int {
	if i < total%n {
		return total/n + 1
	}
	return total / n
}

func run(o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "strata-bulkjob")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	fmt.Printf("machine: %d cores, load average %s; %d devices over %d probes; MQTT over TLS on loopback; probes, simulators and brokers at nice %d\n",
		runtime.NumCPU(), benchproc.LoadAvg(), o.devices, o.probes, o.nice)
	var base time.Duration
	if o.mosquitto {
		var err error
		if base, err = mosquittoBaseline(o); err != nil {
			return fmt.Errorf("mosquitto baseline: %w", err)
		}
	}
	return strataRun(o, base)
}

// ---- the baseline ----

// freePort returns a loopback TCP port free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func mosquittoBin() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", errors.New("mosquitto not found: run bash scripts/install-test-deps.sh, or -mosquitto=false")
}

// broker is a Mosquitto process with its simulator.
type broker struct {
	addr string
	cmd  *exec.Cmd
	sim  *benchproc.Child
	n    int
}

func (b *broker) stop() {
	if b.sim != nil {
		b.sim.Stop()
	}
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
	}
}

func mosquittoBaseline(o options) (time.Duration, error) {
	bin, err := mosquittoBin()
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(o.dir, "mosquitto")
	ca, err := certs.NewCA("mosquitto CA")
	if err != nil {
		return 0, err
	}
	srv, err := ca.IssueServer("mosquitto", certs.ServerHosts())
	if err != nil {
		return 0, err
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := ca.WriteFiles(caFile, filepath.Join(dir, "ca.key")); err != nil {
		return 0, err
	}
	if err := srv.WriteFiles(filepath.Join(dir, "srv.crt"), filepath.Join(dir, "srv.key")); err != nil {
		return 0, err
	}
	brokers := make([]*broker, o.probes)
	defer func() {
		for _, b := range brokers {
			if b != nil {
				b.stop()
			}
		}
	}()
	for i := range brokers {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		conf := filepath.Join(dir, fmt.Sprintf("m%d.conf", i))
		body := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous true\npersistence false\nmax_queued_messages 1000\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\n",
			port, caFile, filepath.Join(dir, "srv.crt"), filepath.Join(dir, "srv.key"))
		if os.Geteuid() == 0 {
			body += "user root\n" // else it reads its files as user mosquitto, outside this folder's mode 0700
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return 0, err
		}
		b := &broker{addr: fmt.Sprintf("127.0.0.1:%d", port), n: share(o.devices, o.probes, i)}
		brokers[i] = b
		b.cmd = exec.Command(bin, "-c", conf)
		if o.nice > 0 {
			b.cmd = exec.Command("nice", "-n", fmt.Sprint(o.nice), bin, "-c", conf)
		}
		b.cmd.Stderr = os.Stderr
		if err := b.cmd.Start(); err != nil {
			return 0, err
		}
		if err := poll(10*time.Second, func() bool {
			c, err := net.Dial("tcp", b.addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}); err != nil {
			return 0, fmt.Errorf("broker %d not listening: %w", i, err)
		}
	}
	for i, b := range brokers {
		sc, err := startSim(o, b.n, "", b.addr, caFile, fmt.Sprintf("m%dx", i))
		if err != nil {
			return 0, err
		}
		b.sim = sc
	}
	if err := waitConnected(o, brokers); err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)
	pubs := make([]paho.Client, len(brokers))
	for i, b := range brokers {
		opts := paho.NewClientOptions().AddBroker("ssl://" + b.addr).SetClientID(fmt.Sprintf("bench-pub-%d", i)).
			SetTLSConfig(&tls.Config{RootCAs: pool}).SetCleanSession(true).SetOrderMatters(false).SetAutoReconnect(false)
		c := paho.NewClient(opts)
		if t := c.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			return 0, fmt.Errorf("publisher %d: %v", i, t.Error())
		}
		defer c.Disconnect(0)
		pubs[i] = c
	}
	job := "m" + strings.Repeat("0", jobPrefixLen-1)
	payload := []byte(`{"function":"echo","args":{}}`)
	fmt.Printf("baseline: %d Mosquitto %s brokers (TLS), %d devices connected; one QoS 1 message to each client's command topic, one publisher per broker\n",
		len(brokers), mosquittoVersion(bin), o.devices)
	begin(brokers)
	t0 := time.Now()
	var wg sync.WaitGroup
	var pubErr atomic.Value
	for i, b := range brokers {
		wg.Go(func() {
			toks := make([]paho.Token, 0, b.n)
			for n := range b.n {
				toks = append(toks, pubs[i].Publish(fmt.Sprintf("strata/m%dx%d/cmd/%s-%d", i, n, job, n), 1, false, payload))
			}
			for _, t := range toks {
				if !t.WaitTimeout(o.timeout) || t.Error() != nil {
					pubErr.CompareAndSwap(nil, fmt.Errorf("publish: %v", t.Error()))
					return
				}
			}
		})
	}
	got, last, err := waitReceived(o, brokers, job, o.devices)
	wg.Wait()
	if err != nil {
		return 0, err
	}
	if e, _ := pubErr.Load().(error); e != nil {
		return 0, e
	}
	took := time.Unix(0, last).Sub(t0)
	us := end(brokers)
	fmt.Printf("baseline: Mosquitto delivered %d of %d messages in %s (first publish to the last message received); simulators %s; load average %s\n",
		got, o.devices, ms(took), us, benchproc.LoadAvg())
	return took, nil
}

func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) >= 3 {
		return f[2]
	}
	return "?"
}

// sims are what the steps need of a group of simulators.
type simGroup interface{ simulators() []*benchproc.Child }

func (b *broker) simulators() []*benchproc.Child { return []*benchproc.Child{b.sim} }

func sims[T simGroup](gs []T) []*benchproc.Child {
	var out []*benchproc.Child
	for _, g := range gs {
		out = append(out, g.simulators()...)
	}
	return out
}

func startSim(o options, n int, creds, mqtt, ca, prefix string) (*benchproc.Child, error) {
	args := []string{"-role", "sim", "-devices", fmt.Sprint(n), "-sim-mqtt", mqtt, "-sim-ca", ca,
		"-connect-rate", fmt.Sprint(o.connectRate / float64(o.probes)), "-sim-prefix", prefix}
	if creds != "" {
		args = append(args, "-sim-credentials", creds)
	}
	sc, err := benchproc.StartChild("simulator", o.nice, false, nil, args...)
	if err != nil {
		return nil, err
	}
	if err := sc.Read(&struct{}{}); err != nil {
		sc.Stop()
		return nil, err
	}
	return sc, nil
}

func waitConnected[T simGroup](o options, gs []T) error {
	t0 := time.Now()
	var c int64
	err := poll(o.timeout, func() bool {
		c = 0
		for _, s := range sims(gs) {
			var r simCount
			if s.Call(&r, "count") != nil {
				return false
			}
			c += r.Connected
		}
		return c >= int64(o.devices)
	})
	if err != nil {
		return fmt.Errorf("devices connected: %d of %d: %w", c, o.devices, err)
	}
	fmt.Printf("%d devices connected in %s\n", o.devices, ms(time.Since(t0)))
	return nil
}

// waitReceived waits until the simulators received want commands of job,
// and returns how many and the time of the last.
func waitReceived[T simGroup](o options, gs []T, job string, want int) (int64, int64, error) {
	var got, last int64
	err := poll(o.timeout, func() bool {
		got, last = 0, 0
		for _, s := range sims(gs) {
			var r simCount
			if s.Call(&r, "count", job) != nil {
				return false
			}
			got += r.Received
			last = max(last, r.Last)
		}
		return got >= int64(want)
	})
	if err != nil {
		err = fmt.Errorf("received %d of %d: %w", got, want, err)
	}
	return got, last, err
}

func begin[T simGroup](gs []T) {
	for _, s := range sims(gs) {
		s.Call(nil, "begin")
	}
}

// end sums the simulators' CPU since begin.
func end[T simGroup](gs []T) string {
	var cpu time.Duration
	var wall time.Duration
	var dropped, dups int64
	for _, s := range sims(gs) {
		var u benchproc.Usage
		if s.Call(&u, "end") == nil {
			cpu += u.CPU
			wall = max(wall, u.Wall)
		}
		var c simCount
		if s.Call(&c, "count") == nil {
			dropped += c.Dropped
			dups += c.Dups
		}
	}
	return fmt.Sprintf("CPU %.1f s (%.2f cores), sessions dropped %d, duplicates %d", cpu.Seconds(), cpu.Seconds()/max(wall.Seconds(), 1e-9), dropped, dups)
}

// poll calls f until it reports true, every 20 ms, for at most d.
func poll(d time.Duration, f func() bool) error { return pollEvery(d, 20*time.Millisecond, f) }

func pollEvery(d, every time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		time.Sleep(every) // polling a counter, not synchronising
	}
	return nil
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// ---- Strata ----

// probe is a probe process with its simulator.
type probe struct {
	name string
	proc *benchproc.Child
	sim  *benchproc.Child
	info nodeInfo
	dir  string
	n    int
	// paths of its devices' contexts at HQ
	mirrored []string
	small    int
}

func (p *probe) simulators() []*benchproc.Child { return []*benchproc.Child{p.sim} }

func adminOf(dir, api string) (*client.Client, []byte, string, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, "tls/ca.crt"))
	if err != nil {
		return nil, nil, "", err
	}
	token, err := os.ReadFile(filepath.Join(dir, node.AdminTokenFile))
	if err != nil {
		return nil, nil, "", err
	}
	c, err := client.New("https://"+api, string(token), caPEM)
	return c, caPEM, string(token), err
}

func strataRun(o options, base time.Duration) error {
	ctx := context.Background()
	hqDir := filepath.Join(o.dir, "hq")
	hq, err := benchproc.StartChild("hq", 0, false, nil, "-role", "node", "-dir", hqDir, "-name", "hq", "-listen")
	if err != nil {
		return err
	}
	defer hq.Stop()
	var hqInfo nodeInfo
	if err := hq.Read(&hqInfo); err != nil {
		return err
	}
	admin, hqCA, hqToken, err := adminOf(hqDir, hqInfo.API)
	if err != nil {
		return err
	}
	probes := make([]*probe, o.probes)
	defer func() {
		for _, p := range probes {
			if p != nil && p.sim != nil {
				p.sim.Stop()
			}
			if p != nil && p.proc != nil {
				p.proc.Stop()
			}
		}
	}()
	for i := range probes {
		p := &probe{name: fmt.Sprintf("p%d", i+1), n: share(o.devices, o.probes, i)}
		p.dir = filepath.Join(o.dir, p.name)
		p.small = int(float64(p.n) * o.subset)
		tok, err := admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: p.name, Grant: "operate", TTL: time.Hour})
		if err != nil {
			return fmt.Errorf("peer token: %w", err)
		}
		if p.proc, err = benchproc.StartChild(p.name, o.nice, false, nil, "-role", "node", "-dir", p.dir, "-name", p.name,
			"-upstream", hqInfo.Fed, "-token", tok.Token); err != nil {
			return err
		}
		probes[i] = p
		if err := p.proc.Read(&p.info); err != nil {
			return err
		}
	}
	if err := poll(o.timeout, func() bool {
		ps, err := admin.Peers(ctx)
		if err != nil {
			return false
		}
		up := 0
		for _, p := range ps {
			if p.Direction == "provider" && p.State == "connected" {
				up++
			}
		}
		return up == len(probes)
	}); err != nil {
		return fmt.Errorf("probes linked: %w", err)
	}
	fmt.Printf("HQ and %d probes linked\n", len(probes))

	// Enroll and connect the devices.
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(probes))
	for i, p := range probes {
		wg.Go(func() { errs[i] = p.enroll(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%d devices enrolled through POST /api/v1/enroll in %s\n", o.devices, ms(time.Since(t0)))
	for _, p := range probes {
		if p.sim, err = startSim(o, p.n, filepath.Join(p.dir, "devices.jsonl"), p.info.MQTT, filepath.Join(p.dir, "tls/ca.crt"), ""); err != nil {
			return err
		}
	}
	if err := waitConnected(o, probes); err != nil {
		return err
	}
	// Every device online at HQ: the mirror has them.
	var paths []string
	for _, p := range probes {
		paths = append(paths, p.mirrored...)
	}
	if err := poll(o.timeout, func() bool {
		page, err := admin.Search(ctx, client.SearchQuery{Type: "device", Count: true, Limit: 1})
		return err == nil && page.Total >= o.devices
	}); err != nil {
		return fmt.Errorf("devices mirrored at HQ: %w", err)
	}

	g := newGetter(hqInfo.API, hqToken, hqCA, paths, o.getRate)
	defer g.stop()
	g.mark()
	time.Sleep(o.idle) // the idle measurement's length
	idle := g.mark()
	fmt.Printf("idle: GET /api/v1/contexts/{path} at HQ, %.0f/s over %s: %s\n", o.getRate, o.idle, idle)

	runJob := func(name string, target map[string]string, want int, profile bool) (time.Duration, error) {
		fed0 := scrapeFed(hqInfo.API, hqToken, hqCA)
		for _, p := range probes {
			p.proc.Call(nil, "begin")
		}
		hq.Call(nil, "begin")
		begin(probes)
		if profile && o.profile != "" {
			abs, _ := filepath.Abs(o.profile)
			probes[0].proc.Call(nil, "profile-start", abs)
			hq.Call(nil, "profile-start", abs+".hq")
		}
		g.mark()
		t0 := time.Now()
		j, err := admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "echo", Args: json.RawMessage(`{}`),
			Target: client.BulkTarget{Filter: target}, TTL: "1h"})
		if err != nil {
			return 0, fmt.Errorf("POST /api/v1/jobs: %w", err)
		}
		var acked, done time.Duration
		var v *client.BulkJob
		// Each probe's own view too: when its devices were all
		// acknowledged there, before HQ heard of it.
		probeAcked := make([]time.Duration, len(probes))
		var pwg sync.WaitGroup
		for i, p := range probes {
			pwg.Go(func() {
				pa, _, _, err := adminOf(p.dir, p.info.API)
				if err != nil {
					return
				}
				pollEvery(o.timeout, 500*time.Millisecond, func() bool {
					pv, err := pa.GetBulkJob(ctx, j.ID)
					if err == nil && pv.Local.Total > 0 && pv.Local.Pending == 0 && pv.Local.Queued == 0 {
						probeAcked[i] = time.Since(t0)
						return true
					}
					return false
				})
			})
		}
		err = poll(o.timeout, func() bool {
			v, err = admin.GetBulkJob(ctx, j.ID)
			if err != nil {
				return false
			}
			c := v.Counters
			if acked == 0 && c.Total == want && c.Pending == 0 && c.Queued == 0 {
				acked = time.Since(t0)
			}
			if done == 0 && v.State == client.BulkDone {
				done = time.Since(t0)
			}
			return acked > 0 && done > 0
		})
		during := g.mark()
		if profile && o.profile != "" {
			probes[0].proc.Call(nil, "profile-stop")
			hq.Call(nil, "profile-stop")
		}
		if err != nil {
			// What the devices saw, and each probe's own view.
			for i, p := range probes {
				var c simCount
				p.sim.Call(&c, "count", j.ID)
				pa, _, _, _ := adminOf(p.dir, p.info.API)
				var local any
				if pa != nil {
					if pv, err := pa.GetBulkJob(ctx, j.ID); err == nil {
						local = pv.Local
					}
				}
				fmt.Printf("  %s: devices received %d, connected %d, sessions dropped %d, duplicates %d; its view %+v; its metrics %v\n",
					p.name, c.Received, c.Connected, c.Dropped, c.Dups, local, scrapeMQTT(probes[i]))
			}
			return 0, fmt.Errorf("%s job %s: %w; at HQ: %+v", name, j.ID, err, v)
		}
		pwg.Wait()
		got, last, err := waitReceived(o, probes, j.ID, want)
		if err != nil {
			return 0, err
		}
		var pa []string
		for i, p := range probes {
			pa = append(pa, p.name+" "+ms(probeAcked[i]))
		}
		fed1 := scrapeFed(hqInfo.API, hqToken, hqCA)
		var cpu []string
		for _, p := range probes {
			var u benchproc.Usage
			p.proc.Call(&u, "end")
			cpu = append(cpu, fmt.Sprintf("%.1f", u.CPU.Seconds()))
		}
		var hu benchproc.Usage
		hq.Call(&hu, "end")
		fmt.Printf("%s job %s, %d devices (target %v):\n", name, j.ID, want, target)
		fmt.Printf("  every command acknowledged (HQ's counters) %s after the POST; every device received it %s after; every result in, job done at HQ %s after\n",
			ms(acked), ms(time.Unix(0, last).Sub(t0)), ms(done))
		fmt.Printf("  at HQ: %+v; devices received %d\n", v.Counters, got)
		fmt.Printf("  every command acknowledged in each probe's own view: %s\n", strings.Join(pa, ", "))
		var links []string
		for _, p := range probes {
			links = append(links, fmt.Sprintf("%s %.0f", p.name, fed1[p.name]-fed0[p.name]))
		}
		fmt.Printf("  federation entries each probe sent up while it ran (%d devices each): %s\n", want/len(probes), strings.Join(links, ", "))
		fmt.Printf("  GET /api/v1/contexts/{path} at HQ meanwhile: %s (idle p99 %s: %.2f×)\n", during, ms2(idle.p99), float64(during.p99)/float64(max(idle.p99, 1)))
		fmt.Printf("  CPU s: HQ %.1f, probes %s; simulators %s; load average %s\n", hu.CPU.Seconds(), strings.Join(cpu, " "), end(probes), benchproc.LoadAvg())
		return acked, nil
	}
	small := 0
	for _, p := range probes {
		small += p.small
	}
	if _, err := runJob("small", map[string]string{"type": "device", "label.group": "small"}, small, false); err != nil {
		return err
	}
	took, err := runJob("big", map[string]string{"type": "device"}, o.devices, true)
	if err != nil {
		return err
	}
	if base > 0 {
		fmt.Printf("summary: %d devices over %d probes: every command acknowledged %s after the POST at HQ; Mosquitto %s (%.2f×)\n",
			o.devices, len(probes), ms(took), ms(base), took.Seconds()/base.Seconds())
	}
	return nil
}

// enroll enrolls the probe's devices, the first small of them in group
// "small", and writes their credentials to devices.jsonl.
func (p *probe) enroll(ctx context.Context) error {
	admin, _, _, err := adminOf(p.dir, p.info.API)
	if err != nil {
		return err
	}
	toks := map[string]string{}
	for _, g := range []string{"small", "big"} {
		t, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: g, TTL: time.Hour})
		if err != nil {
			return fmt.Errorf("%s: enrollment token: %w", p.name, err)
		}
		toks[g] = t.Secret
	}
	creds := make([]sim.Credentials, p.n)
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= p.n || first.Load() != nil {
					return
				}
				g := "big"
				if i < p.small {
					g = "small"
				}
				hw := fmt.Sprintf("sim-%s-%d", p.name, i)
				e, err := admin.Enroll(ctx, client.EnrollRequest{Token: toks[g], HardwareID: hw})
				if err != nil {
					first.CompareAndSwap(nil, fmt.Errorf("%s: enroll %s: %w", p.name, hw, err))
					return
				}
				creds[i] = sim.Credentials{Enrollment: *e, HardwareID: hw}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	for _, c := range creds {
		p.mirrored = append(p.mirrored, "/peers/"+p.name+string(c.Path))
	}
	return sim.SaveCredentialsFile(filepath.Join(p.dir, "devices.jsonl"), creds)
}

// scrapeFed reads HQ's federation entries applied, by provider.
func scrapeFed(api, token string, caPEM []byte) map[string]float64 {
	const prefix = `strata_federation_entries_applied_total{provider="`
	out := map[string]float64{}
	for name, v := range benchproc.Metrics(api, token, caPEM, prefix) {
		out[strings.TrimSuffix(strings.TrimPrefix(name, prefix), `"}`)] = v
	}
	return out
}

// scrapeMQTT reads a probe's command delivery metrics.
func scrapeMQTT(p *probe) map[string]float64 {
	_, caPEM, token, err := adminOf(p.dir, p.info.API)
	if err != nil {
		return nil
	}
	return benchproc.Metrics(p.info.API, token, caPEM, "strata_mqtt_commands", "strata_mqtt_sessions", "strata_mqtt_deliveries", "strata_jobs_")
}

// ---- the operator API's latency ----

// getter sends GET /api/v1/contexts/{path} at a steady rate and keeps
// the latencies since the last mark.
type getter struct {
	mu    sync.Mutex
	lat   []time.Duration
	errs  int
	done  chan struct{}
	wg    sync.WaitGroup
	hc    *http.Client
	base  string
	token string
}

type latencies struct {
	n, errs        int
	p50, p99, max_ time.Duration
}

func ms2(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func (l latencies) String() string {
	return fmt.Sprintf("%d requests (%d errors), p50 %s p99 %s max %s", l.n, l.errs, ms2(l.p50), ms2(l.p99), ms2(l.max_))
}

func newGetter(api, token string, caPEM []byte, paths []string, rate float64) *getter {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	g := &getter{done: make(chan struct{}), base: "https://" + api, token: token,
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}}
	const workers = 4
	every := time.Duration(float64(time.Second) * workers / rate)
	for w := range workers {
		g.wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-g.done:
					return
				case <-t.C:
				}
				g.one(paths[r.IntN(len(paths))])
			}
		})
	}
	return g
}

func (g *getter) one(path string) {
	req, _ := http.NewRequest("GET", g.base+"/api/v1/contexts"+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.token)
	t0 := time.Now()
	resp, err := g.hc.Do(req)
	ok := err == nil && resp.StatusCode == 200
	if err == nil {
		var sink [4096]byte
		for {
			if _, err := resp.Body.Read(sink[:]); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
	d := time.Since(t0)
	g.mu.Lock()
	if ok {
		g.lat = append(g.lat, d)
	} else {
		g.errs++
	}
	g.mu.Unlock()
}

// mark returns the latencies since the last mark.
func (g *getter) mark() latencies {
	g.mu.Lock()
	d, errs := g.lat, g.errs
	g.lat, g.errs = nil, 0
	g.mu.Unlock()
	l := latencies{n: len(d), errs: errs}
	if len(d) == 0 {
		return l
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	l.p50, l.p99, l.max_ = q(0.5), q(0.99), d[len(d)-1]
	return l
}

func (g *getter) stop() {
	close(g.done)
	g.wg.Wait()
}
