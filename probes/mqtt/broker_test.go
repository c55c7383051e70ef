package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/store"
)

// fakeDevices authenticates devices from a map id → secret; all are in
// tenant "t1" except ids starting with "b-" (tenant "t2").
type fakeDevices struct {
	mu      sync.Mutex
	secrets map[string]string
}

func (f *fakeDevices) Authenticate(id, secret, _ string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.secrets[id]; !ok || s != secret {
		return "", errors.New("bad credentials")
	}
	if len(id) > 2 && id[:2] == "b-" {
		return "t2", nil
	}
	return "t1", nil
}

func (f *fakeDevices) AuthenticateCert(id, serial, _ string) (string, error) {
	return "", errors.New("no certificates here")
}

// fakeCommands holds jobs in memory.
type fakeCommands struct {
	mu        sync.Mutex
	pending   map[string][]Command
	delivered map[string]bool
	results   map[string]Result
}

func (f *fakeCommands) Pending(device string) []Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Command(nil), f.pending[device]...)
}

func (f *fakeCommands) Delivered(_ context.Context, device, job string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered[job] = true
	return nil
}

func (f *fakeCommands) Report(_ context.Context, device, job string, r Result) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.pending[device] {
		if c.Job == job {
			f.results[job] = r
			return nil
		}
	}
	return fmt.Errorf("%w: job", model.ErrNotFound)
}

type harness struct {
	t      *testing.T
	model  *model.Model
	broker *Broker
	devs   *fakeDevices
	cmds   *fakeCommands
	caPEM  []byte
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	m := testTree(t)
	ca, cert := testServerCert(t)
	h := &harness{
		t: t, model: m, caPEM: ca.CertPEM,
		devs: &fakeDevices{secrets: map[string]string{"d1": "s1", "d2": "s2", "b-1": "sb"}},
		cmds: &fakeCommands{pending: map[string][]Command{}, delivered: map[string]bool{}, results: map[string]Result{}},
	}
	h.broker = startBroker(t, Config{
		TLSAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0",
		TLS:     &tls.Config{Certificates: []tls.Certificate{cert}},
		Devices: h.devs, Tree: m, Commands: h.cmds,
		MaxPayloadBytes: 4096,
	})
	return h
}

// testTree is a model on an in-memory store, closed at the end of the
// test (after what later cleanups, such as a broker's shutdown, do).
func testTree(t *testing.T) *model.Model {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		st.Close()
	})
	return m
}

// testServerCert is a CA and a certificate it issued for 127.0.0.1.
func testServerCert(t *testing.T) (*certs.Pair, tls.Certificate) {
	t.Helper()
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.IssueServer("mqtt", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return ca, cert
}

// startBroker starts a broker (logging warnings to the test log unless
// cfg has a logger) and shuts it down at the end of the test.
func startBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown(context.Background()) })
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// connect connects a Paho client (a client nobody here wrote).
func (h *harness) connect(id, secret string, opts ...func(*paho.ClientOptions)) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + h.broker.Addr("tcp")).
		SetClientID(id).SetUsername(id).SetPassword(secret).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second)
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	h.t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (h *harness) mustConnect(id, secret string) paho.Client {
	h.t.Helper()
	c, err := h.connect(id, secret)
	if err != nil {
		h.t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (h *harness) variable(id, name string) (string, bool) {
	c, err := h.model.Get(DevicePath(id))
	if err != nil {
		return "", false
	}
	v, ok := c.Variables[name]
	return string(v.Value), ok
}

func TestTelemetryIsDurableWhenAcknowledged(t *testing.T) {
	h := newHarness(t)
	c := h.mustConnect("d1", "s1")
	publish(t, c, "strata/d1/telemetry", 1, `{"temp": 21.5, "ts": "2026-11-23T10:00:00Z"}`)
	// No polling: the PUBACK came after the write.
	if v, ok := h.variable("d1", "temp"); !ok || v != "21.5" {
		t.Fatalf("temp = %q, %v after PUBACK", v, ok)
	}
	ctx, _ := h.model.Get(DevicePath("d1"))
	if ctx.Tenant != "t1" || ctx.Variables["temp"].Time != time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) {
		t.Fatalf("context %+v", ctx)
	}
	publish(t, c, "strata/d1/telemetry", 1, `[{"seq": 1, "ts": 1764000000000}, {"seq": 2}]`)
	if v, _ := h.variable("d1", "seq"); v != "2" {
		t.Fatalf("seq = %s, want the last point", v)
	}
	if on, _ := h.variable("d1", "online"); on != "true" {
		t.Fatalf("online = %s", on)
	}
	publish(t, c, "strata/d1/inventory", 1, `{"hostname": "pump", "os": "linux", "arch": "arm64", "functions": [{"name": "ping"}]}`)
	got, _ := h.model.Get(DevicePath("d1"))
	if got.Labels["os"] != "linux" || len(got.Functions) != 1 || got.Functions[0].Name != "ping" || got.Type != "device" {
		t.Fatalf("after inventory: %+v", got)
	}
	publish(t, c, "strata/d1/events", 1, `{"name": "door-open", "level": "alert", "payload": {"door": 2}}`)
	evs, err := h.model.Events(DevicePath("d1"), model.EventQuery{})
	if err != nil || len(evs) == 0 || evs[0].Name != "door-open" {
		t.Fatalf("events %+v, %v", evs, err)
	}
	c.Disconnect(100)
	tstest.WaitFor(t, tstest.DefaultTimeout, "offline", func() bool { v, _ := h.variable("d1", "online"); return v == "false" })
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	if _, err := h.connect("d1", "wrong"); err == nil {
		t.Fatal("wrong secret connected")
	}
	if _, err := h.connect("d1", "s2"); err == nil {
		t.Fatal("another device's secret connected")
	}
	if _, err := h.connect("d9", ""); err == nil {
		t.Fatal("unknown device connected")
	}
	_, err := h.connect("d1", "s1", func(o *paho.ClientOptions) { o.SetUsername("d2").SetPassword("s2") })
	if err == nil {
		t.Fatal("client id d1 authenticated as d2")
	}
	_, err = h.connect("d1", "s1", func(o *paho.ClientOptions) { o.SetWill("strata/d2/cmd/x", "boom", 1, false) })
	if err == nil {
		t.Fatal("a will on another device's topic was accepted")
	}

	c := h.mustConnect("d1", "s1")
	// Another device's topic: not stored. MQTT 3.1.1 cannot refuse a QoS
	// 1 publish, so the broker closes the connection.
	c.Publish("strata/d2/telemetry", 1, false, `{"x": 1}`).WaitTimeout(time.Second)
	tstest.WaitFor(t, tstest.DefaultTimeout, "disconnect after a foreign publish", func() bool { return !c.IsConnectionOpen() })
	c = h.mustConnect("d1", "s1")
	c.Publish("strata/d2/telemetry", 0, false, `{"x": 1}`).WaitTimeout(time.Second) // QoS 0: dropped
	tok := c.Subscribe("strata/#", 1, nil)
	ok := tok.WaitTimeout(5 * time.Second)
	if st := tok.(*paho.SubscribeToken); !ok || st.Result()["strata/#"] != 0x80 {
		t.Fatalf("subscription to strata/# = %v %v %v", ok, st.Result(), tok.Error())
	}
	// Malformed, oversized, bad names: rejected, connection kept.
	for _, p := range []string{`{"temp": `, `"text"`, `{"bad name": 1}`, `{"x": "` + string(make([]byte, 5000)) + `"}`} {
		publish(t, c, "strata/d1/telemetry", 1, p)
	}
	publish(t, c, "strata/d1/nonsense", 1, `{}`)
	publish(t, c, "strata/d1/cmd/j1/result", 1, `{"status": "succeeded"}`) // unknown job
	publish(t, c, "strata/d1/telemetry", 1, `{"ok": true}`)
	if v, _ := h.variable("d1", "ok"); v != "true" {
		t.Fatal("the connection did not survive bad payloads")
	}
	if _, err := h.model.Get(DevicePath("d2")); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("d1 wrote into d2: %v", err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "a rejected event", func() bool {
		evs, _ := h.model.Events(DevicePath("d1"), model.EventQuery{})
		for _, e := range evs {
			if e.Name == "rejected" {
				return true
			}
		}
		return false
	})
	if !c.IsConnectionOpen() {
		t.Fatal("connection closed")
	}
}

func TestTenantGuard(t *testing.T) {
	h := newHarness(t)
	// d1 exists in tenant t1; device b-1 of tenant t2 cannot take it over
	// (it could only publish under its own prefix anyway): its own context
	// is created in t2.
	c := h.mustConnect("b-1", "sb")
	publish(t, c, "strata/b-1/telemetry", 1, `{"x": 1}`)
	got, err := h.model.Get(DevicePath("b-1"))
	if err != nil || got.Tenant != "t2" {
		t.Fatalf("b-1: %+v %v", got, err)
	}
	if _, err := h.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/b-1", Tenant: "t1"}); err != nil {
		t.Fatal(err)
	}
	// Now the context belongs to t1: the t2 device's writes are refused.
	c.Publish("strata/b-1/telemetry", 1, false, `{"x": 2}`).WaitTimeout(5 * time.Second)
	if v, _ := h.variable("b-1", "x"); v != "1" {
		t.Fatalf("x = %s: a device wrote into another tenant's context", v)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	h := newHarness(t)
	deadline := time.Now().Add(time.Hour).UTC().Round(time.Second)
	h.cmds.mu.Lock()
	h.cmds.pending["d1"] = []Command{{Job: "j1", Function: "ping", Args: json.RawMessage(`{}`), Deadline: deadline, Tenant: "t1"}}
	h.cmds.mu.Unlock()
	got := make(chan Command, 4)
	c := h.mustConnect("d1", "s1")
	tok := c.Subscribe("strata/d1/cmd/+", 1, func(_ paho.Client, m paho.Message) {
		var cmd Command
		json.Unmarshal(m.Payload(), &cmd)
		got <- cmd
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	var cmd Command
	select {
	case cmd = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("queued command not delivered on subscribe")
	}
	if cmd.Job != "j1" || cmd.Function != "ping" || !cmd.Deadline.Equal(deadline) {
		t.Fatalf("command %+v", cmd)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "delivered mark", func() bool { h.cmds.mu.Lock(); defer h.cmds.mu.Unlock(); return h.cmds.delivered["j1"] })
	publish(t, c, "strata/d1/cmd/j1/result", 1, `{"status": "succeeded", "result": {"pong": true}}`)
	h.cmds.mu.Lock()
	r := h.cmds.results["j1"]
	h.cmds.mu.Unlock()
	if r.Status != "succeeded" || string(r.Result) != `{"pong":true}` {
		t.Fatalf("result %+v", r)
	}
	// A command of another tenant than the device's is never sent.
	refused := counterValue(t, h.broker.metrics.commandsRefused)
	h.broker.Deliver("d1", Command{Job: "jx", Function: "ping", Args: json.RawMessage(`{}`), Deadline: deadline, Tenant: "t2"})
	if counterValue(t, h.broker.metrics.commandsRefused) != refused+1 {
		t.Fatal("a command of another tenant was not refused")
	}
	// A live delivery while subscribed.
	h.broker.Deliver("d1", Command{Job: "j2", Function: "ping", Args: json.RawMessage(`{}`), Deadline: deadline, Tenant: "t1"})
	select {
	case cmd = <-got:
		if cmd.Job != "j2" {
			t.Fatalf("got %+v", cmd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live command not delivered")
	}
	// Revocation disconnects.
	h.broker.Disconnect("d1")
	tstest.WaitFor(t, tstest.DefaultTimeout, "disconnect", func() bool { return !c.IsConnectionOpen() })
}

func TestTLSListener(t *testing.T) {
	h := newHarness(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.caPEM)
	c, err := h.connect("d1", "s1", func(o *paho.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + h.broker.Addr("tls")).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, c, "strata/d1/telemetry", 1, `{"tls": true}`)
	if v, _ := h.variable("d1", "tls"); v != "true" {
		t.Fatal("telemetry over TLS not stored")
	}
	_, err = h.connect("d2", "s2", func(o *paho.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + h.broker.Addr("tls")).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11})
	})
	if err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

// More commands than the write queue holds all arrive, queued and live.
func TestManyCommands(t *testing.T) {
	h := newHarness(t)
	deadline := time.Now().Add(time.Hour)
	h.cmds.mu.Lock()
	for i := range 20 {
		h.cmds.pending["d1"] = append(h.cmds.pending["d1"], Command{Job: fmt.Sprintf("q%02d", i), Function: "f", Args: json.RawMessage(`{}`), Deadline: deadline, Tenant: "t1"})
	}
	h.cmds.mu.Unlock()
	var mu sync.Mutex
	seen := map[string]int{}
	c := h.mustConnect("d1", "s1")
	tok := c.Subscribe("strata/d1/cmd/+", 1, func(_ paho.Client, m paho.Message) {
		var cmd Command
		json.Unmarshal(m.Payload(), &cmd)
		mu.Lock()
		seen[cmd.Job]++
		mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for i := range 20 {
		h.broker.Deliver("d1", Command{Job: fmt.Sprintf("l%02d", i), Function: "f", Args: json.RawMessage(`{}`), Deadline: deadline, Tenant: "t1"})
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "40 commands", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 40 })
	mu.Lock()
	defer mu.Unlock()
	for job, n := range seen {
		if n != 1 {
			t.Errorf("job %s delivered %d times on one connection", job, n)
		}
	}
}
