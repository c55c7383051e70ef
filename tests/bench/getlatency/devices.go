package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
)

// deviceLoad is the simulated fleet that loads the node while GET is
// measured: devices enrolled through the node's API, publishing telemetry
// over MQTT (QoS 1, a window of several messages each).
type deviceLoad struct {
	devices  int
	rate     float64
	inflight int
	tls      bool
	profile  string // CPU profile of the loaded phase; empty: none
}

// enroll enrolls n devices through POST /api/v1/enroll with one
// enrollment token, a few at a time (each enrollment is a durable write).
func enroll(ctx context.Context, admin *client.Client, n int) ([]sim.Credentials, error) {
	tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "bench", TTL: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	creds := make([]sim.Credentials, n)
	const workers = 8
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				if errs[w] != nil {
					continue
				}
				hw := fmt.Sprintf("sim-getload-%d", i)
				e, err := admin.Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: hw})
				if err != nil {
					errs[w] = fmt.Errorf("enroll %s: %w", hw, err)
					continue
				}
				creds[i] = sim.Credentials{Enrollment: *e, HardwareID: hw}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return creds, errors.Join(errs...)
}

// phase is what one measuring phase used of the machine.
type phase struct {
	wall time.Duration
	cpu  time.Duration // user + system CPU of this process (node, simulator and clients)
	load string        // /proc/loadavg at the end
	// sched is how long goroutines waited runnable for a CPU (the Go
	// runtime's /sched/latencies histogram over the phase); mutexWait is
	// the time goroutines spent blocked on sync.Mutex/RWMutex.
	schedP50, schedP99 time.Duration
	mutexWait          time.Duration
}

func (p phase) String() string {
	return fmt.Sprintf("process CPU %.2f cores of %d; goroutine run-queue wait p50 %s p99 %s; mutex wait summed over goroutines %s; load average %s",
		p.cpu.Seconds()/p.wall.Seconds(), runtime.NumCPU(), p.schedP50, p.schedP99, p.mutexWait.Round(time.Millisecond), p.load)
}

// during runs f and reports what this process used and waited for
// meanwhile.
func during(f func()) phase {
	samples := []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sync/mutex/wait/total:seconds"}}
	metrics.Read(samples)
	h0 := samples[0].Value.Float64Histogram()
	h0 = &metrics.Float64Histogram{Counts: slices.Clone(h0.Counts), Buckets: h0.Buckets}
	m0 := samples[1].Value.Float64()
	c0, t0 := cpuTime(), time.Now()
	f()
	ph := phase{wall: time.Since(t0), cpu: cpuTime() - c0, load: loadAvg()}
	metrics.Read(samples)
	h1 := samples[0].Value.Float64Histogram()
	diff := make([]uint64, len(h1.Counts))
	for i := range diff {
		diff[i] = h1.Counts[i] - h0.Counts[i]
	}
	ph.schedP50, ph.schedP99 = histQ(diff, h1.Buckets, 0.5), histQ(diff, h1.Buckets, 0.99)
	ph.mutexWait = time.Duration((samples[1].Value.Float64() - m0) * float64(time.Second))
	return ph
}

// histQ is the upper bound of the bucket holding quantile p.
func histQ(counts []uint64, buckets []float64, p float64) time.Duration {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	want, seen := uint64(p*float64(total)), uint64(0)
	for i, c := range counts {
		seen += c
		if seen > want {
			ub := buckets[i+1]
			if math.IsInf(ub, 1) {
				ub = buckets[i]
			}
			return time.Duration(ub * float64(time.Second)).Round(time.Microsecond)
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// loaded starts the fleet, runs warm (unmeasured) and then measure while
// the devices publish, and reports the telemetry the node acknowledged
// during measure.
func (dl deviceLoad) loaded(ctx context.Context, creds []sim.Credentials, mqttAddr string, caPEM []byte, warm, measure func()) (phase, error) {
	cfg := sim.DefaultConfig()
	cfg.Devices = len(creds)
	cfg.Credentials = creds
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
		return phase{}, err
	}
	if err := f.Start(ctx); err != nil {
		return phase{}, err
	}
	defer func() {
		f.Stop()
		f.Wait()
	}()
	select {
	case <-f.Ready():
	case <-f.Done():
		_, err := f.Wait()
		return phase{}, fmt.Errorf("fleet ended before connecting: %w", err)
	}
	warm()
	s0 := f.Stats()
	if s0.Connected < int64(len(creds)) {
		fmt.Fprintf(os.Stderr, "warning: %d of %d devices connected (failures %v)\n", s0.Connected, len(creds), s0.ConnectFailures)
	}
	if dl.profile != "" {
		pf, err := os.Create(dl.profile)
		if err != nil {
			return phase{}, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return phase{}, err
		}
	}
	ph := during(measure)
	if dl.profile != "" {
		pprof.StopCPUProfile()
	}
	s1 := f.Stats()
	secs := ph.wall.Seconds()
	fmt.Printf("devices: %d connected, asked %.0f msg/s, acknowledged %.0f msg/s (QoS 1, %d in flight each, %s), skipped %.0f/s, lost %d, reconnects %d, PUBACK p50 %.1f ms p99 %.1f ms (whole run)\n",
		s1.Connected, dl.rate, float64(s1.Acked-s0.Acked)/secs, dl.inflight, map[bool]string{true: "TLS", false: "plain TCP"}[dl.tls],
		float64(s1.Skipped-s0.Skipped)/secs, s1.Lost-s0.Lost, s1.Reconnects-s0.Reconnects, ms(s1.PubackLatency.P50), ms(s1.PubackLatency.P99))
	return ph, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
