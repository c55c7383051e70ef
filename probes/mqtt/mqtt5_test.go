package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// MQTT 5 reason codes the tests expect.
const (
	rcSuccess              = 0x00
	rcBadUserNameOrPasswd  = 0x86
	rcNotAuthorized        = 0x87
	rcPayloadFormatInvalid = 0x99
)

// v5Device is a device driven by the Eclipse paho.golang MQTT 5 client
// over TLS. Publications it receives are queued on got.
type v5Device struct {
	c       *paho5.Client
	got     chan *paho5.Publish
	discons chan *paho5.Disconnect
}

// connect5 connects over TLS with MQTT 5 and returns the client, the
// CONNACK (also on refusal) and the connect error.
func (h *harness) connect5(id, secret string) (*v5Device, *paho5.Connack, error) {
	h.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.caPEM)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", h.broker.Addr("tls"))
	if err != nil {
		return nil, nil, err
	}
	dev := &v5Device{got: make(chan *paho5.Publish, 16), discons: make(chan *paho5.Disconnect, 1)}
	dev.c = paho5.NewClient(paho5.ClientConfig{
		Conn:          packets.NewThreadSafeConn(conn),
		PacketTimeout: 10 * time.Second,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			dev.got <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho5.Disconnect) { dev.discons <- d },
		OnClientError:      func(error) {},
	})
	ca, err := dev.c.Connect(ctx, &paho5.Connect{
		ClientID: id, Username: id, Password: []byte(secret), UsernameFlag: true, PasswordFlag: true,
		KeepAlive: 30, CleanStart: true,
	})
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	h.t.Cleanup(func() {
		dev.c.Disconnect(&paho5.Disconnect{})
		<-dev.c.Done()
	})
	return dev, ca, nil
}

// publish sends a QoS 1 message and returns the PUBACK's reason code.
func (d *v5Device) publish(t *testing.T, topic, payload string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := d.c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if pr == nil {
		t.Fatalf("publish %s: no PUBACK: %v", topic, err)
	}
	return pr.ReasonCode
}

// alive reports whether the client's connection is still up.
func (d *v5Device) alive() bool {
	select {
	case <-d.c.Done():
		return false
	default:
		return true
	}
}

func (h *harness) rejectedEvents(id string) int {
	evs, _ := h.model.Events(DevicePath(id), model.EventQuery{})
	n := 0
	for _, e := range evs {
		if e.Name == "rejected" {
			n++
		}
	}
	return n
}

// A device speaking MQTT 5 over TLS with a client nobody here wrote:
// reason codes for success, a bad payload and a foreign topic; a queued
// command delivered on subscribe and answered.
func TestMQTT5Device(t *testing.T) {
	h := newHarness(t)
	deadline := time.Now().Add(time.Hour).UTC().Round(time.Second)
	h.cmds.mu.Lock()
	h.cmds.pending["d1"] = []Command{{Job: "j1", Function: "ping", Args: json.RawMessage(`{"n":1}`), Deadline: deadline, Tenant: "t1"}}
	h.cmds.mu.Unlock()

	d, ca, err := h.connect5("d1", "s1")
	if err != nil {
		t.Fatalf("connect: %v (connack %+v)", err, ca)
	}
	if ca.ReasonCode != rcSuccess {
		t.Fatalf("CONNACK reason %#x", ca.ReasonCode)
	}

	// Success: reason 0 and durable when acknowledged (no polling).
	if rc := d.publish(t, "strata/d1/telemetry", `{"temp": 21.5, "ts": "2026-11-23T10:00:00Z"}`); rc != rcSuccess {
		t.Fatalf("telemetry PUBACK reason %#x", rc)
	}
	if v, ok := h.variable("d1", "temp"); !ok || v != "21.5" {
		t.Fatalf("temp = %q, %v after PUBACK", v, ok)
	}

	// Malformed: 0x99, nothing written, a rejected event, connection kept.
	if rc := d.publish(t, "strata/d1/telemetry", `{"temp": `); rc != rcPayloadFormatInvalid {
		t.Fatalf("malformed telemetry PUBACK reason %#x, want 0x99", rc)
	}
	if v, _ := h.variable("d1", "temp"); v != "21.5" {
		t.Fatalf("temp = %s after a malformed payload", v)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "a rejected event", func() bool { return h.rejectedEvents("d1") > 0 })
	if !d.alive() {
		t.Fatal("connection closed after a malformed payload")
	}

	// Another device's topic: PUBACK 0x87 (docs/mqtt.md), nothing
	// written, connection kept.
	if rc := d.publish(t, "strata/d2/telemetry", `{"x": 1}`); rc != rcNotAuthorized {
		t.Fatalf("foreign publish PUBACK reason %#x, want 0x87", rc)
	}
	if _, err := h.model.Get(DevicePath("d2")); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("d1 wrote into d2: %v", err)
	}
	// Its own command topic is not its to publish on either.
	if rc := d.publish(t, "strata/d1/cmd/j1", `{}`); rc != rcNotAuthorized {
		t.Fatalf("publish on the command topic: PUBACK reason %#x, want 0x87", rc)
	}
	if rc := d.publish(t, "strata/d1/telemetry", `{"after": true}`); rc != rcSuccess || !d.alive() {
		t.Fatalf("after refusals: reason %#x, alive %v", rc, d.alive())
	}
	if v, _ := h.variable("d1", "after"); v != "true" {
		t.Fatal("telemetry after refusals not stored")
	}

	// Subscriptions: another device's commands refused, its own granted,
	// and the queued command arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := d.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
		{Topic: "strata/d2/cmd/+", QoS: 1}, {Topic: "strata/d1/cmd/+", QoS: 1},
	}})
	if sa == nil || len(sa.Reasons) != 2 {
		t.Fatalf("SUBACK %+v %v", sa, err)
	}
	if sa.Reasons[0] != rcNotAuthorized || sa.Reasons[1] != 1 {
		t.Fatalf("SUBACK reasons %#x, want [0x87 0x01]", sa.Reasons)
	}
	var pub *paho5.Publish
	select {
	case pub = <-d.got:
	case <-time.After(10 * time.Second):
		t.Fatal("queued command not delivered on subscribe")
	}
	var cmd Command
	if err := json.Unmarshal(pub.Payload, &cmd); err != nil {
		t.Fatal(err)
	}
	if pub.Topic != "strata/d1/cmd/j1" || pub.QoS != 1 || cmd.Job != "j1" || cmd.Function != "ping" ||
		string(cmd.Args) != `{"n":1}` || !cmd.Deadline.Equal(deadline) {
		t.Fatalf("command %s %+v", pub.Topic, cmd)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "delivered mark", func() bool { h.cmds.mu.Lock(); defer h.cmds.mu.Unlock(); return h.cmds.delivered["j1"] })
	if rc := d.publish(t, "strata/d1/cmd/j1/result", `{"status": "succeeded", "result": {"pong": true}}`); rc != rcSuccess {
		t.Fatalf("result PUBACK reason %#x", rc)
	}
	h.cmds.mu.Lock()
	r := h.cmds.results["j1"]
	h.cmds.mu.Unlock()
	if r.Status != "succeeded" || string(r.Result) != `{"pong":true}` {
		t.Fatalf("job result %+v", r)
	}
	// A result for a job that does not exist is a bad payload.
	if rc := d.publish(t, "strata/d1/cmd/nope/result", `{"status": "succeeded"}`); rc != rcPayloadFormatInvalid {
		t.Fatalf("result for an unknown job: PUBACK reason %#x, want 0x99", rc)
	}
	if !d.alive() {
		t.Fatal("connection closed")
	}
}

// Wrong credentials over MQTT 5 get an MQTT 5 refusal in the CONNACK.
func TestMQTT5Refused(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ id, secret string }{{"d1", "wrong"}, {"d1", "s2"}, {"d9", "s1"}} {
		_, ca, err := h.connect5(c.id, c.secret)
		if err == nil {
			t.Fatalf("%s/%s connected", c.id, c.secret)
		}
		if ca == nil || (ca.ReasonCode != rcBadUserNameOrPasswd && ca.ReasonCode != rcNotAuthorized) {
			t.Fatalf("%s/%s: CONNACK %+v, err %v; want reason 0x86 or 0x87", c.id, c.secret, ca, err)
		}
	}
	if _, ca, err := h.connect5("d1", "s1"); err != nil {
		t.Fatalf("good credentials after refusals: %v %+v", err, ca)
	}
}

// A publish the hook refuses with a reason code (an MQTT 5 result for an
// unknown job) is logged by mochi at error level with the whole packet;
// the broker demotes it, so a device cannot fill the node's error log.
func TestHookRefusalNotLoggedAsError(t *testing.T) {
	var buf strings.Builder
	log := slog.New(&quietHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})})
	log.Error(hookRefusal, "error", "payload format invalid", "packet", "a device's payload")
	log.Warn("client disconnected")
	if buf.Len() != 0 {
		t.Fatalf("logged at warn level: %s", buf.String())
	}
	log.Error("listener failed")
	if !strings.Contains(buf.String(), "listener failed") {
		t.Fatalf("a real error was dropped: %q", buf.String())
	}
}

// gatedTree holds every Apply while its gate is shut.
type gatedTree struct {
	Tree
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *gatedTree) shut() { g.mu.Lock(); g.gate = make(chan struct{}); g.mu.Unlock() }
func (g *gatedTree) open() { g.mu.Lock(); close(g.gate); g.gate = nil; g.mu.Unlock() }

func (g *gatedTree) Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Tree.Apply(ctx, muts...)
}

// MQTT 5 requires PUBACKs in the order of the PUBLISHes [MQTT-4.6.0-2]:
// a publish the topic ACL refuses is answered after the messages before
// it, even while those wait for the store.
func TestMQTT5RefusalAckedInOrder(t *testing.T) {
	m := testTree(t)
	tree := &gatedTree{Tree: m}
	b := startBroker(t, Config{
		TCPAddr: "127.0.0.1:0", Devices: &fakeDevices{secrets: map[string]string{"d1": "s1"}}, Tree: tree,
	})
	conn, err := net.Dial("tcp", b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.Username, c.Password, c.UsernameFlag, c.PasswordFlag, c.CleanStart, c.KeepAlive = "d1", "d1", []byte("s1"), true, true, true, 30
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	ack, err := packets.ReadPacket(conn)
	if err != nil || ack.Type != packets.CONNACK || ack.Content.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("CONNACK %v %v", ack, err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "online", func() bool { // presence written: the store is idle
		c, err := m.Get(DevicePath("d1"))
		return err == nil && string(c.Variables["online"].Value) == "true"
	})
	tree.shut()
	opened := false
	defer func() {
		if !opened {
			tree.open()
		}
	}()
	for i, topic := range []string{"strata/d1/telemetry", "strata/d2/telemetry"} {
		pp := packets.NewControlPacket(packets.PUBLISH)
		p := pp.Content.(*packets.Publish)
		p.Topic, p.QoS, p.PacketID, p.Payload = topic, 1, uint16(i+1), []byte(`{"x": 1}`)
		if _, err := pp.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
	}
	// The first message waits for the store; the second is refused by
	// the ACL without it. Let the store go once the refusal was decided.
	acks := make(chan *packets.ControlPacket, 2)
	go func() {
		defer close(acks)
		for range 2 {
			p, err := packets.ReadPacket(conn)
			if err != nil {
				return
			}
			acks <- p
		}
	}()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the ACL refusal", func() bool { return counterValue(t, b.metrics.aclDenied) == 1 })
	tree.open()
	opened = true
	var got []string
	for p := range acks {
		pa, ok := p.Content.(*packets.Puback)
		if !ok {
			t.Fatalf("got %v", p)
		}
		got = append(got, fmt.Sprintf("%d:%#x", pa.PacketID, pa.ReasonCode))
		if len(got) == 2 {
			break
		}
	}
	if fmt.Sprint(got) != "[1:0x0 2:0x87]" {
		t.Fatalf("PUBACKs %v, want [1:0x0 2:0x87]", got)
	}
}
