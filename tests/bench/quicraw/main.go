// Command quicraw measures the raw throughput of one quic-go stream on
// loopback: the ceiling for federation catch-up, which ships log entries
// to a lagging node as length-prefixed frames on one stream.
//
//	go run ./tests/bench/quicraw -total 120000000 -frame-bytes 450560,120
//
// For each frame size, a client dials an in-process server over QUIC
// (TLS 1.3, ALPN "strata-fed/1", each side on its own quic.Transport and
// UDP socket), opens one stream and writes -total bytes of frames (a
// 4-byte big-endian length, then the payload) with one Write per frame;
// the server reads each frame with io.ReadFull and discards it. The time
// runs from the first Write to the server's last read. The figures are
// MB/s (10^6 bytes) of payload, frames/s and the equivalent entries/s at
// -entry-bytes per entry, with the process's CPU time per payload GB.
//
// Baseline, in the same run: the same frames over TLS 1.3 on a loopback
// TCP connection (the kernel does the transport), and over plain TCP. A
// quic-go stream buffers what is written and packs it into packets on its
// own, so the TCP writers go through a 64 KiB bufio.Writer to batch small
// frames the same way (frames larger than that pass straight through), and
// the TCP reader through a 64 KiB bufio.Reader, as a quic-go stream reads
// from memory. For frames under 64 KiB, "quic+bufio" is the QUIC stream
// behind the same bufio.Writer: what a sender batching its small frames
// would see.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

const alpn = "strata-fed/1"

func main() {
	frames := flag.String("frame-bytes", "450560,120", "comma-separated payload sizes per frame, one measurement each (450560 ≈ a 4096-entry batch of 110 B entries)")
	total := flag.Int64("total", 120_000_000, "payload bytes per measurement (1,000,000 entries of 120 B)")
	entry := flag.Int("entry-bytes", 120, "bytes per log entry, to express the rate in entries/s")
	count := flag.Int("count", 3, "measurements per frame size and transport")
	window := flag.Int("window-mb", 16, "maximum QUIC stream receive window, MiB (connection window: 1.5×)")
	baseline := flag.Bool("baseline", true, "also measure TLS over TCP and plain TCP")
	flag.Parse()
	var sizes []int
	for _, s := range strings.Split(*frames, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "quicraw: bad -frame-bytes %q\n", s)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	if err := run(sizes, *total, *entry, *count, uint64(*window)<<20, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "quicraw:", err)
		os.Exit(1)
	}
}

// quicConfig is the configuration of a federation link: keep-alives
// below the idle timeout, and receive windows of several MB so one
// stream is not held back by flow control on a fast link.
func quicConfig(maxWindow uint64) *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:                10 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		InitialStreamReceiveWindow:     maxWindow / 4,
		MaxStreamReceiveWindow:         maxWindow,
		InitialConnectionReceiveWindow: maxWindow / 4 * 3 / 2,
		MaxConnectionReceiveWindow:     maxWindow * 3 / 2,
	}
}

// result is one measurement.
type result struct {
	bytes, frames int64
	elapsed, cpu  time.Duration
	note          string // transport details, if any
}

func (r result) line(entry int) string {
	mbps := float64(r.bytes) / r.elapsed.Seconds() / 1e6
	return fmt.Sprintf("%8.1f MB/s  %10.0f frames/s  %10.0f entries/s  %5.2f CPU-s/GB  (%d MB in %s)",
		mbps, float64(r.frames)/r.elapsed.Seconds(), float64(r.bytes)/float64(entry)/r.elapsed.Seconds(),
		r.cpu.Seconds()/(float64(r.bytes)/1e9), r.bytes/1e6, r.elapsed.Round(time.Millisecond)) + r.note
}

func run(sizes []int, total int64, entry, count int, maxWindow uint64, baseline bool) error {
	serverTLS, clientTLS, err := selfSigned()
	if err != nil {
		return err
	}
	type transport struct {
		name    string
		measure func(frame int) (result, error)
	}
	ts := []transport{{"quic", func(frame int) (result, error) {
		return measureQUIC(serverTLS, clientTLS, quicConfig(maxWindow), frame, total, false)
	}}, {"quic+bufio", func(frame int) (result, error) {
		return measureQUIC(serverTLS, clientTLS, quicConfig(maxWindow), frame, total, true)
	}}}
	if baseline {
		ts = append(ts,
			transport{"tls/tcp", func(frame int) (result, error) { return measureTCP(serverTLS, clientTLS, frame, total) }},
			transport{"tcp", func(frame int) (result, error) { return measureTCP(nil, nil, frame, total) }})
	}
	fmt.Printf("one stream, %d MB of payload per run, entry %d B, QUIC stream window ≤ %d MiB\n", total/1e6, entry, maxWindow>>20)
	for _, frame := range sizes {
		fmt.Printf("frames of %d B (+4 B length):\n", frame)
		for _, tr := range ts {
			if tr.name == "quic+bufio" && frame >= 64<<10 {
				continue // bufio passes large writes straight through
			}
			for i := range count {
				r, err := tr.measure(frame)
				if err != nil {
					return fmt.Errorf("%s, frames of %d B: %w", tr.name, frame, err)
				}
				fmt.Printf("  %-10s run %d: %s\n", tr.name, i+1, r.line(entry))
			}
		}
	}
	return nil
}

// measureQUIC sends total bytes of frames on one stream of a fresh
// connection and returns when the server has read them all.
func measureQUIC(serverTLS, clientTLS *tls.Config, conf *quic.Config, frame int, total int64, buffered bool) (result, error) {
	srvConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return result{}, err
	}
	srvTr := &quic.Transport{Conn: srvConn}
	defer srvConn.Close()
	defer srvTr.Close()
	ln, err := srvTr.Listen(serverTLS, conf)
	if err != nil {
		return result{}, err
	}
	defer ln.Close()
	cliConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return result{}, err
	}
	cliTr := &quic.Transport{Conn: cliConn}
	defer cliConn.Close()
	defer cliTr.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	done := make(chan sinkResult, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			done <- sinkResult{err: err}
			return
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			done <- sinkResult{err: err}
			return
		}
		done <- sink(str)
	}()
	conn, err := cliTr.Dial(ctx, srvConn.LocalAddr(), clientTLS, conf)
	if err != nil {
		return result{}, err
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return result{}, err
	}
	reportSetup.Do(func() {
		fmt.Printf("QUIC: GSO %v, UDP receive buffer %s, send buffer %s\n", conn.ConnectionState().GSO,
			sockBuf(cliConn, syscall.SO_RCVBUF), sockBuf(cliConn, syscall.SO_SNDBUF))
	})
	var w io.WriteCloser = str
	if buffered {
		w = bufferedStream{bufio.NewWriterSize(str, 64<<10), str}
	}
	r, err := measure(w, done, frame, total)
	if err == nil {
		st := conn.ConnectionStats()
		r.note = fmt.Sprintf("  [client sent %d packets (%d B avg), %d lost, sRTT %s]",
			st.PacketsSent, st.BytesSent/max(st.PacketsSent, 1), st.PacketsLost, st.SmoothedRTT.Round(time.Microsecond))
	}
	return r, err
}

// bufferedStream batches writes to a QUIC stream; Close flushes them and
// closes the stream's sending side.
type bufferedStream struct {
	*bufio.Writer
	str *quic.Stream
}

func (b bufferedStream) Close() error {
	if err := b.Flush(); err != nil {
		return err
	}
	return b.str.Close()
}

// measureTCP is the baseline: the same frames on one loopback TCP
// connection, with TLS when the configurations are given.
func measureTCP(serverTLS, clientTLS *tls.Config, frame int, total int64) (result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	defer ln.Close()
	done := make(chan sinkResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- sinkResult{err: err}
			return
		}
		defer c.Close()
		if serverTLS != nil {
			c = tls.Server(c, serverTLS)
		}
		done <- sink(bufio.NewReaderSize(c, 64<<10))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	if clientTLS != nil {
		tc := tls.Client(c, clientTLS)
		if err := tc.Handshake(); err != nil {
			return result{}, err
		}
		c = tc
	}
	return measure(bufferedConn{bufio.NewWriterSize(c, 64<<10), c}, done, frame, total)
}

// bufferedConn batches writes to a connection; Close flushes them and
// closes the connection's writing side.
type bufferedConn struct {
	*bufio.Writer
	c net.Conn
}

func (b bufferedConn) Close() error {
	if err := b.Flush(); err != nil {
		return err
	}
	switch c := b.c.(type) {
	case *tls.Conn:
		return c.CloseWrite()
	case *net.TCPConn:
		return c.CloseWrite()
	}
	return b.c.Close()
}

// measure writes the frames on w and waits for the sink's count.
func measure(w io.WriteCloser, done <-chan sinkResult, frame int, total int64) (result, error) {
	buf := make([]byte, 4+frame)
	rand.Read(buf[4:])
	binary.BigEndian.PutUint32(buf, uint32(frame))
	n := (total + int64(frame) - 1) / int64(frame)
	cpu0 := cpuTime()
	start := time.Now()
	for range n {
		if _, err := w.Write(buf); err != nil {
			return result{}, fmt.Errorf("write: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return result{}, err
	}
	s := <-done
	elapsed := time.Since(start)
	if s.err != nil {
		return result{}, fmt.Errorf("read: %w", s.err)
	}
	if s.frames != n {
		return result{}, fmt.Errorf("server read %d frames, want %d", s.frames, n)
	}
	return result{bytes: s.bytes, frames: s.frames, elapsed: elapsed, cpu: cpuTime() - cpu0}, nil
}

type sinkResult struct {
	bytes, frames int64
	err           error
}

// sink reads length-prefixed frames until EOF and discards them.
func sink(r io.Reader) sinkResult {
	var s sinkResult
	var hdr [4]byte
	buf := make([]byte, 1<<20)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
			return s
		}
		size := int(binary.BigEndian.Uint32(hdr[:]))
		if size > len(buf) {
			buf = make([]byte, size)
		}
		if _, err := io.ReadFull(r, buf[:size]); err != nil {
			s.err = err
			return s
		}
		s.bytes += int64(size)
		s.frames++
	}
}

var reportSetup sync.Once

// sockBuf is the kernel's size of a socket buffer (as getsockopt reports
// it: twice what was set).
func sockBuf(c *net.UDPConn, opt int) string {
	rc, err := c.SyscallConn()
	if err != nil {
		return err.Error()
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) { n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt) }); err != nil {
		return err.Error()
	}
	if serr != nil {
		return serr.Error()
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfSigned returns TLS 1.3 configurations around a fresh self-signed
// ECDSA P-256 certificate.
func selfSigned() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "quicraw"},
		DNSNames:     []string{"quicraw"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, ServerName: "quicraw", NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	return server, client, nil
}
