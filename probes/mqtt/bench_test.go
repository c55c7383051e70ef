//go:build unix

package mqtt

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/probes/sim"
)

// BenchmarkIngest measures what the node spends per device telemetry
// message: a broker over plain TCP in front of a model on a durable Badger
// store, in this process, and strata-sim devices (QoS 1, eight messages
// in flight each, ~100-byte payloads) in a child process, as devices on
// other machines would be. Each op is one message stored and
// acknowledged; allocs/op and the node's CPU per message (cpu-ns/msg:
// this process's user and system CPU over the run, divided by the
// messages) count the node alone, since the devices run elsewhere.
// msgs/commit is how many messages a durable commit carried on average.
//
//	go test ./probes/mqtt -run XXX -bench Ingest -benchtime 200000x -benchmem
//
// rate=20000 paces the devices at 20,000 msg/s over 1,000 devices, as
// tests/bench/getlatency does (so ns/op is the pacing, 50 µs, as long as
// the node keeps up); rate=2000 has 100 devices send at the same rate
// each (20 msg/s), so that little gathers per read and per commit, as on
// a quiet machine; rate=max sends as fast as 200 devices' windows let
// them. Add -cpuprofile to see where the CPU goes; CPU per message, unlike
// ns/op, does not depend much on what else the machine runs, although a

// benchPollerOff runs BenchmarkIngest with its device readers waiting in
// Go's network poller (Config.IngestPollerOff), for comparison.
var benchPollerOff = flag.Bool("ingest-poller-off", false, "BenchmarkIngest: device readers wait in Go's network poller, not the gate's")

// busy machine lets more messages gather per read and per commit.
func BenchmarkIngest(b *testing.B) {
	b.Run("rate=20000", func(b *testing.B) { benchIngest(b, 1000, 20000) })
	b.Run("rate=2000", func(b *testing.B) { benchIngest(b, 100, 2000) })
	b.Run("rate=max", func(b *testing.B) { benchIngest(b, 200, 0) })
}

// ingestChildEnv marks the child process of BenchmarkIngest: it runs
// TestIngestDevices with its settings in the environment.
const ingestChildEnv = "STRATA_BENCH_INGEST_DEVICES"

func benchIngest(b *testing.B, devices int, rate float64) {
	b.StopTimer()
	b.ReportAllocs()
	dir := b.TempDir()
	st, err := store.OpenBadger(store.BadgerOptions{Dir: filepath.Join(dir, "store")})
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { m.Close(); st.Close() }()
	var commits atomic.Int64
	m.OnCommit(func([]model.Entry) { commits.Add(1) })
	devs := &fakeDevices{secrets: map[string]string{}}
	var creds []sim.Credentials
	for i := range devices {
		id := fmt.Sprintf("b%04d", i)
		devs.secrets[id] = "s"
		creds = append(creds, sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "s", TopicPrefix: "strata/" + id + "/"}})
	}
	credsFile := filepath.Join(dir, "devices.jsonl")
	if err := sim.SaveCredentialsFile(credsFile, creds); err != nil {
		b.Fatal(err)
	}
	br, err := New(Config{TCPAddr: "127.0.0.1:0", Devices: devs, Tree: m, Logger: slog.New(slog.DiscardHandler), IngestPollerOff: *benchPollerOff})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	defer br.Shutdown(context.Background())

	cmd := exec.Command(os.Args[0], "-test.run=^TestIngestDevices$")
	cmd.Env = append(os.Environ(), ingestChildEnv+"=1", "STRATA_BENCH_INGEST_CREDS="+credsFile,
		"STRATA_BENCH_INGEST_ADDR="+br.Addr("tcp"), "STRATA_BENCH_INGEST_RATE="+strconv.FormatFloat(rate, 'f', -1, 64))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		in.Close() // the child stops its devices and exits
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	if !ready {
		b.Fatal("the devices' process ended before its devices connected")
	}

	stored := br.metrics.stored[topicTelemetry]
	start := storedCount(stored)
	cpu0, commits0 := processCPU(), commits.Load()
	t0 := time.Now()
	b.StartTimer()
	deadline := time.Now().Add(time.Duration(b.N)*time.Millisecond + time.Minute)
	for storedCount(stored) < start+float64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("stored %.0f of %d messages", storedCount(stored)-start, b.N)
		}
		time.Sleep(time.Millisecond) // polling the counter
	}
	b.StopTimer()
	elapsed := time.Since(t0)
	n := storedCount(stored) - start
	b.ReportMetric(float64(processCPU()-cpu0)/n, "cpu-ns/msg")
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(n/float64(commits.Load()-commits0), "msgs/commit")
}

// BenchmarkTelemetryPersisted (older than BenchmarkIngest, kept for the
// figures measured with it) drives the broker over plain TCP with
// strata-sim devices (QoS 1, one or eight messages in flight each) into a
// durable Badger store, in process, for profiling the per-message path:
//
//	go test ./probes/mqtt -run XXX -bench 'TelemetryPersisted/inflight=8' -benchtime 100000x -cpuprofile cpu.out
func BenchmarkTelemetryPersisted(b *testing.B) {
	for _, inflight := range []int{1, 8} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) { benchTelemetry(b, inflight) })
	}
}

func benchTelemetry(b *testing.B, inflight int) {
	st, err := store.OpenBadger(store.BadgerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { m.Close(); st.Close() }()
	const devices = 200
	devs := &fakeDevices{secrets: map[string]string{}}
	var creds []sim.Credentials
	for i := range devices {
		id := fmt.Sprintf("b%03d", i)
		devs.secrets[id] = "s"
		creds = append(creds, sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "s", TopicPrefix: "strata/" + id + "/"}})
	}
	br, err := New(Config{TCPAddr: "127.0.0.1:0", Devices: devs, Tree: m, Logger: slog.New(slog.DiscardHandler), IngestPollerOff: *benchPollerOff})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	defer br.Shutdown(context.Background())
	cfg := sim.DefaultConfig()
	cfg.Devices, cfg.Credentials, cfg.MQTTAddr, cfg.Plain = devices, creds, br.Addr("tcp"), true
	cfg.Rate, cfg.Duration = 1e6, time.Duration(b.N)*time.Second/20_000+time.Second
	cfg.AnswerCommands = false
	cfg.Inflight = inflight
	cfg.ReportInterval = 0
	b.ResetTimer()
	r, err := sim.Run(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.MessageRate, "msgs/s")
}

// TestIngestDevices is BenchmarkIngest's child process (it skips unless
// started as one): it connects the devices of the credentials file to the
// broker, says "ready", and publishes until its standard input ends.
func TestIngestDevices(t *testing.T) {
	if os.Getenv(ingestChildEnv) == "" {
		t.Skip("the devices of BenchmarkIngest, run by it in a process of their own")
	}
	rate, err := strconv.ParseFloat(os.Getenv("STRATA_BENCH_INGEST_RATE"), 64)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := sim.LoadCredentialsFile(os.Getenv("STRATA_BENCH_INGEST_CREDS"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.DefaultConfig()
	cfg.Devices, cfg.CredentialsFile, cfg.MQTTAddr, cfg.Plain = len(creds), os.Getenv("STRATA_BENCH_INGEST_CREDS"), os.Getenv("STRATA_BENCH_INGEST_ADDR"), true
	cfg.Rate = rate
	if rate == 0 {
		cfg.Rate = 1e6
	}
	cfg.QoS, cfg.Inflight = 1, 8
	cfg.AnswerCommands = false
	cfg.ReportInterval = 0
	cfg.ConnectConcurrency = 64
	f, err := sim.NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ready():
	case <-f.Done():
		_, err := f.Wait()
		t.Fatalf("fleet ended before connecting: %v", err)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	f.Stop()
	f.Wait()
}

func storedCount(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// processCPU is this process's user and system CPU so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
