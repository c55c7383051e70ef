package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	packets5 "github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	mochipackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
)

// sessionHarness is a TLS broker authenticating through the real device
// registry, whose revocations disconnect as the node wires them.
type sessionHarness struct {
	t      *testing.T
	model  *model.Model
	reg    *devices.Service
	broker *Broker
	roots  *x509.CertPool
	token  string
}

// newSessionHarness starts it with a failure limit of authFailures per
// minute.
func newSessionHarness(t *testing.T, authFailures int) *sessionHarness {
	t.Helper()
	m := testTree(t)
	ca, cert := testServerCert(t)
	reg, err := devices.New(devices.Config{Tree: m, CAPEM: ca.CertPEM, AuthFailures: authFailures, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h := &sessionHarness{t: t, model: m, reg: reg, roots: x509.NewCertPool()}
	h.roots.AddCert(ca.Cert)
	h.token, _, err = reg.CreateToken(context.Background(), sysAdmin, devices.TokenSpec{Group: "g", Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	h.broker = startBroker(t, Config{
		TLSAddr: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Devices: &registryAuth{d: reg}, Tree: m, Registerer: prometheus.NewRegistry(),
	})
	reg.OnRevoke(h.broker.Disconnect)
	return h
}

var sysAdmin = &auth.Principal{User: "admin", System: true}

func (h *sessionHarness) enroll(hw string) devices.Enrollment {
	h.t.Helper()
	return h.enrollWith(h.token, hw)
}

func (h *sessionHarness) enrollWith(token, hw string) devices.Enrollment {
	h.t.Helper()
	e, err := h.reg.Enroll(context.Background(), devices.EnrollRequest{Token: token, HardwareID: hw}, "127.0.0.1:1")
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

// dial connects a Paho client over TLS; it returns nil when the broker
// refused or the connection was taken over before CONNACK.
func (h *sessionHarness) dial(e devices.Enrollment) paho.Client {
	o := paho.NewClientOptions().AddBroker("ssl://" + h.broker.Addr("tls")).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: h.roots}).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil
	}
	h.t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// liveSessions is how many authenticated connections of device id the
// broker has not closed.
func (b *Broker) liveSessions(id string) int {
	h := b.hook
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for cl := range h.tenants {
		if cl.ID == id && !cl.Closed() {
			n++
		}
	}
	return n
}

func openClients(cs []paho.Client) int {
	n := 0
	for _, c := range cs {
		if c != nil && c.IsConnectionOpen() {
			n++
		}
	}
	return n
}

// TestOneSessionPerDevice races 8 CONNECTs per device id, round after
// round: at most one session per id stays open, on the broker and as the
// clients see it.
func TestOneSessionPerDevice(t *testing.T) {
	h := newSessionHarness(t, 1<<20) // revoked devices reconnecting must not throttle the others
	const devs, racers, rounds = 4, 8, 4
	es := make([]devices.Enrollment, devs)
	for i := range es {
		es[i] = h.enroll(fmt.Sprintf("hw-%d", i))
	}
	takeoversBefore := counterValue(t, h.broker.metrics.takeovers)
	for round := range rounds {
		clients := make([][]paho.Client, devs)
		var wg sync.WaitGroup
		for d := range es {
			clients[d] = make([]paho.Client, racers)
			for r := range racers {
				wg.Go(func() { clients[d][r] = h.dial(es[d]) })
			}
		}
		wg.Wait()
		for d, e := range es {
			tstest.WaitFor(t, tstest.DefaultTimeout, fmt.Sprintf("round %d: at most one live session of %s", round, e.DeviceID), func() bool {
				return h.broker.liveSessions(e.DeviceID) <= 1 && openClients(clients[d]) <= 1
			})
		}
		for _, cs := range clients {
			for _, c := range cs {
				if c != nil {
					c.Disconnect(0)
				}
			}
		}
	}
	if counterValue(t, h.broker.metrics.takeovers) == takeoversBefore {
		t.Error("no session takeover was counted")
	}
}

// TestRevokeClosesEverySession races 8 CONNECTs per device id, each
// publishing telemetry as fast as it is acknowledged, against the
// device's revocation: once Revoke returns no session of the device is
// left and nothing it sent is stored any more.
func TestRevokeClosesEverySession(t *testing.T) {
	h := newSessionHarness(t, 1<<20) // revoked devices reconnecting must not throttle the others
	const devs, racers = 4, 8
	es := make([]devices.Enrollment, devs)
	for i := range es {
		es[i] = h.enroll(fmt.Sprintf("hw-%d", i))
	}
	admin := sysAdmin
	type revoked struct {
		seq uint64 // the change log's last entry once Revoke returned
	}
	after := make([]revoked, devs)
	clients := make([][]paho.Client, devs)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for d, e := range es {
		clients[d] = make([]paho.Client, racers)
		firstAck := make(chan struct{})
		var once sync.Once
		for r := range racers {
			wg.Go(func() {
				c := h.dial(e)
				mu.Lock()
				clients[d][r] = c
				mu.Unlock()
				if c == nil {
					return
				}
				topic := TopicPrefix(e.DeviceID) + "telemetry"
				for i := 0; i < 5000 && c.IsConnectionOpen(); i++ {
					tok := c.Publish(topic, 1, false, fmt.Sprintf(`{"racer": %d, "n": %d}`, r, i))
					if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
						return
					}
					once.Do(func() { close(firstAck) })
				}
			})
		}
		wg.Go(func() {
			select {
			case <-firstAck:
			case <-time.After(20 * time.Second): // a bound, not synchronisation
			}
			if _, err := h.reg.Revoke(context.Background(), admin, e.DeviceID); err != nil {
				t.Errorf("revoke %s: %v", e.DeviceID, err)
			}
			seq := h.model.LastSeq()
			mu.Lock()
			after[d].seq = seq
			mu.Unlock()
		})
	}
	for d, e := range es {
		tstest.WaitFor(t, 20*time.Second, "every session of revoked "+e.DeviceID+" closed", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return after[d].seq > 0 && h.broker.liveSessions(e.DeviceID) == 0 && openClients(clients[d]) == 0
		})
	}
	wg.Wait()
	if c := h.dial(es[0]); c != nil {
		t.Fatal("a revoked device connected again")
	}
	// Let the pipeline apply whatever it still holds, then read the log.
	if err := h.broker.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, err := h.model.ReadLog(context.Background(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for d, e := range es {
		path := DevicePath(e.DeviceID)
		stored := 0
		for _, en := range entries {
			m := en.Mutation
			if m.Path != path || en.Seq <= after[d].seq {
				continue
			}
			if m.Op == model.OpPut {
				for name := range m.Variables {
					if name != "online" && name != "last_seen" {
						t.Errorf("%s: variable %q stored at seq %d, after the revocation (seq %d)", e.DeviceID, name, en.Seq, after[d].seq)
						stored++
					}
				}
			}
			if m.Op == model.OpEvent {
				t.Errorf("%s: event %q stored at seq %d, after the revocation", e.DeviceID, m.Event.Name, en.Seq)
			}
			if stored > 5 {
				break
			}
		}
	}
}

// TestRevokedDeviceDoesNotLockOutItsSite: a revoked device retrying with
// its old password from a site's address (behind NAT, all its devices
// share it) blocks only itself: another device of the site connects, and
// enrollment from the address works.
func TestRevokedDeviceDoesNotLockOutItsSite(t *testing.T) {
	const limit = 5
	h := newSessionHarness(t, limit)
	revoked, good := h.enroll("hw-revoked"), h.enroll("hw-good")
	if _, err := h.reg.Revoke(context.Background(), sysAdmin, revoked.DeviceID); err != nil {
		t.Fatal(err)
	}
	for range 3 * limit {
		if c := h.dial(revoked); c != nil {
			t.Fatal("a revoked device connected")
		}
	}
	if c := h.dial(good); c == nil {
		t.Fatal("a good device behind the same address was locked out")
	}
	if _, err := h.reg.Enroll(context.Background(), devices.EnrollRequest{Token: h.token, HardwareID: "hw-new"}, "127.0.0.1:2"); err != nil {
		t.Fatalf("enrollment behind the same address: %v", err)
	}
}

// TestSquattedContextGetsNoData: a shared device enrolled into a context
// that another tenant had prepared (before enrollment owned device
// contexts) connects: its data never lands in that tenant's context,
// which is taken back whole (the function it declared is gone).
func TestSquattedContextGetsNoData(t *testing.T) {
	h := newSessionHarness(t, 10)
	tok, _, err := h.reg.CreateToken(context.Background(), sysAdmin, devices.TokenSpec{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	e := h.enrollWith(tok, "hw-shared")
	if _, err := h.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: e.Path, Type: "device", Tenant: "globex",
		Functions: []model.Function{{Name: "run-script"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	c := h.dial(e)
	if c == nil {
		t.Fatal("the device did not connect")
	}
	if tok := c.Publish(TopicPrefix(e.DeviceID)+"telemetry", 1, false, `{"secret": 42}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	got, err := h.model.Get(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tenant != "" || len(got.Functions) != 0 {
		t.Fatalf("the device's data went into another tenant's context: %+v", got)
	}
	if string(got.Variables["secret"].Value) != "42" {
		t.Fatalf("the device's own context lacks its data: %+v", got.Variables)
	}
}

// TestRevokedInFlightNotStored: a message a device sent before its
// revocation, still waiting for the store when the revocation happens,
// is not written once the revocation returned; a message already being
// written finishes first (the revocation waits for it).
func TestRevokedInFlightNotStored(t *testing.T) {
	m := testTree(t)
	tree := &gatedTree{Tree: m}
	b := startBroker(t, Config{
		TCPAddr: "127.0.0.1:0", Devices: &fakeDevices{secrets: map[string]string{"d1": "s1"}}, Tree: tree,
		Registerer: prometheus.NewRegistry(),
	})
	conn, err := net.Dial("tcp", b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	cp := packets5.NewControlPacket(packets5.CONNECT)
	c := cp.Content.(*packets5.Connect)
	c.ClientID, c.Username, c.Password, c.UsernameFlag, c.PasswordFlag, c.CleanStart, c.KeepAlive = "d1", "d1", []byte("s1"), true, true, true, 30
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	if ack, err := packets5.ReadPacket(conn); err != nil || ack.Type != packets5.CONNACK {
		t.Fatalf("CONNACK %v %v", ack, err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "online", func() bool {
		c, err := m.Get(DevicePath("d1"))
		return err == nil && string(c.Variables["online"].Value) == "true"
	})
	sh := b.shardOf("d1")
	queued := func() int { sh.mu.Lock(); defer sh.mu.Unlock(); return len(sh.queue) }
	u := b.hook.uplink(b.hook.current("d1"))
	pending := func() int { u.mu.Lock(); defer u.mu.Unlock(); return u.pending }
	send := func(id uint16, payload string) {
		pp := packets5.NewControlPacket(packets5.PUBLISH)
		p := pp.Content.(*packets5.Publish)
		p.Topic, p.QoS, p.PacketID, p.Payload = "strata/d1/telemetry", 1, id, []byte(payload)
		if _, err := pp.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
	}
	tree.shut()
	opened := false
	defer func() {
		if !opened {
			tree.open()
		}
	}()
	send(1, `{"before": 1}`)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the first message being written", func() bool { return pending() == 1 && queued() == 0 })
	send(2, `{"after": 2}`)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the second message queued", func() bool { return queued() == 1 })
	revoked := make(chan struct{})
	go func() { b.Disconnect("d1"); close(revoked) }()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the revocation started", func() bool {
		b.hook.mu.Lock()
		defer b.hook.mu.Unlock()
		return b.hook.epoch["d1"] == 1
	})
	select {
	case <-revoked:
		t.Fatal("the revocation returned while a write it must wait for was in progress")
	default:
	}
	tree.open()
	opened = true
	<-revoked
	tstest.WaitFor(t, tstest.DefaultTimeout, "the second message refused", func() bool { return counterValue(t, b.metrics.revokedWrites) == 1 })
	got, err := m.Get(DevicePath("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Variables["before"]; !ok {
		t.Error("the message written before the revocation is missing")
	}
	if v, ok := got.Variables["after"]; ok {
		t.Errorf("a message of the revoked device was stored: %s", v.Value)
	}
}

// TestRevokedWillNotStored: the will of a device's session closed by its
// revocation is not written (mochi sends it before the session is
// forgotten): nothing a revoked device chose is stored.
func TestRevokedWillNotStored(t *testing.T) {
	h := newSessionHarness(t, 1<<20)
	e := h.enroll("hw-will")
	o := paho.NewClientOptions().AddBroker("ssl://"+h.broker.Addr("tls")).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: h.roots}).SetCleanSession(true).SetAutoReconnect(false).
		SetWill(TopicPrefix(e.DeviceID)+"status", "written by a revoked device", 1, false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	tstest.WaitFor(t, tstest.DefaultTimeout, "online", func() bool { return h.broker.Online(e.DeviceID) })
	if _, err := h.reg.Revoke(context.Background(), sysAdmin, e.DeviceID); err != nil {
		t.Fatal(err)
	}
	after := h.model.LastSeq()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the session closed", func() bool { return h.broker.liveSessions(e.DeviceID) == 0 })
	if err := h.broker.Shutdown(context.Background()); err != nil { // waits for background writes
		t.Fatal(err)
	}
	entries, err := h.model.ReadLog(context.Background(), after, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if m := en.Mutation; m.Op == model.OpEvent && m.Event.Name == "will" {
			t.Fatalf("revoked device's will stored at seq %d (revocation at %d): %s", en.Seq, after, m.Event.Payload)
		}
	}
}

// failBeforeConnack closes the next connection of device id once it
// authenticated and before its CONNACK is written, as a CONNECT race's
// takeover inside mochi, or a peer gone, does.
type failBeforeConnack struct {
	mochi.HookBase
	id    string
	armed atomic.Bool
}

func (f *failBeforeConnack) ID() string           { return "fail-before-connack" }
func (f *failBeforeConnack) Provides(b byte) bool { return b == mochi.OnSessionEstablish }
func (f *failBeforeConnack) OnSessionEstablish(cl *mochi.Client, _ mochipackets.Packet) {
	if cl.ID == f.id && f.armed.CompareAndSwap(true, false) {
		cl.Stop(errors.New("closed before CONNACK"))
	}
}

// TestConnectFailingBeforeConnack: a connection that authenticated and
// failed before its session was established (mochi then never reports
// its disconnection) leaves nothing behind: the device it replaced is
// shown offline, no session entry leaks, and the device connects again.
func TestConnectFailingBeforeConnack(t *testing.T) {
	h := newSessionHarness(t, 1<<20)
	e := h.enroll("hw-early")
	fail := &failBeforeConnack{id: e.DeviceID}
	if err := h.broker.srv.AddHook(fail, nil); err != nil {
		t.Fatal(err)
	}
	online := func() string {
		c, err := h.model.Get(DevicePath(e.DeviceID))
		if err != nil {
			return ""
		}
		return string(c.Variables["online"].Value)
	}
	if c := h.dial(e); c == nil {
		t.Fatal("the device did not connect")
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "online", func() bool { return online() == "true" })
	fail.armed.Store(true)
	// MQTT 3.1.1 only: Paho would otherwise try again with 3.1.
	o := paho.NewClientOptions().AddBroker("ssl://" + h.broker.Addr("tls")).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: h.roots}).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
		c.Disconnect(0)
		t.Fatal("a connection closed before CONNACK connected")
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "no session left and the device offline", func() bool {
		hk := h.broker.hook
		hk.mu.Lock()
		left := len(hk.conns) + len(hk.tenants) + len(hk.ups) + len(hk.out)
		hk.mu.Unlock()
		return left == 0 && online() == "false"
	})
	if c := h.dial(e); c == nil {
		t.Fatal("the device did not connect again")
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "online again", func() bool { return online() == "true" && h.broker.Online(e.DeviceID) })
}
