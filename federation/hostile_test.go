package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// hostileProvider is a provider written by hand on the real wire: it
// joins a real consumer with a real token, then says and sends whatever
// the test crafts, over a real QUIC link.
type hostileProvider struct {
	t    *testing.T
	name string
	addr string
	cert tls.Certificate

	conn    *quic.Conn
	ctrl    *quic.Stream
	sync    *quic.Stream
	welcome federation.WireWelcome

	mu    sync.Mutex
	acked uint64
}

func hostileTLS(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{federation.ALPN}, InsecureSkipVerify: true}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

func quicDial(t *testing.T, addr string, tc *tls.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tstest.DefaultTimeout)
	defer cancel()
	c, err := quic.DialAddr(ctx, addr, tc, &quic.Config{KeepAlivePeriod: 500 * time.Millisecond, MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

// joinHostile joins a hand-written provider named name to consumer hq
// with the grant and accepted subtrees given.
func joinHostile(t *testing.T, hq *tnode, name, grant string, subtrees ...model.Path) *hostileProvider {
	t.Helper()
	tok, _, err := hq.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: name, Grant: grant, Subtrees: subtrees})
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := federation.NewCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileProvider{t: t, name: name, addr: hq.svc.Addr()}
	c := quicDial(t, h.addr, hostileTLS(nil))
	st, err := c.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(st, federation.KindJoin, federation.WireJoin{Version: 1, Node: name, Token: tok, CSR: csr}); err != nil {
		t.Fatal(err)
	}
	var j federation.WireJoined
	if err := federation.ExpectFrame(federation.NewFrameReader(st), federation.KindJoined, &j); err != nil {
		t.Fatal(err)
	}
	c.CloseWithError(0, "")
	h.cert = tlsCert(t, key, j.Cert)
	return h
}

func tlsCert(t *testing.T, key *ecdsa.PrivateKey, der []byte) tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// connect opens the link: hello (as crafted) → welcome, then the sync
// stream, whose acks are collected.
func (h *hostileProvider) connect(hl federation.WireHello) {
	t := h.t
	t.Helper()
	if hl.Node == "" {
		hl.Node = h.name
	}
	if hl.Version == 0 {
		hl.Version = 1
	}
	if hl.LogID == "" {
		hl.LogID = "hostile-log"
	}
	h.conn = quicDial(t, h.addr, hostileTLS(&h.cert))
	var err error
	if h.ctrl, err = h.conn.OpenStreamSync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(h.ctrl, federation.KindHello, hl); err != nil {
		t.Fatal(err)
	}
	if err := federation.ExpectFrame(federation.NewFrameReader(h.ctrl), federation.KindWelcome, &h.welcome); err != nil {
		t.Fatal(err)
	}
	if h.sync, err = h.conn.OpenStreamSync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(h.sync, federation.KindSyncOpen, federation.WireSyncOpen{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		fr := federation.NewFrameReader(h.sync)
		for {
			k, body, err := federation.ReadFrame(fr)
			if err != nil {
				return
			}
			var a federation.WireAck
			if k == federation.KindAck && federation.DecodeBody(k, body, &a) == nil {
				h.mu.Lock()
				h.acked = max(h.acked, a.Seq)
				h.mu.Unlock()
			}
		}
	}()
}

// send writes one frame on the sync stream.
func (h *hostileProvider) send(k federation.WireKind, body any) {
	h.t.Helper()
	if err := federation.WriteFrame(h.sync, k, body); err != nil {
		h.t.Fatal(err)
	}
}

// batch sends entries covering up to last (also the head), and waits
// until the consumer acknowledged them.
func (h *hostileProvider) batch(last uint64, es ...model.Entry) {
	h.t.Helper()
	h.send(federation.KindBatch, federation.WireBatch{Entries: es, Last: last, Head: last})
	tstest.WaitFor(h.t, tstest.DefaultTimeout, "the consumer's ack", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.acked >= last
	})
}

func entry(seq uint64, mu model.Mutation) model.Entry {
	return model.Entry{Seq: seq, Time: time.Now().UTC(), Mutation: mu}
}

func putEntry(seq uint64, path string, vars map[string]string) model.Entry {
	mu := model.Mutation{Op: model.OpPut, Path: model.Path(path), Type: "device", Tenant: "acme"}
	if len(vars) > 0 {
		mu.Variables = map[string]model.Variable{}
		for k, v := range vars {
			mu.Variables[k] = model.Variable{Value: []byte(v), Type: model.TypeString, Time: time.Now().UTC()}
		}
	}
	return entry(seq, mu)
}

var _ = errors.Is
var _ = io.EOF
