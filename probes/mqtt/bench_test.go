package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/probes/sim"
)

// BenchmarkTelemetryPersisted drives the broker over plain TCP with
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
	br, err := New(Config{TCPAddr: "127.0.0.1:0", Devices: devs, Tree: m, Logger: slog.New(slog.DiscardHandler)})
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
