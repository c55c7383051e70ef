package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sys/unix"

	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// The Mosquitto side: the same storm on a raw broker, the baseline of what
// the node's storm costs. The same simulated clients (probes/sim, MQTT
// 3.1.1 over TLS, persistent sessions, a QoS 1 subscription to
// strata/<id>/cmd/+, from the same source addresses) connect once, paced,
// and leave; the bench publishes one QoS 1 message to each client's own
// command topic while it is away (Mosquitto queues it in the client's
// session); then every client reconnects at once, until every client
// has received its message (and answered it: a QoS 1 publish Mosquitto
// acknowledges). A session Mosquitto dropped shows as a CONNACK with no
// session present (and its message as lost).
//
// Mosquitto runs in a process of its own with the bench's open-file
// limit (20,000 on the machine the figures come from: 15,000 clients fit),
// configured so that nothing of a session expires or is dropped:
// persistent_client_expiration unset, max_queued_messages far above the
// one message queued per client, max_connections unbounded.

// mosquittoPath finds the mosquitto executable.
func mosquittoPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", errors.New("mosquitto not found: run scripts/install-test-deps.sh, or give -mosquitto")
}

// freePort is a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// procCPU is the user and system CPU time process pid has used.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (in parentheses, maybe with spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procRSS is process pid's resident set, in MB.
func procRSS(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

// sysValues follows Mosquitto's $SYS counters the bench waits on.
type sysValues struct {
	connected, subscriptions atomic.Int64
}

func runMosquitto(o options) (*sideResult, error) {
	exe, err := mosquittoPath(o.mosquitto)
	if err != nil {
		return nil, err
	}
	if o.stormConc <= 0 {
		o.stormConc = o.devices
	}
	dir, err := os.MkdirTemp("", "strata-storm-mosquitto")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ca, err := certs.NewCA("storm CA")
	if err != nil {
		return nil, err
	}
	srv, err := ca.IssueServer("storm", certs.ServerHosts())
	if err != nil {
		return nil, err
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := ca.WriteFiles(caFile, filepath.Join(dir, "ca.key")); err != nil {
		return nil, err
	}
	if err := srv.WriteFiles(certFile, keyFile); err != nil {
		return nil, err
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	plainPort, err := freePort()
	if err != nil {
		return nil, err
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	// user: when started as root, Mosquitto would otherwise drop to the
	// user mosquitto, who cannot read the key.
	conf := fmt.Sprintf(`user %s
per_listener_settings false
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 1000
max_queued_bytes 0
max_inflight_messages 20
queue_qos0_messages false
sys_interval 1
log_dest stderr
log_type error
log_type warning
listener %d 127.0.0.1
certfile %s
keyfile %s
listener %d 127.0.0.1
`, me.Username, tlsPort, certFile, keyFile, plainPort)
	confFile := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-c", confFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	// Mosquitto does not raise its own open-file limit: give it the
	// bench's hard limit (os/exec gives a child the soft limit the bench
	// started with).
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			return nil, fmt.Errorf("mosquitto open-file limit: %w", err)
		}
		if lim.Max < uint64(o.devices)+100 {
			fmt.Printf("warning: open-file limit %d is short of %d clients\n", lim.Max, o.devices)
		}
	}
	plainAddr := fmt.Sprintf("127.0.0.1:%d", plainPort)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", tlsAddr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("mosquitto does not listen on %s: %w", tlsAddr, err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the broker's listener
	}
	version := "?"
	if out, err := exec.Command(exe, "-h").Output(); err == nil || len(out) > 0 {
		if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) >= 3 {
			version = f[2]
		}
	}
	fmt.Printf("== mosquitto %s (TLS on loopback, persistent sessions in memory), %d clients from %d address(es)\n", version, o.devices, max(o.sources, 1))

	// The bench's own client: it follows $SYS and publishes the queued
	// messages, on the plain listener.
	var sys sysValues
	mon := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + plainAddr).SetClientID("storm-bench").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second))
	if tok := mon.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("bench client: %v", tok.Error())
	}
	defer mon.Disconnect(0)
	follow := func(topic string, v *atomic.Int64) error {
		tok := mon.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(m.Payload())), 10, 64); err == nil {
				v.Store(n)
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("subscribe %s: %v", topic, tok.Error())
		}
		return nil
	}
	if err := errors.Join(follow("$SYS/broker/clients/connected", &sys.connected),
		follow("$SYS/broker/subscriptions/count", &sys.subscriptions)); err != nil {
		return nil, err
	}
	// waitSys waits for *v == want, or >= want when atLeast.
	waitSys := func(what string, v *atomic.Int64, want int64, atLeast bool) error {
		deadline := time.Now().Add(o.timeout)
		for time.Now().Before(deadline) {
			if n := v.Load(); n == want || atLeast && n > want {
				return nil
			}
			time.Sleep(100 * time.Millisecond) // polling Mosquitto's $SYS counter
		}
		return fmt.Errorf("mosquitto %s not %d after %s (now %d)", what, want, o.timeout, v.Load())
	}
	// The bench's client is one of the connected clients.
	own := int64(1)

	sc, err := benchproc.StartChild("simulator", o.simNice, false, nil, "-role", "sim", "-devices", fmt.Sprint(o.devices),
		"-sim-anonymous", "-sim-mqtt", tlsAddr, "-sim-ca", caFile, "-timeout", o.timeout.String(), "-sources", fmt.Sprint(o.sources))
	if err != nil {
		return nil, err
	}
	defer sc.Stop()
	if err := sc.Read(&struct{}{}); err != nil {
		return nil, err
	}
	var first stormResult
	if err := sc.Call(&first, "paced", fmt.Sprint(o.connectRate)); err != nil {
		return nil, err
	}
	if first.Err != "" {
		return nil, errors.New(first.Err)
	}
	if err := errors.Join(waitSys("connected clients", &sys.connected, int64(o.devices)+own, false),
		waitSys("subscriptions", &sys.subscriptions, int64(o.devices), true)); err != nil {
		return nil, err
	}
	fmt.Printf("first connection, paced at %.0f/s: all %d connected and subscribed in %s\n", o.connectRate, o.devices, first.AllConnected.Round(time.Millisecond))
	if err := sc.Call(nil, "disconnect"); err != nil {
		return nil, err
	}
	if err := waitSys("connected clients", &sys.connected, own, false); err != nil {
		return nil, err
	}

	// One QoS 1 message on each client's own command topic while it is
	// away, acknowledged by Mosquitto once queued in the session.
	t0 := time.Now()
	const window = 256
	toks := make([]paho.Token, 0, window)
	for i := range o.devices {
		id := fmt.Sprintf("storm-%d", i)
		toks = append(toks, mon.Publish(fmt.Sprintf("strata/%s/cmd/m%d", id, i), 1, false, fmt.Sprintf(`{"function":"echo","args":{"n":%d}}`, i)))
		if len(toks) == window || i == o.devices-1 {
			for _, t := range toks {
				if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
					return nil, fmt.Errorf("queue a message: %v", t.Error())
				}
			}
			toks = toks[:0]
		}
	}
	fmt.Printf("queued %d QoS 1 messages, one per offline client, in %s\n", o.devices, time.Since(t0).Round(time.Millisecond))

	cpu0 := procCPU(pid)
	t0 = time.Now()
	var res stormResult
	if err := sc.Call(&res, "storm", fmt.Sprint(o.devices), fmt.Sprint(o.stormConc)); err != nil {
		return nil, err
	}
	cpu, wall := procCPU(pid)-cpu0, time.Since(t0)
	report("mosquitto: reconnect storm, one queued message per client", o, res,
		nodeUsage{Wall: wall, CPU: cpu, RSSMB: procRSS(pid), Load: benchproc.LoadAvg()}, nil)
	side := &sideResult{broker: "mosquitto", devices: o.devices, sources: o.sources, res: res, cpu: cpu, rssMB: procRSS(pid),
		note: "mosquitto " + version}
	if err := sc.Call(nil, "disconnect"); err != nil {
		return side, err
	}
	if res.Err != "" {
		return side, errors.New(res.Err)
	}
	return side, nil
}

// sideResult is one side's storm with a message queued for each device.
type sideResult struct {
	broker           string
	devices, sources int
	res              stormResult
	cpu              time.Duration
	rssMB            float64
	note             string
}

// line is the side's RESULT line.
func (s *sideResult) line() string {
	r := s.res.Report
	at := func(d time.Duration) string {
		if d == 0 {
			return "not reached"
		}
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	received := r.CommandsReceived - r.CommandsDuplicate
	return fmt.Sprintf("RESULT %s: %d devices from %d address(es), one QoS 1 message queued each: every session back %s; every message received %s (answered %s); "+
		"sessions dropped %d (%d with no session present on reconnect, %d closed by the broker); messages lost %d, received twice %d; "+
		"connection attempts %d; broker CPU %.1f s, RSS %.0f MB at the end; %s",
		s.broker, s.devices, max(s.sources, 1), at(s.res.AllConnected), at(s.res.AllReceived), at(s.res.AllAnswered),
		r.SessionsAbsent+r.Disconnects, r.SessionsAbsent, r.Disconnects, int64(s.devices)-received, r.CommandsDuplicate,
		r.ConnectAttempts, s.cpu.Seconds(), s.rssMB, s.note)
}
