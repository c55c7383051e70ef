package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/internal/tstest"
)

// deviceAuthHook admits only the test device's credentials with client id
// = device id, and confines it to strata/<id>/ (test only; the node's real
// hook lives in probes/mqtt).
type deviceAuthHook struct {
	mqtt.HookBase
	id, password string
}

func (h *deviceAuthHook) ID() string { return "test-device-auth" }

func (h *deviceAuthHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *deviceAuthHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return cl.ID == h.id && string(pk.Connect.Username) == h.id && string(pk.Connect.Password) == h.password
}

func (h *deviceAuthHook) OnACLCheck(cl *mqtt.Client, topic string, _ bool) bool {
	return cl.Net.Inline || strings.HasPrefix(topic, "strata/"+cl.ID+"/")
}

// tlsListener is a mochi listener over TLS on 127.0.0.1:0 that, unlike
// listeners.TCP, waits for its connection goroutines when closed: mochi's
// Close otherwise races a connection being established (WaitGroup Add
// concurrent with Wait), which the race detector reports.
type tlsListener struct {
	conf *tls.Config
	ln   net.Listener

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
	served chan struct{}
}

func (l *tlsListener) ID() string       { return "tls" }
func (l *tlsListener) Protocol() string { return "tcp" }
func (l *tlsListener) Address() string  { return l.ln.Addr().String() }

func (l *tlsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.ln, l.conns, l.served = tls.NewListener(ln, l.conf), map[net.Conn]bool{}, make(chan struct{})
	return nil
}

func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	defer close(l.served)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.conns[c] = true
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			establish(l.ID(), c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.ln.Close()
	<-l.served
	closeClients(l.ID())
	l.wg.Wait()
}

// testBroker is an in-process MQTT broker over TLS on 127.0.0.1:0 that
// records what devices publish under strata/.
type testBroker struct {
	srv  *mqtt.Server
	addr string

	mu   sync.Mutex
	msgs []brokerMsg
}

type brokerMsg struct {
	topic   string
	payload []byte
}

func startBroker(t *testing.T, tlsConf *tls.Config) *testBroker {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(&deviceAuthHook{id: "d-test", password: "sd_secret"}, nil); err != nil {
		t.Fatal(err)
	}
	l := &tlsListener{conf: tlsConf}
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	b := &testBroker{srv: srv, addr: l.Address()}
	err := srv.Subscribe("strata/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if strings.Contains(pk.TopicName, "/cmd/") && !strings.HasSuffix(pk.TopicName, "/result") {
			return // our own commands
		}
		b.mu.Lock()
		b.msgs = append(b.msgs, brokerMsg{pk.TopicName, append([]byte(nil), pk.Payload...)})
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return b
}

// received returns the messages recorded on topic.
func (b *testBroker) received(topic string) []brokerMsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []brokerMsg
	for _, m := range b.msgs {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// subscribed reports whether a client subscribes to topic.
func (b *testBroker) subscribed(topic string) bool {
	return len(b.srv.Topics.Subscribers(topic).Subscriptions) > 0
}

// command publishes a command to d-test at QoS 1.
func (b *testBroker) command(t *testing.T, job, function, args string) {
	t.Helper()
	payload := fmt.Sprintf(`{"job":%q,"function":%q,"args":%s,"deadline":%q}`,
		job, function, args, time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
	if err := b.srv.Publish("strata/d-test/cmd/"+job, []byte(payload), false, 1); err != nil {
		t.Fatal(err)
	}
}

// awaitResult waits for job's result and decodes it.
func (b *testBroker) awaitResult(t *testing.T, job string) wireResult {
	t.Helper()
	topic := "strata/d-test/cmd/" + job + "/result"
	tstest.WaitFor(t, 10*time.Second, "result of "+job, func() bool { return len(b.received(topic)) > 0 })
	var r wireResult
	if err := strictUnmarshal(b.received(topic)[0].payload, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// mqttHarness is a broker behind a cuttable proxy and an agent enrolled
// with it.
type mqttHarness struct {
	broker *testBroker
	proxy  *proxy
	agent  *Agent
}

func newMQTTHarness(t *testing.T, telemetry time.Duration) *mqttHarness {
	t.Helper()
	ca := newTestCA(t)
	b := startBroker(t, ca.serverTLS())
	p := newProxy(t, b.addr)
	a := startAgent(t, Config{
		StateDir: newStateDir(t, p.addr(), ca.pem), Logger: tstest.Logger(t), Version: "test",
		TelemetryInterval: telemetry, InventoryInterval: time.Hour,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		LogPaths: []string{}, Journal: false,
		Reboot: func(context.Context) error { t.Error("reboot requested"); return nil },
	})
	return &mqttHarness{broker: b, proxy: p, agent: a}
}

func TestAgentOverMQTT(t *testing.T) {
	h := newMQTTHarness(t, 100*time.Millisecond)
	b, a := h.broker, h.agent
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect")
	}

	// Inventory at connect, telemetry every interval.
	tstest.WaitFor(t, 10*time.Second, "inventory", func() bool { return len(b.received("strata/d-test/inventory")) > 0 })
	var inv Inventory
	if err := json.Unmarshal(b.received("strata/d-test/inventory")[0].payload, &inv); err != nil {
		t.Fatal(err)
	}
	if inv.Hostname == "" || inv.OS == "" || inv.AgentVersion != "test" || len(inv.Functions) != 6 || inv.Software == nil {
		t.Fatalf("inventory %+v", inv)
	}
	tstest.WaitFor(t, 10*time.Second, "telemetry", func() bool { return len(b.received("strata/d-test/telemetry")) >= 2 })
	// One point is one object; points that queued up while the sender was
	// busy (a loaded machine) go as one array of them.
	var point map[string]any
	payload := b.received("strata/d-test/telemetry")[0].payload
	if err := json.Unmarshal(payload, &point); err != nil {
		var points []map[string]any
		if err := json.Unmarshal(payload, &points); err != nil || len(points) == 0 {
			t.Fatalf("telemetry is neither one object nor an array of them: %s", payload)
		}
		point = points[0]
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(point["ts"])); err != nil || point["load1"] == nil {
		t.Fatalf("telemetry point %v", point)
	}
	tstest.WaitFor(t, 10*time.Second, "agent-started event", func() bool { return len(b.received("strata/d-test/events")) > 0 })

	// A command round trip through the broker.
	tstest.WaitFor(t, 10*time.Second, "command subscription", func() bool { return b.subscribed("strata/d-test/cmd/x") })
	b.command(t, "j1", "ping", `{}`)
	if r := b.awaitResult(t, "j1"); r.Status != StatusSucceeded || !strings.Contains(string(r.Result), `"pong":true`) {
		t.Fatalf("ping result %+v", r)
	}

	// A duplicate delivery runs once. The duplicate is judged on paho's
	// callback goroutine before j3 is even read, so once j3 is answered the
	// duplicate has been dropped.
	b.command(t, "j2", "set-config", `{"key":"telemetry_interval","value":"2s"}`)
	b.command(t, "j2", "set-config", `{"key":"telemetry_interval","value":"2s"}`)
	b.command(t, "j3", "wipe", `{}`)
	if r := b.awaitResult(t, "j3"); r.Status != StatusFailed || !strings.HasPrefix(r.Error, "unknown function") {
		t.Fatalf("unknown function result %+v", r)
	}
	if r := b.awaitResult(t, "j2"); r.Status != StatusSucceeded {
		t.Fatalf("set-config result %+v", r)
	}
	if n := a.duplicates.Load(); n != 1 {
		t.Fatalf("%d duplicate deliveries ignored, want 1", n)
	}
	if n := len(b.received("strata/d-test/cmd/j2/result")); n != 1 {
		t.Fatalf("job j2 answered %d times", n)
	}
	if got := a.settings.get().TelemetryInterval; got != 2*time.Second {
		t.Fatalf("set-config over MQTT: telemetry interval %v", got)
	}
	// Delivered again later (as the node does at every subscribe): still once.
	b.command(t, "j1", "ping", `{}`)
	tstest.WaitFor(t, 10*time.Second, "second duplicate", func() bool { return a.duplicates.Load() == 2 })
	if n := len(b.received("strata/d-test/cmd/j1/result")); n != 1 {
		t.Fatalf("job j1 answered %d times", n)
	}
}

// TestAgentBuffersWhileBrokerDown cuts the path to the broker, lets
// telemetry pile up on disk, restores it, and expects the points as one
// JSON array, in order, after reconnection.
func TestAgentBuffersWhileBrokerDown(t *testing.T) {
	h := newMQTTHarness(t, 20*time.Millisecond)
	b, a := h.broker, h.agent
	tstest.WaitFor(t, 10*time.Second, "first telemetry", func() bool { return len(b.received("strata/d-test/telemetry")) > 0 })

	h.proxy.setDown(true)
	tstest.WaitFor(t, 10*time.Second, "disconnection", func() bool { return !a.connected() })
	before := len(b.received("strata/d-test/telemetry"))
	tstest.WaitFor(t, 10*time.Second, "points queued offline", func() bool { return a.queue.len() >= 5 })
	if a.connected() {
		t.Fatal("reconnected through a cut proxy")
	}
	h.proxy.setDown(false)

	var batch []map[string]any
	tstest.WaitFor(t, 10*time.Second, "buffered telemetry", func() bool {
		for _, m := range b.received("strata/d-test/telemetry")[before:] {
			if json.Unmarshal(m.payload, &batch) == nil && len(batch) >= 5 {
				return true
			}
		}
		return false
	})
	var last time.Time
	for i, p := range batch {
		ts, err := time.Parse(time.RFC3339, fmt.Sprint(p["ts"]))
		if err != nil || ts.Before(last) {
			t.Fatalf("point %d has ts %v (previous %v)", i, p["ts"], last)
		}
		last = ts
	}
	tstest.WaitFor(t, 10*time.Second, "queue drained", func() bool { return a.queue.len() == 0 })
}
