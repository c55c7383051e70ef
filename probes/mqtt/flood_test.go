package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
)

// registryAuth authenticates through the node's device registry (with its
// per-address failure limit) and counts how each attempt ended.
type registryAuth struct {
	d                        *devices.Service
	ok, badCreds, rateLimits atomic.Int64
}

func (a *registryAuth) Authenticate(id, secret, addr string) (string, error) {
	dev, err := a.d.Authenticate(id, secret, addr)
	a.count(err)
	return dev.Tenant, err
}

func (a *registryAuth) AuthenticateCert(id, serial, addr string) (string, error) {
	dev, err := a.d.AuthenticateSerial(id, serial, addr)
	a.count(err)
	return dev.Tenant, err
}

func (a *registryAuth) count(err error) {
	switch {
	case err == nil:
		a.ok.Add(1)
	case errors.Is(err, auth.ErrRateLimited):
		a.rateLimits.Add(1)
	default:
		a.badCreds.Add(1)
	}
}

const (
	floodConnectTimeout = 500 * time.Millisecond
	floodAuthFailures   = 10
)

// floodHarness is a broker authenticating through the real device
// registry, with a short connect timeout.
type floodHarness struct {
	model  *model.Model
	reg    *devices.Service
	auth   *registryAuth
	broker *Broker
	token  string
}

func newFloodHarness(t *testing.T) *floodHarness {
	t.Helper()
	m := testTree(t)
	ca, cert := testServerCert(t)
	var err error
	f := &floodHarness{model: m}
	f.reg, err = devices.New(devices.Config{Tree: m, CAPEM: ca.CertPEM, AuthFailures: floodAuthFailures, AuthWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f.auth = &registryAuth{d: f.reg}
	f.token, _, err = f.reg.CreateToken(context.Background(), &auth.Principal{User: "admin", System: true},
		devices.TokenSpec{Group: "flood", Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	f.broker = startBroker(t, Config{
		TLSAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0",
		TLS:     &tls.Config{Certificates: []tls.Certificate{cert}},
		Devices: f.auth, Tree: m, Registerer: prometheus.NewRegistry(),
		ConnectTimeout: floodConnectTimeout,
		// The attacker may hold the whole connecting bound, as a source
		// with many devices behind it could: this flood tests the
		// failure limit and the connect timeout, which a smaller share
		// would spare most of its connections (TestMaxConnectingPerSource
		// tests the share).
		MaxConnectingPerSource: DefaultMaxConnecting(),
	})
	return f
}

func (f *floodHarness) enroll(t *testing.T, hw string) devices.Enrollment {
	t.Helper()
	e, err := f.reg.Enroll(context.Background(), devices.EnrollRequest{Token: f.token, HardwareID: hw}, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// connectFrom connects a Paho client over plain TCP from local address src.
func (f *floodHarness) connectFrom(t *testing.T, src string, e devices.Enrollment) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + f.broker.Addr("tcp")).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetProtocolVersion(4).
		SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// attacker is where the flood comes from: another loopback address, so
// the failure limit it earns does not fall on the legitimate devices.
const attacker = "127.0.0.2"

// wrongConnect is a CONNECT (MQTT 3.1.1) with a wrong password.
func wrongConnect(t *testing.T, id string) []byte {
	t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte("sd_wrong"),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// floodResult is what one flood connection saw.
type floodResult struct {
	kind    string
	err     error         // dial or write failure, or not closed in time
	closed  time.Duration // from dial to the server closing it
	connack []byte        // wrong passwords: the first bytes the server sent
}

// A flood of silent, garbage and wrong-password connections costs the
// connected devices nothing: their publications keep being acknowledged,
// a new device connects afterwards, every flood connection is closed in
// bounded time, the failure limit refuses the guesses, and no goroutine
// is left behind.
func TestConnectFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood")
	}
	f := newFloodHarness(t)
	if d, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}}).Dial("tcp", f.broker.Addr("tcp")); err != nil {
		t.Skipf("cannot dial from %s: %v", attacker, err)
	} else {
		d.Close()
	}
	good := f.enroll(t, "hw-good")
	late := f.enroll(t, "hw-late")
	c, err := f.connectFrom(t, "127.0.0.1", good)
	if err != nil {
		t.Fatal(err)
	}

	// The legitimate device publishes throughout, one QoS 1 message at a
	// time, and notes the slowest acknowledgement.
	const maxAck = 5 * time.Second
	var (
		acked    atomic.Int64
		slowest  atomic.Int64
		pubErr   atomic.Value
		stopPub  = make(chan struct{})
		pubDone  = make(chan struct{})
		pubTopic = TopicPrefix(good.DeviceID) + "telemetry"
	)
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(5 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			start := time.Now()
			tok := c.Publish(pubTopic, 1, false, fmt.Sprintf(`{"seq": %d}`, i))
			if !tok.WaitTimeout(maxAck) {
				pubErr.Store(fmt.Errorf("publish %d not acknowledged within %v", i, maxAck))
				return
			}
			if tok.Error() != nil {
				pubErr.Store(fmt.Errorf("publish %d: %w", i, tok.Error()))
				return
			}
			if d := int64(time.Since(start)); d > slowest.Load() {
				slowest.Store(d)
			}
			acked.Add(1)
		}
	}()
	// However the test ends, the publisher stops before the harness closes
	// the broker under it.
	stopPublisher := sync.OnceFunc(func() {
		close(stopPub)
		<-pubDone
	})
	t.Cleanup(stopPublisher)
	tstest.WaitFor(t, tstest.DefaultTimeout, "the first acknowledgements", func() bool { return acked.Load() >= 5 })
	baseline := runtime.NumGoroutine()
	refusedBefore := counterValue(t, f.broker.metrics.connects.WithLabelValues("refused"))

	// The flood: a few thousand connections from the attacker's address,
	// at most 256 dialling at once.
	const (
		silentTCP = 1200
		silentTLS = 300
		garbage   = 1000
		wrongPass = 500
		closeBy   = 10 * time.Second // from dial to the server closing it
	)
	kinds := make([]string, 0, silentTCP+silentTLS+garbage+wrongPass)
	for range silentTCP {
		kinds = append(kinds, "silent")
	}
	for range silentTLS {
		kinds = append(kinds, "silent-tls")
	}
	for range garbage {
		kinds = append(kinds, "garbage")
	}
	for range wrongPass {
		kinds = append(kinds, "wrong-password")
	}
	rand.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	connect := map[bool][]byte{false: wrongConnect(t, good.DeviceID), true: wrongConnect(t, "d-unknown")}

	results := make([]floodResult, len(kinds))
	dialers := make(chan struct{}, 256)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}, Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	floodStart := time.Now()
	for i, kind := range kinds {
		wg.Go(func() {
			r := &results[i]
			r.kind = kind
			dialers <- struct{}{}
			addr := f.broker.Addr("tcp")
			if kind == "silent-tls" {
				addr = f.broker.Addr("tls")
			}
			conn, err := dialer.Dial("tcp", addr)
			<-dialers
			if err != nil {
				r.err = err
				return
			}
			defer conn.Close()
			start := time.Now()
			conn.SetDeadline(start.Add(closeBy))
			switch kind {
			case "garbage":
				junk := make([]byte, 1+rand.IntN(512))
				for j := range junk {
					junk[j] = byte(rand.Uint32())
				}
				junk[0] = 0xf0 | junk[0]&0x0f // type 15 (AUTH) before CONNECT: a protocol error
				if i%2 == 0 {
					junk = []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				}
				if _, err := conn.Write(junk); err != nil && !closedByPeer(err) {
					r.err = err
					return
				}
			case "wrong-password":
				if _, err := conn.Write(connect[i%2 == 0]); err != nil {
					r.err = err
					return
				}
			}
			// Read until the server closes the connection.
			var got bytes.Buffer
			_, err = io.Copy(&got, conn)
			if err != nil && !closedByPeer(err) {
				r.err = fmt.Errorf("not closed by the server within %v: %w", closeBy, err)
				return
			}
			r.closed = time.Since(start)
			r.connack = got.Bytes()

		})
	}
	wg.Wait()
	t.Logf("flood of %d connections done in %v; %d publications acknowledged so far, slowest %v",
		len(kinds), time.Since(floodStart), acked.Load(), time.Duration(slowest.Load()))

	// Every connection was closed by the server (the deadline passing
	// is an error above): silent ones by the connect timeout, garbage by
	// the protocol error or the timeout, wrong passwords right after
	// their CONNACK.
	closeTimes := map[string][]time.Duration{}
	unheard := 0 // wrong passwords the server had no time to read
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("%s connection: %v", r.kind, r.err)
		}
		closeTimes[r.kind] = append(closeTimes[r.kind], r.closed)
		switch r.kind {
		case "wrong-password":
			// CONNACK 0x04 bad user name or password (or 0x05 not
			// authorised), then the close; or, on a machine too busy to
			// read that CONNECT within the connect timeout, the close of
			// a connection that never got a say.
			if len(r.connack) == 0 {
				unheard++
				continue
			}
			if len(r.connack) != 4 || r.connack[0] != 0x20 || r.connack[1] != 2 || (r.connack[3] != 4 && r.connack[3] != 5) {
				t.Fatalf("wrong password answered % x", r.connack)
			}
		case "silent", "silent-tls":
			if len(r.connack) != 0 {
				t.Fatalf("silent connection received % x", r.connack)
			}
		}
	}
	for kind, ds := range closeTimes {
		slices.Sort(ds)
		t.Logf("%s: closed after p50 %v, max %v", kind, ds[len(ds)/2], ds[len(ds)-1])
	}

	// The failure limit refused nearly all guesses before any secret was
	// checked (concurrent guesses may overrun it by the concurrency).
	bad, limited := f.auth.badCreds.Load(), f.auth.rateLimits.Load()
	t.Logf("wrong passwords: %d checked, %d refused by the failure limit, %d closed unread", bad, limited, unheard)
	// Two identities were guessed (the good device's id and an unknown
	// one): the limit is per identity and address.
	// One closed unread may still have been read, too late to answer.
	heard := int64(wrongPass - unheard)
	if bad+limited < heard || bad+limited > wrongPass || limited < heard/2 || bad < 2*floodAuthFailures {
		t.Fatalf("wrong passwords: %d checked, %d rate limited, of %d (%d answered)", bad, limited, wrongPass, heard)
	}
	if got := counterValue(t, f.broker.metrics.connects.WithLabelValues("refused")) - refusedBefore; got != float64(bad+limited) {
		t.Errorf("strata_mqtt_connects_total{result=refused} rose by %v, want %d", got, bad+limited)
	}

	// The guessed identity is blocked from the attacker's address now,
	// even with its good credentials; another device behind the same
	// address is not (the limit is per identity and address: a site
	// behind NAT keeps working when one of its devices keeps failing).
	if _, err := f.connectFrom(t, attacker, good); err == nil {
		t.Fatal("a rate-limited identity connected from its blocked address")
	}
	if lim := f.auth.rateLimits.Load(); lim != limited+1 {
		t.Fatalf("good credentials of the blocked identity: rate-limited count %d, want %d", lim, limited+1)
	}

	// Everything the flood opened is gone.
	tstest.WaitFor(t, tstest.DefaultTimeout, "goroutines back near the baseline", func() bool { return runtime.NumGoroutine() <= baseline+10 })
	if n := f.broker.Connected(); n != 1 {
		t.Fatalf("%d devices connected, want 1", n)
	}
	other := f.enroll(t, "hw-other")
	if _, err := f.connectFrom(t, attacker, other); err != nil {
		t.Fatalf("another device behind the attacker's address: %v", err)
	}

	// The device kept publishing; a new device connects and publishes.
	before := acked.Load()
	tstest.WaitFor(t, tstest.DefaultTimeout, "acknowledgements after the flood", func() bool { return acked.Load() >= before+20 })
	c2, err := f.connectFrom(t, "127.0.0.1", late)
	if err != nil {
		t.Fatalf("a new device after the flood: %v", err)
	}
	publish(t, c2, TopicPrefix(late.DeviceID)+"telemetry", 1, `{"after": true}`)
	stopPublisher()
	if err, _ := pubErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d publications acknowledged, slowest %v", acked.Load(), time.Duration(slowest.Load()))
	if ctx, err := f.model.Get(DevicePath(late.DeviceID)); err != nil || string(ctx.Variables["after"].Value) != "true" {
		t.Fatalf("new device's telemetry: %+v %v", ctx, err)
	}
	if ctx, err := f.model.Get(DevicePath(good.DeviceID)); err != nil || string(ctx.Variables["seq"].Value) != fmt.Sprint(acked.Load()-1) {
		t.Fatalf("device's last acknowledged seq: %v, %v; want %d", ctx.Variables["seq"], err, acked.Load()-1)
	}
}

// closedByPeer reports whether err is the peer closing or resetting the
// connection (rather than our deadline passing).
func closedByPeer(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
