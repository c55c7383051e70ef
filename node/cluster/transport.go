package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-dm/strata/node/certs"
)

// The replicas' channel: one TCP port per replica, mutual TLS with
// certificates the node's CA issued to replicas (certs.IssueReplica), and
// on each connection, after the handshake, one byte saying what it
// carries: Raft's own RPCs (raft.NetworkTransport) or the cluster's
// (rpc.go). A certificate the same CA issued to a device or a peer node
// is refused: it lacks the replica unit.

const (
	muxRaft byte = 'R'
	muxRPC  byte = 'C'
)

// handshakeTimeout bounds a connection's TLS handshake and mux byte.
const handshakeTimeout = 10 * time.Second

var errNotReplica = errors.New("cluster: the peer certificate is not a replica certificate of this node's CA")

// tlsConfigs returns the server and client TLS configurations of a
// replica presenting cert and trusting only replica certificates of the
// CA in caPEM.
func tlsConfigs(caPEM []byte, cert tls.Certificate) (server, client *tls.Config, err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("cluster: no certificate in the CA PEM")
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Verified in VerifyConnection, which also checks the unit.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verifyReplica(pool, x509.ExtKeyUsageClientAuth),
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Replicas are dialled by address; who answers is checked in
		// VerifyConnection (chain to the CA, replica unit) rather than by
		// host name.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyReplica(pool, x509.ExtKeyUsageServerAuth),
	}
	return server, client, nil
}

// verifyReplica accepts a peer whose certificate chains to pool for usage
// and carries the replica unit.
func verifyReplica(pool *x509.CertPool, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errNotReplica
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("cluster: peer certificate: %w", err)
		}
		if !slices.Contains(leaf.Subject.OrganizationalUnit, certs.ReplicaUnit) {
			return errNotReplica
		}
		return nil
	}
}

// streamLayer is raft.StreamLayer over the replicas' channel. It owns the
// listener, the goroutine accepting on it, and one goroutine per
// connection until it is handed over (to Raft, or to the RPC handler,
// which runs on it).
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	rpc       func(net.Conn) // serves one cluster RPC connection
	refused   func(reason string)

	raftConns chan net.Conn
	quit      chan struct{}
	wg        sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open RPC connections, closed by Close
	closed bool

	cut cutOff // a partition a test makes (transport_cut.go)
}

func newStreamLayer(ln net.Listener, advertise net.Addr, server, client *tls.Config, rpc func(net.Conn), refused func(string)) *streamLayer {
	l := &streamLayer{ln: ln, advertise: advertise, server: server, client: client, rpc: rpc, refused: refused,
		raftConns: make(chan net.Conn), quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *streamLayer) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.quit:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serve(c)
		}()
	}
}

// serve handshakes one connection and hands it over.
func (l *streamLayer) serve(raw net.Conn) {
	if raw = l.cut.watch(raw); raw == nil {
		return
	}
	c := tls.Server(raw, l.server)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := c.Handshake(); err != nil {
		l.refused("tls")
		c.Close()
		return
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	switch b[0] {
	case muxRaft:
		select {
		case l.raftConns <- c:
		case <-l.quit:
			c.Close()
		}
	case muxRPC:
		if !l.track(c) {
			c.Close()
			return
		}
		defer l.untrack(c)
		l.rpc(c)
	default:
		l.refused("mux")
		c.Close()
	}
}

func (l *streamLayer) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *streamLayer) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

// Accept implements net.Listener for Raft: the next Raft connection.
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.raftConns:
		return c, nil
	case <-l.quit:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, closes the open RPC connections and waits for
// the connection goroutines. Closing twice is safe.
func (l *streamLayer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.quit)
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

// Addr is the address the other replicas dial.
func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.dial(string(address), timeout, muxRaft)
}

// dial opens a connection to a replica for what kind says, within
// timeout (none when zero).
func (l *streamLayer) dial(address string, timeout time.Duration, kind byte) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return l.dialContext(ctx, address, kind)
}

// dialContext is dial, until ctx ends: the connection, the handshake and
// the mux byte.
func (l *streamLayer) dialContext(ctx context.Context, address string, kind byte) (net.Conn, error) {
	if l.cut.on.Load() {
		return nil, errCut
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	if raw = l.cut.watch(raw); raw == nil {
		return nil, errCut
	}
	c := tls.Client(raw, l.client)
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
