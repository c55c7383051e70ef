package udpproxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/internal/tstest"
)

const (
	alpn        = "strata-fed/1"
	idleTimeout = time.Second
	keepAlive   = 200 * time.Millisecond
)

// testTLS returns a server and a client TLS 1.3 configuration around a
// fresh self-signed certificate for "strata-fed.test".
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "strata-fed.test"},
		DNSNames:     []string{"strata-fed.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		NextProtos:   []string{alpn},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{RootCAs: pool, ServerName: "strata-fed.test", NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	return server, client
}

func quicConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: idleTimeout, KeepAlivePeriod: keepAlive, HandshakeIdleTimeout: 5 * time.Second}
}

func quicTransport(t *testing.T) *quic.Transport {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	return tr
}

// startQUICEcho accepts connections on tr and echoes every stream back.
// Its goroutines stop when tr is closed; cleanup waits for them.
func startQUICEcho(t *testing.T, tr *quic.Transport, tlsConf *tls.Config) {
	t.Helper()
	ln, err := tr.Listen(tlsConf, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.CloseWithError(0, "")
				for {
					str, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						io.Copy(str, str)
						str.Close()
					}()
				}
			}()
		}
	}()
}

// exchange writes msg on str and reads it back.
func exchange(t *testing.T, str *quic.Stream, msg string) {
	t.Helper()
	str.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := str.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(str, got); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

// TestQUICThroughProxy runs a real QUIC connection through the proxy: it
// carries data, outlives idle periods thanks to keep-alives, survives a
// blackhole shorter than the idle timeout and dies of idle timeout on one
// longer than it.
func TestQUICThroughProxy(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	srvTr := quicTransport(t)
	startQUICEcho(t, srvTr, serverTLS)
	p := newProxy(t, srvTr.Conn.LocalAddr().String())
	proxyAddr, err := net.ResolveUDPAddr("udp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}

	cliTr := quicTransport(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cliTr.Dial(ctx, proxyAddr, clientTLS, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != alpn {
		t.Fatalf("ALPN %q", got)
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		exchange(t, str, fmt.Sprintf("entry %d", i))
	}

	// Idle for longer than the idle timeout: keep-alives hold it up.
	quiet := time.Now()
	tstest.WaitFor(t, 10*time.Second, "an idle period past the idle timeout", func() bool {
		return time.Since(quiet) > idleTimeout+idleTimeout/2 || conn.Context().Err() != nil
	})
	if err := context.Cause(conn.Context()); err != nil {
		t.Fatalf("connection died while idle with keep-alives: %v", err)
	}
	exchange(t, str, "after idle")

	// A blackhole well below the idle timeout, long enough to swallow
	// the data written during it and a few retransmissions.
	p.Blackhole(true)
	start, dropped := time.Now(), p.Stats().ToTarget.Dropped
	if _, err := str.Write([]byte("during blackhole")); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, 10*time.Second, "a short blackhole", func() bool {
		return time.Since(start) >= idleTimeout/4 && p.Stats().ToTarget.Dropped >= dropped+3
	})
	p.Blackhole(false)
	short := time.Since(start)
	got := make([]byte, len("during blackhole"))
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(str, got); err != nil || string(got) != "during blackhole" {
		t.Fatalf("after a %s blackhole: got %q, %v", short, got, err)
	}
	if err := context.Cause(conn.Context()); err != nil {
		t.Fatalf("connection died in a %s blackhole: %v", short, err)
	}
	exchange(t, str, "after short blackhole")
	t.Logf("survived a %s blackhole (idle timeout %s); proxy %+v", short.Round(time.Millisecond), idleTimeout, p.Stats())

	// A blackhole longer than the idle timeout: the connection must die
	// of idle timeout.
	p.Blackhole(true)
	start = time.Now()
	select {
	case <-conn.Context().Done():
	case <-time.After(20 * idleTimeout):
		t.Fatalf("connection still alive %s into a blackhole", 20*idleTimeout)
	}
	var idle *quic.IdleTimeoutError
	if err := context.Cause(conn.Context()); !errors.As(err, &idle) {
		t.Fatalf("connection ended with %v, want an idle timeout", err)
	}
	t.Logf("connection timed out %s into the long blackhole", time.Since(start).Round(time.Millisecond))
}

// TestQUICMigrationThroughProxy moves a QUIC connection to a new client
// socket: the proxy sees a new source address, opens a second upstream
// socket for it, and the connection carries on.
func TestQUICMigrationThroughProxy(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	srvTr := quicTransport(t)
	startQUICEcho(t, srvTr, serverTLS)
	p := newProxy(t, srvTr.Conn.LocalAddr().String())
	proxyAddr, err := net.ResolveUDPAddr("udp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quicTransport(t).Dial(ctx, proxyAddr, clientTLS, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, str, "before migration")

	path, err := conn.AddPath(quicTransport(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := path.Probe(ctx); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if err := path.Switch(); err != nil {
		t.Fatalf("switch: %v", err)
	}
	exchange(t, str, "after migration")
	if n := p.Stats().Flows; n != 2 {
		t.Fatalf("flows = %d, want 2 (old and new client address)", n)
	}
}
