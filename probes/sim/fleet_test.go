package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
)

// checkTelemetry asserts that the broker saw exactly what the fleet
// counted as delivered.
func checkTelemetry(t *testing.T, b *broker, r Report, n int) {
	t.Helper()
	if r.Connected != int64(n) || r.Connects != int64(n) || len(r.ConnectFailures) != 0 {
		t.Fatalf("connected %d, connects %d, failures %v; want %d", r.Connected, r.Connects, r.ConnectFailures, n)
	}
	if r.Acked == 0 || r.Acked != r.Sent || r.Lost != 0 {
		t.Fatalf("sent %d acked %d lost %d", r.Sent, r.Acked, r.Lost)
	}
	tstest.WaitFor(t, 5*time.Second, "broker count", func() bool { return b.hook.telemetry.Load() >= r.Acked })
	if got := b.hook.telemetry.Load(); got != r.Acked {
		t.Fatalf("broker saw %d telemetry messages, fleet acked %d", got, r.Acked)
	}
	if r.PubackLatency.Count != r.Acked || r.PubackLatency.P50 <= 0 || r.PubackLatency.P99 < r.PubackLatency.P50 {
		t.Fatalf("puback latency %+v", r.PubackLatency)
	}
	if r.ConnectLatency.Count != int64(n) || r.ConnectRate <= 0 || r.MessageRate <= 0 {
		t.Fatalf("connect latency %+v rate %.0f, message rate %.0f", r.ConnectLatency, r.ConnectRate, r.MessageRate)
	}
}

func TestFleetTelemetryPlain(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := anonymousConfig(b, 200)
	cfg.Rate = 2000
	cfg.Duration = time.Second
	r := runFleet(t, cfg)
	checkTelemetry(t, b, r, 200)
	// 2000/s: never more is due than the rate over the time the telemetry
	// ran (1 s asked; a loaded machine stops it later, so the bound is the
	// measured time, not the asked one). Under the race detector the broker
	// may not keep up: what is not sent is owed (window full) or skipped,
	// never lost.
	if bound := int64(cfg.Rate*r.TelemetryTime.Seconds()) + 1; r.Due == 0 || r.Due > bound || r.Sent+r.Skipped > r.Due {
		t.Fatalf("due %d (at most %d in %v) sent %d skipped %d", r.Due, bound, r.TelemetryTime, r.Sent, r.Skipped)
	}
	t.Logf("plain: %d acked, %.0f msg/s, puback p50 %v p99 %v, connect p50 %v",
		r.Acked, r.MessageRate, r.PubackLatency.P50, r.PubackLatency.P99, r.ConnectLatency.P50)
}

// TestFleetTelemetryTLS uses credentials (the enrollment response shape)
// whose ca_pem is the only trust anchor, against a broker that checks them.
func TestFleetTelemetryTLS(t *testing.T) {
	ca := newCA(t)
	const n = 200
	creds := make([]Credentials, n)
	secrets := map[string]string{}
	for i := range creds {
		id := fmt.Sprintf("d-%03d", i)
		creds[i] = Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "sd_" + id, CAPEM: string(ca.pem)}}
		secrets[id] = "sd_" + id
	}
	b := startBroker(t, brokerOpts{tls: ca.serverTLS(t), creds: secrets})
	for i := range creds {
		creds[i].MQTTAddress = b.addr
	}
	cfg := DefaultConfig()
	cfg.Devices, cfg.Credentials = n, creds
	cfg.Rate, cfg.Duration, cfg.Inflight = 1000, time.Second, 4
	cfg.PayloadBytes = 300
	r := runFleet(t, cfg)
	checkTelemetry(t, b, r, n)
	if b.hook.subscribed.Load() != n || r.SubscribeFailures != 0 {
		t.Fatalf("subscriptions: broker %d, failures %d", b.hook.subscribed.Load(), r.SubscribeFailures)
	}
}

func TestFleetTelemetryQoS0(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := anonymousConfig(b, 50)
	cfg.QoS, cfg.Rate, cfg.Duration = 0, 500, 500*time.Millisecond
	r := runFleet(t, cfg)
	if r.Sent == 0 || r.Acked != 0 || r.PubackLatency.Count != 0 {
		t.Fatalf("sent %d acked %d", r.Sent, r.Acked)
	}
	// QoS 0 has no acknowledgement: the broker sees every message sent
	// before the DISCONNECT.
	tstest.WaitFor(t, 5*time.Second, "broker count", func() bool { return b.hook.telemetry.Load() == r.Sent })
}

// Idle fleets hold sessions and send nothing, whatever the rate.
func TestFleetIdleSendsNothing(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := anonymousConfig(b, 100)
	cfg.Idle, cfg.Rate, cfg.Duration = true, 1000, 300*time.Millisecond
	r := runFleet(t, cfg)
	if r.Connected != 100 || r.Sent != 0 || b.hook.telemetry.Load() != 0 {
		t.Fatalf("idle: connected %d sent %d broker %d", r.Connected, r.Sent, b.hook.telemetry.Load())
	}
}

func TestFleetCommands(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	const n = 200
	cfg := anonymousConfig(b, n)
	var mu sync.Mutex
	seen := map[string]Command{}
	cfg.OnCommand = func(c Command) {
		mu.Lock()
		seen[c.Job] = c
		mu.Unlock()
	}
	results := map[string]string{}
	var rmu sync.Mutex
	err := b.srv.Subscribe("strata/+/cmd/+/result", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		rmu.Lock()
		results[pk.TopicName] = string(pk.Payload)
		rmu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	<-f.Ready()
	tstest.WaitFor(t, 10*time.Second, "subscriptions", func() bool { return b.hook.subscribed.Load() == n })

	sent := time.Now()
	for i := range n {
		job := fmt.Sprintf("j%03d", i)
		payload := fmt.Sprintf(`{"job":%q,"function":"ping","args":{"n":%d},"deadline":%q}`,
			job, i, time.Now().Add(time.Minute).Format(time.RFC3339))
		if err := b.srv.Publish(fmt.Sprintf("strata/t%d/cmd/%s", i, job), []byte(payload), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	// An expired command is not run.
	if err := b.srv.Publish("strata/t0/cmd/old", []byte(`{"job":"old","function":"ping","deadline":"2001-01-01T00:00:00Z"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, 10*time.Second, "results", func() bool {
		rmu.Lock()
		defer rmu.Unlock()
		return len(results) == n
	})
	tstest.WaitFor(t, 10*time.Second, "answered", func() bool { return f.Stats().CommandsAnswered == n })
	for i := range n {
		job := fmt.Sprintf("j%03d", i)
		rmu.Lock()
		got := results[fmt.Sprintf("strata/t%d/cmd/%s/result", i, job)]
		rmu.Unlock()
		if want := fmt.Sprintf(`{"status":"succeeded","result":{"echo":{"n":%d}}}`, i); got != want {
			t.Fatalf("result of %s = %s, want %s", job, got, want)
		}
		at, ok := f.ReceivedAt(job)
		done, ok2 := f.AnsweredAt(job)
		if !ok || !ok2 || at.Before(sent) || done.Before(at) {
			t.Fatalf("%s: received %v %v, answered %v %v", job, at, ok, done, ok2)
		}
	}
	mu.Lock()
	if c := seen["j007"]; c.DeviceID != "t7" || c.Function != "ping" || string(c.Args) != `{"n":7}` {
		t.Fatalf("OnCommand got %+v", c)
	}
	mu.Unlock()
	f.Stop()
	r, err := f.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if r.CommandsReceived != n+1 || r.CommandsExpired != 1 || r.CommandsAnswered != n || r.CommandLatency.Count != n {
		t.Fatalf("commands: %+v", r)
	}
	if _, ok := f.AnsweredAt("old"); ok {
		t.Fatal("expired command answered")
	}
	out, _ := json.Marshal(r)
	if !strings.Contains(string(out), `"commands_answered":200`) {
		t.Fatalf("json report: %s", out)
	}
}

func TestFleetSourceAddrs(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := anonymousConfig(b, 40)
	cfg.SourceAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	cfg.Duration = 100 * time.Millisecond
	r := runFleet(t, cfg)
	if r.Connected != 40 {
		t.Fatalf("connected %d: %v", r.Connected, r.ConnectFailures)
	}
	if got := b.hook.sources(); got["127.0.0.1"] != 20 || got["127.0.0.2"] != 20 {
		t.Fatalf("sources %v, want 20 each", got)
	}
}

func TestFleetAuthRefused(t *testing.T) {
	b := startBroker(t, brokerOpts{refuse: true})
	cfg := anonymousConfig(b, 20)
	cfg.Rate, cfg.Duration = 100, 200*time.Millisecond
	r := runFleet(t, cfg)
	if r.Connected != 0 || r.ConnectAttempts != 20 {
		t.Fatalf("connected %d attempts %d", r.Connected, r.ConnectAttempts)
	}
	if got := r.ConnectFailures["connack: not authorized"]; got != 20 {
		t.Fatalf("failures %v", r.ConnectFailures)
	}
	if r.Sent != 0 || r.Skipped == 0 {
		t.Fatalf("sent %d skipped %d", r.Sent, r.Skipped)
	}
}

// Sessions the broker drops are re-opened.
func TestFleetReconnects(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	const n = 20
	cfg := anonymousConfig(b, n)
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	<-f.Ready()
	tstest.WaitFor(t, 5*time.Second, "sessions", func() bool { return b.hook.connects.Load() == n })
	for _, cl := range b.srv.Clients.GetAll() {
		if !cl.Net.Inline {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
	tstest.WaitFor(t, 20*time.Second, "reconnects", func() bool {
		s := f.Stats()
		return s.Reconnects == n && s.Connected == n
	})
	f.Stop()
	r, err := f.Wait()
	if err != nil {
		t.Fatal(err)
	}
	// The broker closes the socket, sometimes with unread data: EOF or RST.
	if r.Disconnects != n || r.DisconnectReasons["closed by broker"]+r.DisconnectReasons["connection reset"] != n {
		t.Fatalf("disconnects %d %v", r.Disconnects, r.DisconnectReasons)
	}
}

func TestFleetConnectFailureReasons(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	b.close() // a dead address: connection refused
	cfg := anonymousConfig(b, 5)
	cfg.Reconnect, cfg.Duration = false, time.Millisecond
	r := runFleet(t, cfg)
	if r.ConnectFailures["dial: connection refused"] != 5 {
		t.Fatalf("failures %v", r.ConnectFailures)
	}

	// A listener that accepts and never answers: CONNACK times out.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c)
			hmu.Unlock()
		}
	}()
	defer func() {
		hmu.Lock()
		for _, c := range held {
			c.Close()
		}
		hmu.Unlock()
	}()
	cfg.MQTTAddr, cfg.ConnectTimeout = l.Addr().String(), 200*time.Millisecond
	r = runFleet(t, cfg)
	if r.ConnectFailures["connack: timeout"] != 5 {
		t.Fatalf("failures %v", r.ConnectFailures)
	}
}

// Config.Payload and Config.Inventory replace the filler telemetry and the
// default inventory, per device.
func TestFleetCustomPayloadAndInventory(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	const n = 5
	cfg := anonymousConfig(b, n)
	cfg.Rate, cfg.Duration = 100, 300*time.Millisecond
	cfg.Payload = func(buf []byte, device int, seq uint64, _ time.Time) []byte {
		return fmt.Appendf(buf, `{"temperature":%d,"seq":%d}`, 20+device, seq)
	}
	cfg.Inventory = func(device int) []byte {
		return fmt.Appendf(nil, `{"model":"m-%d","functions":[{"name":"reboot"}]}`, device)
	}
	var mu sync.Mutex
	telemetry, inventory := map[string]string{}, map[string]string{}
	for topic, into := range map[string]map[string]string{"strata/+/telemetry": telemetry, "strata/+/inventory": inventory} {
		err := b.srv.Subscribe(topic, 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			mu.Lock()
			into[strings.Split(pk.TopicName, "/")[1]] = string(pk.Payload)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	r := runFleet(t, cfg)
	if r.Acked == 0 {
		t.Fatalf("no telemetry acknowledged: %+v", r)
	}
	tstest.WaitFor(t, 5*time.Second, "every device's inventory and telemetry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(inventory) == n && len(telemetry) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		id := cfg.IDPrefix + fmt.Sprint(i)
		var tel struct{ Temperature int }
		if err := json.Unmarshal([]byte(telemetry[id]), &tel); err != nil || tel.Temperature != 20+i {
			t.Errorf("device %s telemetry %q (%v), want temperature %d", id, telemetry[id], err, 20+i)
		}
		if want := fmt.Sprintf(`{"model":"m-%d","functions":[{"name":"reboot"}]}`, i); inventory[id] != want {
			t.Errorf("device %s inventory %q, want %q", id, inventory[id], want)
		}
	}
}

// Stop right after Start, before the fleet got to connect, is a clean
// stop like any other: Wait reports no error.
func TestFleetStopAtOnce(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := DefaultConfig()
	cfg.Devices = 3
	cfg.MQTTAddr, cfg.Plain = b.addr, true
	for i := range cfg.Devices {
		id := fmt.Sprintf("s-%d", i)
		cfg.Credentials = append(cfg.Credentials, Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "p"}})
	}
	for range 20 {
		f, err := NewFleet(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.Stop()
		if _, err := f.Wait(); err != nil {
			t.Fatalf("Wait after an immediate Stop: %v", err)
		}
	}
}

// A persistent session the broker still holds is present on reconnect;
// every connection with none present is counted.
func TestFleetSessionsAbsent(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	cfg := anonymousConfig(b, 20)
	cfg.Idle, cfg.Duration = true, 10*time.Millisecond
	if r := runFleet(t, cfg); r.SessionsAbsent != 20 {
		t.Fatalf("first connections: %d sessions absent, want 20 (all new)", r.SessionsAbsent)
	}
	if r := runFleet(t, cfg); r.SessionsAbsent != 0 {
		t.Fatalf("reconnections: %d sessions absent, want 0", r.SessionsAbsent)
	}
	cfg.CleanSession = true
	if r := runFleet(t, cfg); r.SessionsAbsent != 0 {
		t.Fatalf("clean sessions: %d counted absent, want 0 (none asked for)", r.SessionsAbsent)
	}
}
