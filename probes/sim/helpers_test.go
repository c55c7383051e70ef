package sim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sim test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverTLS returns a server configuration for 127.0.0.1 signed by ca.
func (ca *testCA) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// broker is an in-process mochi broker on 127.0.0.1:0 with counters.
type broker struct {
	srv  *mqtt.Server
	addr string
	hook *countHook
	once sync.Once
}

type brokerOpts struct {
	tls    *tls.Config
	refuse bool              // refuse every CONNECT (no auth hook)
	creds  map[string]string // when set, username → password; client id must equal username
}

func startBroker(t *testing.T, o brokerOpts) *broker {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	h := &countHook{creds: o.creds, refuse: o.refuse, remotes: map[string]int{}}
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0", TLSConfig: o.tls})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &broker{srv: srv, addr: l.Address(), hook: h}
	t.Cleanup(b.close)
	return b
}

// close stops the broker; it may be called more than once.
func (b *broker) close() { b.once.Do(func() { b.srv.Close() }) }

// testWriter sends the broker's errors to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// countHook authenticates and counts what the broker sees.
type countHook struct {
	mqtt.HookBase
	creds  map[string]string
	refuse bool

	telemetry, results, subscribed, connects atomic.Int64

	mu      sync.Mutex
	remotes map[string]int // source IP → connections
}

// setCred adds a device secret (creds mode).
func (h *countHook) setCred(user, pass string) {
	h.mu.Lock()
	h.creds[user] = pass
	h.mu.Unlock()
}

func (h *countHook) ID() string { return "count" }

func (h *countHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublished,
		mqtt.OnSubscribed, mqtt.OnSessionEstablished}, []byte{b})
}

func (h *countHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.refuse {
		return false
	}
	if h.creds == nil {
		return true
	}
	user := string(pk.Connect.Username)
	h.mu.Lock()
	pass, ok := h.creds[user]
	h.mu.Unlock()
	return ok && pass == string(pk.Connect.Password) && pk.Connect.ClientIdentifier == user
}

func (h *countHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return strings.HasPrefix(topic, "strata/"+cl.ID+"/")
}

func (h *countHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.connects.Add(1)
	host, _, _ := net.SplitHostPort(cl.Net.Remote)
	h.mu.Lock()
	h.remotes[host]++
	h.mu.Unlock()
}

func (h *countHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if cl.Net.Inline {
		return // the test's own subscriptions
	}
	h.subscribed.Add(1)
}

func (h *countHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	switch {
	case strings.HasSuffix(pk.TopicName, "/telemetry"):
		h.telemetry.Add(1)
	case strings.HasSuffix(pk.TopicName, "/result"):
		h.results.Add(1)
	}
}

func (h *countHook) sources() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.remotes {
		out[k] = v
	}
	return out
}

// anonymousConfig is a fleet of n anonymous devices against b.
func anonymousConfig(b *broker, n int) Config {
	cfg := DefaultConfig()
	cfg.Devices = n
	cfg.Anonymous = true
	cfg.MQTTAddr = b.addr
	cfg.Plain = true
	cfg.IDPrefix = "t"
	cfg.ConnectRate = 5000
	return cfg
}

// runFleet runs cfg to completion with a test deadline.
func runFleet(t *testing.T, cfg Config) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return r
}
