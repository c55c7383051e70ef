package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"

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
	h.cmds.pending["d1"] = []Command{{Job: "j1", Function: "ping", Args: json.RawMessage(`{"n":1}`), Deadline: deadline}}
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
	eventually(t, "a rejected event", func() bool { return h.rejectedEvents("d1") > 0 })
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
	eventually(t, "delivered mark", func() bool { h.cmds.mu.Lock(); defer h.cmds.mu.Unlock(); return h.cmds.delivered["j1"] })
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
