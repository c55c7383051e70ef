package main

// The baseline's endpoints (-role raw): one process per tier, each with
// its own quic.Transport on its own UDP socket, the federation's QUIC
// settings (TLS 1.3, ALPN strata-fed/1, the same receive windows). A
// lower tier dials the one above once (as a link is dialled once) and
// then fetches a file on a stream of its own: one request byte up, the
// file's bytes down, like a fetch stream. The receiver writes what
// arrives to a partial file while hashing it (SHA-256), syncs it, renames
// it into place and syncs the folder: one write of the bytes, and the
// hash and durability a node must have.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/tests/bench/benchproc"
)

const alpn = "strata-fed/1"

// rawQUICConfig is the federation's (federation/service.go).
func rawQUICConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:                10 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		HandshakeIdleTimeout:           10 * time.Second,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 2 << 20,
		MaxConnectionReceiveWindow:     32 << 20,
		MaxIncomingStreams:             1024,
	}
}

// rawInfo is what a raw process announces.
type rawInfo struct {
	Addr string `json:"addr"`
}

// rawFetch is a raw process's answer to "fetch".
type rawFetch struct {
	Bytes    int64         `json:"bytes"`
	SHA256   string        `json:"sha256"`
	Took     time.Duration `json:"took"`
	Sent     uint64        `json:"sent"`     // QUIC bytes this side sent on the connection
	Received uint64        `json:"received"` // and received
}

// rawEndpoint is a raw process's state.
type rawEndpoint struct {
	srvTLS, cliTLS *tls.Config
	mu             sync.Mutex
	serving        string // the file served to whoever fetches
	conn           *quic.Conn
	cliTr          *quic.Transport
}

func runRaw(certFile, keyFile, caFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	e := &rawEndpoint{
		srvTLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13},
		cliTLS: &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13},
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(e.srvTLS, rawQUICConfig())
	if err != nil {
		tr.Close()
		return err
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		// Closing the transport closes every connection, which ends
		// the goroutines serving them.
		cancel()
		ln.Close()
		tr.Close()
		wg.Wait()
	}()
	wg.Go(func() { e.accept(ctx, ln) })
	if err := benchproc.Announce(rawInfo{Addr: udp.LocalAddr().String()}); err != nil {
		return err
	}
	var m benchproc.PhaseMeter
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		if v, ok, err := m.Handle(cmd, args); ok {
			return v, err
		}
		switch {
		case cmd == "serve" && len(args) == 1:
			e.mu.Lock()
			e.serving = args[0]
			e.mu.Unlock()
			return struct{}{}, nil
		case cmd == "dial" && len(args) == 1:
			return struct{}{}, e.dial(ctx, args[0])
		case cmd == "fetch" && len(args) == 2:
			size, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil {
				return nil, err
			}
			return e.fetch(ctx, args[0], size)
		}
		return nil, fmt.Errorf("unknown command %q %q", cmd, args)
	})
	m.Stop()
	e.mu.Lock()
	if e.conn != nil {
		e.conn.CloseWithError(0, "")
		e.cliTr.Close()
	}
	e.mu.Unlock()
	return nil
}

// accept serves each connection's streams: each is one fetch of the
// file served.
func (e *rawEndpoint) accept(ctx context.Context, ln *quic.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		wg.Go(func() {
			var sw sync.WaitGroup
			defer sw.Wait()
			for {
				st, err := conn.AcceptStream(conn.Context())
				if err != nil {
					return
				}
				sw.Go(func() { e.serve(st) })
			}
		})
	}
}

func (e *rawEndpoint) serve(st *quic.Stream) {
	defer st.Close()
	var b [1]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		st.CancelWrite(1)
		return
	}
	e.mu.Lock()
	name := e.serving
	e.mu.Unlock()
	f, err := os.Open(name)
	if err != nil {
		st.CancelWrite(1)
		return
	}
	defer f.Close()
	if _, err := io.Copy(st, f); err != nil {
		st.CancelWrite(1)
	}
}

// dial opens this process's connection to the tier above, on a
// transport and UDP socket of its own.
func (e *rawEndpoint) dial(ctx context.Context, addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: udp}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := tr.Dial(dctx, ua, e.cliTLS, rawQUICConfig())
	if err != nil {
		tr.Close()
		return err
	}
	e.mu.Lock()
	e.conn, e.cliTr = conn, tr
	e.mu.Unlock()
	return nil
}

// fetch reads the file the tier above serves into out (size bytes):
// written as it arrives with its SHA-256 computed on the way, synced,
// renamed into place, the folder synced.
func (e *rawEndpoint) fetch(ctx context.Context, out string, size int64) (rawFetch, error) {
	e.mu.Lock()
	conn := e.conn
	e.mu.Unlock()
	if conn == nil {
		return rawFetch{}, errors.New("not dialled")
	}
	before := conn.ConnectionStats()
	t0 := time.Now()
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return rawFetch{}, err
	}
	if _, err := st.Write([]byte{1}); err != nil {
		return rawFetch{}, err
	}
	st.Close()
	part := out + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		st.CancelRead(1)
		return rawFetch{}, err
	}
	h := sha256.New()
	n, err := io.Copy(f, io.TeeReader(io.LimitReader(st, size), h))
	st.CancelRead(0)
	if err == nil && n != size {
		err = fmt.Errorf("got %d of %d bytes", n, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, out)
	}
	if err == nil {
		err = syncDir(filepath.Dir(out))
	}
	if err != nil {
		return rawFetch{}, err
	}
	took := time.Since(t0)
	after := conn.ConnectionStats()
	return rawFetch{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)), Took: took,
		Sent: after.BytesSent - before.BytesSent, Received: after.BytesReceived - before.BytesReceived}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
