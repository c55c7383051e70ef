package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// deviceLoad is the simulated fleet that loads the node while GET is
// measured: devices enrolled through the node's API, publishing telemetry
// over MQTT (QoS 1, a window of several messages each) from a process of
// their own, standing for devices on other machines.
type deviceLoad struct {
	devices  int
	rate     float64
	inflight int
	tls      bool
	profile  string // CPU profile of the node over the loaded phase; empty: none
	trace    string // execution trace of the node over the first second of the loaded phase; empty: none
	nice     int    // niceness of the simulator process
	idle     bool   // the simulator in the idle scheduling class
}

// enroll enrolls n devices (benchproc.Enroll).
func enroll(ctx context.Context, admin *client.Client, n int) ([]sim.Credentials, error) {
	return benchproc.Enroll(ctx, admin, n, "bench", "getload")
}

// simReady is what the simulator process announces once its devices
// are connected.
type simReady struct {
	Connected int64  `json:"connected"`
	Err       string `json:"err,omitempty"`
}

// simStats is the simulator's figures, as the bench reads them.
type simStats struct {
	Connected, Acked, Skipped, Lost, Reconnects int64
	PubackP50, PubackP99                        time.Duration
	ConnectFailures                             map[string]int64
}

// runSim is the simulator process: it connects the devices of credsFile
// to the node's MQTT listener, publishes at dl.rate until its input ends,
// and answers the bench's commands meanwhile.
func runSim(dl deviceLoad, credsFile, mqttAddr, caFile string) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cfg := sim.DefaultConfig()
	cfg.Devices = dl.devices
	cfg.CredentialsFile = credsFile
	cfg.MQTTAddr = mqttAddr
	cfg.Plain = !dl.tls
	cfg.CAPEM = caPEM
	cfg.Rate = dl.rate
	cfg.QoS = 1
	cfg.Inflight = dl.inflight
	cfg.AnswerCommands = false
	cfg.ReportInterval = 0
	cfg.ConnectConcurrency = 64
	f, err := sim.NewFleet(cfg)
	if err != nil {
		return err
	}
	if err := f.Start(context.Background()); err != nil {
		return err
	}
	defer func() {
		f.Stop()
		f.Wait()
	}()
	select {
	case <-f.Ready():
	case <-f.Done():
		_, err := f.Wait()
		return benchproc.Announce(simReady{Err: fmt.Sprintf("fleet ended before connecting: %v", err)})
	}
	if err := benchproc.Announce(simReady{Connected: f.Stats().Connected}); err != nil {
		return err
	}
	var m *meter
	benchproc.ServeCommands(func(cmd string, _ []string) (any, error) {
		switch cmd {
		case "begin":
			m = begin()
			return struct{}{}, nil
		case "end":
			if m == nil {
				return nil, errors.New("end without begin")
			}
			return m.end(), nil
		case "stats":
			r := f.Stats()
			return simStats{Connected: r.Connected, Acked: r.Acked, Skipped: r.Skipped, Lost: r.Lost, Reconnects: r.Reconnects,
				PubackP50: r.PubackLatency.P50, PubackP99: r.PubackLatency.P99, ConnectFailures: r.ConnectFailures}, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	return nil
}

// loaded starts the simulator process, runs warm (unmeasured) and then
// measure while the devices publish, and reports the telemetry the node
// acknowledged during measure.
func (dl deviceLoad) loaded(dir string, creds []sim.Credentials, nd *benchproc.Child, mqttAddr string, scrape func() map[string]float64, warm, measure func()) (phase, error) {
	credsFile := filepath.Join(dir, "getlatency-devices.jsonl")
	if err := sim.SaveCredentialsFile(credsFile, creds); err != nil {
		return phase{}, err
	}
	args := []string{"-role", "sim", "-sim-credentials", credsFile, "-sim-mqtt", mqttAddr, "-sim-ca", filepath.Join(dir, "tls/ca.crt"),
		"-devices", fmt.Sprint(len(creds)), "-device-rate", fmt.Sprint(dl.rate), "-inflight", fmt.Sprint(dl.inflight),
		fmt.Sprintf("-device-tls=%t", dl.tls)}
	sc, err := benchproc.StartChild("simulator", dl.nice, dl.idle, nil, args...)
	if err != nil {
		return phase{}, err
	}
	defer sc.Stop()
	var rd simReady
	if err := sc.Read(&rd); err != nil {
		return phase{}, err
	}
	if rd.Err != "" {
		return phase{}, errors.New(rd.Err)
	}
	warm()
	var s0, s1 simStats
	if err := sc.Call(&s0, "stats"); err != nil {
		return phase{}, err
	}
	if s0.Connected < int64(len(creds)) {
		fmt.Fprintf(os.Stderr, "warning: %d of %d devices connected (failures %v)\n", s0.Connected, len(creds), s0.ConnectFailures)
	}
	if dl.profile != "" {
		abs, err := filepath.Abs(dl.profile)
		if err != nil {
			return phase{}, err
		}
		if err := nd.Call(nil, "profile-start", abs); err != nil {
			return phase{}, err
		}
	}
	if dl.trace != "" {
		abs, err := filepath.Abs(dl.trace)
		if err != nil {
			return phase{}, err
		}
		if err := nd.Call(nil, "trace-start", abs); err != nil {
			return phase{}, err
		}
		stop := time.AfterFunc(time.Second, func() { nd.Call(nil, "trace-stop") })
		defer stop.Stop()
	}
	m0 := scrape()
	ph, err := during(nd, sc, measure)
	ph.simNice, ph.simIdle = dl.nice, dl.idle
	m1 := scrape()
	if err != nil {
		return phase{}, err
	}
	if dl.profile != "" {
		if err := nd.Call(nil, "profile-stop"); err != nil {
			return phase{}, err
		}
	}
	if err := sc.Call(&s1, "stats"); err != nil {
		return phase{}, err
	}
	secs := ph.node.Wall.Seconds()
	ph.acked = float64(s1.Acked-s0.Acked) / secs
	fmt.Printf("devices: %d connected, asked %.0f msg/s, acknowledged %.0f msg/s (QoS 1, %d in flight each, %s), skipped %.0f/s, lost %d, reconnects %d, PUBACK p50 %.1f ms p99 %.1f ms (whole run)\n",
		s1.Connected, dl.rate, float64(s1.Acked-s0.Acked)/secs, dl.inflight, map[bool]string{true: "TLS", false: "plain TCP"}[dl.tls],
		float64(s1.Skipped-s0.Skipped)/secs, s1.Lost-s0.Lost, s1.Reconnects-s0.Reconnects, ms(s1.PubackP50), ms(s1.PubackP99))
	const w = "strata_mqtt_ingest_wait_seconds"
	if n := m1[w+"_count"] - m0[w+"_count"]; n > 0 {
		fmt.Printf("node ingest gate: %.0f reads/s, %.0f%% waited for a slot, mean wait %.2f ms, %.0f%% over 1 ms; messages waiting for the store at the end %.0f\n",
			n/secs, 100*(1-(m1[w+`_bucket{le="0"}`]-m0[w+`_bucket{le="0"}`])/n), 1000*(m1[w+"_sum"]-m0[w+"_sum"])/n,
			100*(1-(m1[w+`_bucket{le="0.001"}`]-m0[w+`_bucket{le="0.001"}`])/n), m1["strata_mqtt_uplink_queued"])
	}
	return ph, nil
}

// during runs f and reports what the node, the simulator (when sc is not
// nil) and this process used and waited for meanwhile.
func during(nd, sc *benchproc.Child, f func()) (phase, error) {
	var ph phase
	if err := nd.Call(nil, "begin"); err != nil {
		return ph, err
	}
	if sc != nil {
		if err := sc.Call(nil, "begin"); err != nil {
			return ph, err
		}
	}
	m := begin()
	f()
	ph.bench = m.end()
	if err := nd.Call(&ph.node, "end"); err != nil {
		return ph, err
	}
	if sc != nil {
		ph.sim = new(usage)
		if err := sc.Call(ph.sim, "end"); err != nil {
			return ph, err
		}
	}
	return ph, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
