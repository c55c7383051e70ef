package federation_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
)

// hostileConsumer is a consumer written by hand on the real wire: it
// answers a provider's join with the grant it is given, then says
// whatever the test crafts in its welcome and on the link.
type hostileConsumer struct {
	t     *testing.T
	ca    *certs.Pair
	ln    *quic.Listener
	addr  string
	token string

	grant    string       // granted at join
	subtrees []model.Path // accepted at join (none: the whole tree)
	mu       sync.Mutex
	// issue signs the certificate a join gets (default: 30 days from now).
	issue   func(csr []byte, node string) ([]byte, error)
	welcome func() federation.WireWelcome
	links   chan *hostileLink // connected links, after the welcome
}

// hostileLink is one provider connection to a hostile consumer.
type hostileLink struct {
	conn *quic.Conn
	ctrl *quic.Stream
	fr   *federation.FrameReader
	hl   federation.WireHello
}

func newHostileConsumer(t *testing.T, grant string, welcome func() federation.WireWelcome) *hostileConsumer {
	t.Helper()
	ca, err := certs.NewCA("hostile CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := federation.ListenerCert("hq", ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{federation.ALPN}, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	ln, err := quic.ListenAddr("127.0.0.1:0", tc, &quic.Config{KeepAlivePeriod: 500 * time.Millisecond, MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := federation.NewJoinToken(ca.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileConsumer{t: t, ca: ca, ln: ln, addr: ln.Addr().String(), token: tok, grant: grant,
		welcome: welcome, links: make(chan *hostileLink, 16)}
	h.issue = func(csr []byte, node string) ([]byte, error) {
		c, err := federation.SignCSR(ca.Cert, ca.Key, csr, node, 30*24*time.Hour)
		if err != nil {
			return nil, err
		}
		return c.Raw, nil
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			h.serve(c)
		}
	}()
	return h
}

// serve answers a join or a hello on a new connection (one at a time).
func (h *hostileConsumer) serve(c *quic.Conn) {
	ctx, cancel := context.WithTimeout(c.Context(), 10*time.Second)
	defer cancel()
	st, err := c.AcceptStream(ctx)
	if err != nil {
		c.CloseWithError(1, "no stream")
		return
	}
	fr := federation.NewFrameReader(st)
	k, body, err := federation.ReadFrame(fr)
	if err != nil {
		c.CloseWithError(1, "bad frame")
		return
	}
	switch k {
	case federation.KindJoin:
		var j federation.WireJoin
		if federation.DecodeBody(k, body, &j) != nil {
			return
		}
		h.mu.Lock()
		issue := h.issue
		h.mu.Unlock()
		cert, err := issue(j.CSR, j.Node)
		if err != nil {
			h.t.Errorf("hostile consumer: sign: %v", err)
			return
		}
		federation.WriteFrame(st, federation.KindJoined, federation.WireJoined{Node: "hq", Cert: cert, CA: h.ca.Cert.Raw, Grant: h.grant, Subtrees: h.subtrees})
	case federation.KindHello:
		var hl federation.WireHello
		if federation.DecodeBody(k, body, &hl) != nil {
			return
		}
		w := h.welcome()
		if w.Node == "" {
			w.Node = "hq"
		}
		if w.Version == 0 {
			w.Version = 1
		}
		federation.WriteFrame(st, federation.KindWelcome, w)
		h.links <- &hostileLink{conn: c, ctrl: st, fr: fr, hl: hl}
	default:
		c.CloseWithError(1, "unexpected")
	}
}

// next waits for the provider's next connection.
func (h *hostileConsumer) next() *hostileLink {
	h.t.Helper()
	select {
	case l := <-h.links:
		return l
	case <-time.After(wait):
		h.t.Fatal("timed out waiting for the provider to connect")
		return nil
	}
}

// setIssue replaces how joins are signed.
func (h *hostileConsumer) setIssue(f func(csr []byte, node string) ([]byte, error)) {
	h.mu.Lock()
	h.issue = f
	h.mu.Unlock()
}

// agedCert signs a client certificate for csr valid from notBefore to
// notAfter.
func (h *hostileConsumer) agedCert(csrDER []byte, node string, notBefore, notAfter time.Time) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: node},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, h.ca.Cert, csr.PublicKey, h.ca.Key)
}

// frames reads the link's control stream in the background.
func (l *hostileLink) frames(t *testing.T) <-chan ctrlFrame {
	ch := make(chan ctrlFrame, 16)
	go func() {
		defer close(ch)
		for {
			k, body, err := federation.ReadFrame(l.fr)
			if err != nil {
				return
			}
			ch <- ctrlFrame{k, body}
		}
	}()
	return ch
}

type ctrlFrame struct {
	kind federation.WireKind
	body []byte
}

// nextRenew waits for the provider's next renewal request on the link,
// calling poll (if any) while it waits.
func nextRenew(t *testing.T, frames <-chan ctrlFrame, poll func()) federation.WireRenew {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatal("the link ended before the provider asked for a renewal")
			}
			if f.kind != federation.KindRenew {
				continue
			}
			var r federation.WireRenew
			if err := federation.DecodeBody(f.kind, f.body, &r); err != nil {
				t.Fatal(err)
			}
			return r
		case <-deadline:
			t.Fatal("timed out waiting for the provider to ask for a renewal")
		case <-time.After(5 * time.Millisecond):
			if poll != nil {
				poll()
			}
		}
	}
}

// request sends one request on the link and returns the provider's answer.
func (l *hostileLink) request(t *testing.T, req federation.WireRequest) federation.WireResponse {
	t.Helper()
	st, err := l.conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(st, federation.KindRequest, req); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var resp federation.WireResponse
	if err := federation.ExpectFrame(federation.NewFrameReader(st), federation.KindResponse, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}
