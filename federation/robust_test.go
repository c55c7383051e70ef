package federation_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/certs"
)

// Garbage, wrong protocols, foreign certificates and oversized frames are
// refused and the listener keeps serving real providers.
func TestGarbageOnPort(t *testing.T) {
	hq := newTNode(t, "hq", true)
	addr := hq.svc.Addr()

	// Raw garbage datagrams.
	uc, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		uc.Write([]byte{byte(i), 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	}
	big := make([]byte, 1400)
	big[0] = 0xc0 // looks like a QUIC long header
	for range 50 {
		uc.Write(big)
	}
	uc.Close()

	dial := func(tc *tls.Config) (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, addr, tc, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	}
	// Wrong ALPN: the handshake fails.
	if c, err := dial(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("a connection with the wrong ALPN was accepted")
	}
	// A certificate from another federation's CA: refused in the handshake.
	other, _ := certs.NewCA("other")
	cp, _ := other.IssueServer("hq", []string{"127.0.0.1"})
	cert, _ := cp.TLSCertificate()
	c, err := dial(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{federation.ALPN}, Certificates: []tls.Certificate{cert}})
	if err == nil {
		// TLS 1.3: the client may finish before the server rejects it.
		st, err := c.OpenStreamSync(context.Background())
		if err == nil {
			st.Write([]byte{1})
			st.Read(make([]byte, 1))
		}
		c.CloseWithError(0, "")
	}
	// No certificate, garbage on the control stream; then an oversized frame.
	for _, payload := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		binary.AppendUvarint(nil, 1<<40),
	} {
		c, err := dial(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{federation.ALPN}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.Write(payload)
		st.Close()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		st.Read(make([]byte, 64))
		select {
		case <-c.Context().Done():
		case <-time.After(15 * time.Second):
			t.Fatalf("connection sending %q was not closed", payload)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(hq.svc.Collector())
	refused := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "strata_federation_refused_total" {
			for _, m := range mf.GetMetric() {
				refused[m.GetLabel()[0].GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	if refused["certificate"] < 1 || refused["protocol"] < 2 {
		t.Fatalf("refusals counted: %v", refused)
	}

	// Still serving: a real provider joins and is mirrored.
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "mirror after garbage", func() bool { return hq.has("/peers/p1/devices/d1", nil) })
}
