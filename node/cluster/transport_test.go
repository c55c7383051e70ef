package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/certs"
)

// deviceCert is a client certificate the node's CA signs for a device
// (from its CSR), as enrollment does.
func deviceCert(t *testing.T, ca *certs.Pair) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignClientCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// statusWith dials the replicas' channel presenting cert (none if nil)
// and asks for the status; it reports whether an answer came back.
func statusWith(addr string, cert *tls.Certificate, mux byte) bool {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(harnessTimeout))
	if _, err := c.Write([]byte{mux}); err != nil {
		return false
	}
	if err := writeFrame(c, rpcRequest{Op: "status"}); err != nil {
		return false
	}
	data, err := readFrame(c, maxRPCRequest)
	var resp rpcResponse
	return err == nil && json.Unmarshal(data, &resp) == nil && resp.Status != nil
}

// Only replica certificates of the node's CA may speak on the replicas'
// channel: not a device certificate the same CA signed, not a replica
// certificate of another CA, not a client without a certificate.
func TestChannelRefusesAllButReplicas(t *testing.T) {
	h := newHarness(t, nil)
	r := h.cluster(1)[0]
	good, err := h.ca.IssueReplica("tester", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	goodTC, _ := good.TLSCertificate()
	if !statusWith(r.addr, &goodTC, muxRPC) {
		t.Fatal("a replica certificate of the node CA was refused")
	}
	other, _ := certs.NewCA("another CA")
	foreign, _ := other.IssueReplica("tester", []string{"127.0.0.1"})
	foreignTC, _ := foreign.TLSCertificate()
	device := deviceCert(t, h.ca)
	api, _ := h.ca.IssueServer("api", []string{"127.0.0.1"})
	apiTC, _ := api.TLSCertificate()
	for name, cert := range map[string]*tls.Certificate{
		"device certificate of the node CA": &device,
		"server certificate of the node CA": &apiTC,
		"replica certificate of another CA": &foreignTC,
		"no certificate":                    nil,
	} {
		if statusWith(r.addr, cert, muxRPC) {
			t.Errorf("%s: answered", name)
		}
	}
	// The server counts a refusal after the client saw it.
	tstest.WaitFor(t, harnessTimeout, "refused{tls} at 4", func() bool {
		return testutil.ToFloat64(r.c.metrics.refused.WithLabelValues("tls")) == 4
	})
	if statusWith(r.addr, &goodTC, 'X') {
		t.Error("an unknown channel byte was answered")
	}
	tstest.WaitFor(t, harnessTimeout, "refused{mux} at 1", func() bool {
		return testutil.ToFloat64(r.c.metrics.refused.WithLabelValues("mux")) == 1
	})
	// Dialling out, a replica does not talk to a server that is not a
	// replica of its CA either.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{apiTC}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				writeFrame(c, rpcResponse{Status: &Member{ID: "fake"}})
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), harnessTimeout)
	defer cancel()
	if resp, err := r.c.call(ctx, ln.Addr().String(), rpcRequest{Op: "status"}); err == nil {
		t.Fatalf("a replica took an answer from a non-replica server: %+v", resp)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"status"}`))
	f.Add([]byte(`{"op":"join","id":"r2","address":"127.0.0.1:7000"}`))
	f.Add([]byte(`{"op":"join","id":"../x","address":"nope"}`))
	f.Add([]byte(`{"op":"apply","mutations":"oQFh"}`))
	f.Add([]byte(`{"op":"read_index"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeRequest(data)
		if err != nil {
			return
		}
		switch req.Op {
		case "status":
		case "apply":
			if len(req.Mutations) == 0 {
				t.Fatal("accepted an apply without mutations")
			}
		case "transfer", "read_index":
		case "remove":
			if validID(req.ID) != nil {
				t.Fatalf("accepted id %q", req.ID)
			}
		case "join":
			if validID(req.ID) != nil {
				t.Fatalf("accepted id %q", req.ID)
			}
		default:
			t.Fatalf("accepted op %q", req.Op)
		}
	})
}

func TestReadFrameBounded(t *testing.T) {
	if _, err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 'x'}), maxRPCRequest); err == nil {
		t.Fatal("read a frame over the limit")
	}
	if _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, '{'}), maxRPCRequest); err == nil {
		t.Fatal("read a frame cut short")
	}
}
