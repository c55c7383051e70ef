package sim

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The client is a minimal MQTT 3.1.1 client built for density: one reader
// goroutine per connection, a small read buffer, no write buffer (encoding
// uses pooled buffers and writes happen under a mutex), no timers (keepalive
// is driven by one fleet-wide goroutine, see keepalive.go). It knows no
// session state beyond the socket: packet ids and in-flight windows belong
// to the device that owns the connection.

// readBufSize is the bufio size per plain TCP connection: enough for acks
// and small commands; larger packets are read through it in several steps.
const readBufSize = 1024

// writeTimeout bounds one write, so a stuck broker cannot block a
// telemetry shard for ever; the connection is closed when it passes.
const writeTimeout = 10 * time.Second

// errClosedByClient is the cause of a connection the simulator closed.
var errClosedByClient = errors.New("closed by client")

// handler receives what a connection's reader goroutine reads. Its methods
// run on that goroutine, one at a time, in the order packets arrive;
// onClose is the last call.
type handler interface {
	onPublish(c *conn, pk *packets.Packet)
	onPuback(c *conn, id uint16)
	onSuback(c *conn, id uint16, codes []byte)
	onClose(c *conn, cause error)
}

// dialConfig says how to open one session.
type dialConfig struct {
	dialer    *net.Dialer
	addr      string      // HOST:PORT
	tls       *tls.Config // nil for plain TCP
	clientID  string
	username  string
	password  string
	clean     bool
	keepalive time.Duration
	timeout   time.Duration // dial + TLS handshake + CONNACK
}

// conn is one MQTT session's connection.
type conn struct {
	nc  net.Conn
	rd  byteReader // bufio over TCP; the TLS connection itself, which buffers
	wmu sync.Mutex

	lastWrite atomic.Int64 // unix nanoseconds of the last write
	pingSent  atomic.Int64 // unix nanoseconds of an unanswered PINGREQ, or 0
	closing   atomic.Bool  // close was asked by the simulator

	closeOnce sync.Once
	cause     error // why the connection ended; written once, in shut
	done      chan struct{}
}

// byteReader is what readPacket reads from.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// tlsReader reads bytes straight from a TLS connection, which holds the
// decrypted record: a bufio.Reader on top would be a second copy of it.
type tlsReader struct {
	c   *tls.Conn
	one [1]byte
}

func (r *tlsReader) Read(p []byte) (int, error) { return r.c.Read(p) }

func (r *tlsReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(r.c, r.one[:]); err != nil {
		return 0, err
	}
	return r.one[0], nil
}

// stageError says at which step opening a session failed.
type stageError struct {
	stage string // "dial", "tls" or "connack"
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// dial opens a session: TCP (and TLS) connection, CONNECT, CONNACK. The
// returned conn has no reader yet; call start. sessionPresent is the
// CONNACK flag.
func dial(ctx context.Context, dc *dialConfig) (c *conn, sessionPresent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, dc.timeout)
	defer cancel()
	nc, err := dc.dialer.DialContext(ctx, "tcp", dc.addr)
	if err != nil {
		return nil, false, &stageError{"dial", err}
	}
	defer func() {
		if err != nil {
			nc.Close()
		}
	}()
	if dc.tls != nil {
		tc := tls.Client(nc, dc.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, false, &stageError{"tls", err}
		}
		nc = tc
	}
	// The context ends the CONNECT/CONNACK exchange through the deadline.
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c = &conn{nc: nc, done: make(chan struct{})}
	if tc, ok := nc.(*tls.Conn); ok {
		c.rd = &tlsReader{c: tc}
	} else {
		c.rd = bufio.NewReaderSize(nc, readBufSize)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: dc.clientID,
			Keepalive:        uint16(dc.keepalive / time.Second),
			Clean:            dc.clean,
		},
	}
	if dc.username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(dc.username)
	}
	if dc.password != "" {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(dc.password)
	}
	if err := c.writeNoDeadline(&pk); err != nil {
		return nil, false, &stageError{"connack", err}
	}
	fh, body, err := readPacket(c.rd)
	if err != nil {
		return nil, false, &stageError{"connack", err}
	}
	if fh.Type != packets.Connack {
		return nil, false, &stageError{"connack", fmt.Errorf("%w: %s before CONNACK", errUnexpectedPacket, packets.PacketNames[fh.Type])}
	}
	ack, err := decode(fh, body)
	if err != nil {
		return nil, false, &stageError{"connack", err}
	}
	if ack.ReasonCode != 0 {
		return nil, false, &ConnackError{Code: ack.ReasonCode}
	}
	if !stop() && ctx.Err() != nil {
		return nil, false, &stageError{"connack", ctx.Err()}
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, false, &stageError{"connack", err}
	}
	return c, ack.SessionPresent, nil
}

// start runs the reader goroutine, counted in wg, which feeds h.
func (c *conn) start(h handler, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.readLoop(h)
	}()
}

// readLoop reads packets until the connection fails. It keeps its own
// frame small (the decoded packet lives in handle's), so that the stack of
// a goroutine parked in Read stays small enough for the runtime to shrink
// it: at 100,000 idle sessions, stacks are most of the memory.
func (c *conn) readLoop(h handler) {
	defer close(c.done)
	var err error
	for err == nil {
		var fh packets.FixedHeader
		var body []byte
		if fh, body, err = readPacket(c.rd); err == nil {
			err = c.handle(h, fh, body)
		}
	}
	c.shut(err)
	h.onClose(c, c.cause)
}

// handle decodes one packet and passes it to h.
//
//go:noinline
func (c *conn) handle(h handler, fh packets.FixedHeader, body []byte) error {
	pk, err := decode(fh, body)
	if err != nil {
		return err
	}
	switch fh.Type {
	case packets.Publish:
		h.onPublish(c, &pk)
		if fh.Qos == 1 {
			return c.write(&packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Puback},
				PacketID:    pk.PacketID,
			})
		}
	case packets.Puback:
		h.onPuback(c, pk.PacketID)
	case packets.Suback:
		h.onSuback(c, pk.PacketID, pk.ReasonCodes)
	case packets.Pingresp:
		c.pingSent.Store(0)
	default: // a second CONNACK
		return fmt.Errorf("%w: %s", errUnexpectedPacket, packets.PacketNames[fh.Type])
	}
	return nil
}

// shut closes the socket once, remembering why; a close the simulator
// asked for is recorded as errClosedByClient whatever error follows it.
func (c *conn) shut(err error) {
	c.closeOnce.Do(func() {
		if c.closing.Load() || err == nil {
			err = errClosedByClient
		}
		c.cause = err
		c.nc.Close()
	})
}

// write encodes pk and writes it under the write mutex with a deadline.
// A failed write closes the connection.
func (c *conn) write(pk *packets.Packet) error {
	buf := getBuf()
	defer putBuf(buf)
	if err := encode(pk, buf); err != nil {
		return err
	}
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(buf.Bytes())
	c.wmu.Unlock()
	if err != nil {
		c.shut(err)
		return err
	}
	c.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// writeNoDeadline writes pk leaving the connection's deadline alone (the
// handshake sets its own).
func (c *conn) writeNoDeadline(pk *packets.Packet) error {
	buf := getBuf()
	defer putBuf(buf)
	if err := encode(pk, buf); err != nil {
		return err
	}
	_, err := c.nc.Write(buf.Bytes())
	c.lastWrite.Store(time.Now().UnixNano())
	return err
}

// publish sends a PUBLISH; id must be non-zero for QoS 1.
func (c *conn) publish(topic string, payload []byte, qos byte, id uint16) error {
	return c.write(&packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		PacketID:    id,
		Payload:     payload,
	})
}

// subscribe sends a SUBSCRIBE for one filter.
func (c *conn) subscribe(id uint16, filter string, qos byte) error {
	return c.write(&packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    id,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
}

// ping sends a PINGREQ and remembers when, unless one is outstanding.
func (c *conn) ping(now time.Time) error {
	if !c.pingSent.CompareAndSwap(0, now.UnixNano()) {
		return nil
	}
	return c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
}

// close sends DISCONNECT (best effort) and closes the socket; the reader
// goroutine then ends with errClosedByClient. Safe to call more than once.
func (c *conn) close() {
	if c.closing.Swap(true) {
		return
	}
	_ = c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	c.shut(errClosedByClient)
}
