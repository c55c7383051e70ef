package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxOwed bounds the telemetry ticks a device keeps while its window is
// full; they are sent as PUBACKs free the window. Ticks past it are
// counted as skipped: the offered rate is above what the broker absorbs.
const maxOwed = 8

// device is one simulated device: its identity, its session (when
// connected) and the state of that session that MQTT leaves to the client
// (packet ids, in-flight messages). Its connection's reader goroutine
// calls the handler methods; telemetry shards call tick.
type device struct {
	f         *Fleet
	n         int    // index in the fleet
	id        string // client id
	username  string
	password  string
	addr      string
	tls       *tls.Config
	dialer    *net.Dialer
	prefix    string // strata/<id>/
	telemetry string // strata/<id>/telemetry

	conn atomic.Pointer[conn] // the open session, read by the keepalive loop

	mu        sync.Mutex
	c         *conn
	closed    bool // the fleet is shutting down: no more sessions
	attempted bool // a first connection attempt was made
	failures  int  // consecutive failed attempts, for backoff
	retry     *time.Timer
	pending   map[uint16]pending
	nextID    uint16
	inflight  int // telemetry messages awaiting PUBACK
	owed      int
	seq       uint64
	subID     uint16
	// software holds what pretend installs put in place, by release
	// name; installing the install jobs in progress.
	software   map[string]simSoftware
	installing map[string]bool
}

// pending is a QoS 1 message awaiting PUBACK.
type pending struct {
	at  time.Time
	job string // "" for telemetry, else the job whose result this is
}

var _ handler = (*device)(nil)

// connect opens the device's session. It reports whether this was the
// device's first attempt (for the connect phase's accounting).
func (d *device) connect(ctx context.Context) (first bool, err error) {
	f := d.f
	d.mu.Lock()
	first, d.attempted = !d.attempted, true
	d.mu.Unlock()
	start := time.Now()
	f.stats.attempts.Add(1)
	c, present, err := dial(ctx, &dialConfig{
		dialer: d.dialer, addr: d.addr, tls: d.tls,
		clientID: d.id, username: d.username, password: d.password,
		clean: f.cfg.CleanSession, keepalive: f.cfg.Keepalive, timeout: f.cfg.ConnectTimeout,
	})
	if err != nil {
		return first, err
	}
	f.stats.connectLat.record(time.Since(start))
	if !present && !f.cfg.CleanSession {
		f.stats.sessionsAbsent.Add(1)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		c.close()
		return first, errClosedByClient
	}
	d.c, d.failures = c, 0
	d.conn.Store(c)
	d.pending, d.inflight, d.owed = nil, 0, 0
	var subID uint16
	if f.cfg.AnswerCommands {
		d.subID = 0
		subID = d.freeID()
		d.subID = subID
	}
	d.mu.Unlock()

	f.stats.connected.Add(1)
	f.stats.connects.Add(1)
	if !first {
		f.stats.reconnects.Add(1)
	}
	c.start(d, &f.readers)
	if subID != 0 {
		// Declare the function the device answers (QoS 0: the node applies
		// a connection's messages in order, so it is in place before the
		// subscription delivers queued commands).
		_ = c.publish(d.prefix+"inventory", d.inventory(), 0, 0)
		_ = c.subscribe(subID, d.prefix+"cmd/+", 1) // a failure closes c
	}
	return first, nil
}

// inventoryPayload declares the functions simulated devices offer: echo,
// answered with {"echo": args}, and install, which pretends (install.go).
var inventoryPayload = []byte(`{"simulated":true,"functions":[{"name":"echo","description":"answers {\"echo\": args}"},` +
	`{"name":"install","description":"pretends to install a signed release: downloads and verifies its artifact, installs nothing"}]}`)

// freeID returns a packet id in use neither by a pending message nor by
// the SUBSCRIBE. Call with d.mu held.
func (d *device) freeID() uint16 {
	for {
		d.nextID++
		if d.nextID == 0 || d.nextID == d.subID {
			continue
		}
		if _, used := d.pending[d.nextID]; !used {
			return d.nextID
		}
	}
}

// reserve takes a free packet id for p. Call with d.mu held.
func (d *device) reserve(p pending) uint16 {
	if d.pending == nil {
		d.pending = make(map[uint16]pending, 2)
	}
	id := d.freeID()
	d.pending[id] = p
	return id
}

// tick is one telemetry message due from this device.
func (d *device) tick() {
	f := d.f
	f.stats.due.Add(1)
	d.mu.Lock()
	c := d.c
	switch {
	case c == nil:
		d.mu.Unlock()
		f.stats.skipped.Add(1)
		return
	case f.cfg.QoS == 0:
		seq := d.seq
		d.seq++
		d.mu.Unlock()
		d.send(c, 0, 0, seq)
		return
	case d.inflight >= f.cfg.Inflight:
		if d.owed < maxOwed {
			d.owed++
		} else {
			f.stats.skipped.Add(1)
		}
		d.mu.Unlock()
		return
	}
	id, seq := d.reserveTelemetry()
	d.mu.Unlock()
	d.send(c, 1, id, seq)
}

// reserveTelemetry takes a packet id and sequence number for one QoS 1
// telemetry message. Call with d.mu held.
func (d *device) reserveTelemetry() (uint16, uint64) {
	id := d.reserve(pending{at: time.Now()})
	d.inflight++
	seq := d.seq
	d.seq++
	return id, seq
}

func (d *device) send(c *conn, qos byte, id uint16, seq uint64) {
	buf := getBuf()
	defer putBuf(buf)
	if gen := d.f.cfg.Payload; gen != nil {
		buf.Write(gen(buf.AvailableBuffer(), d.n, seq, time.Now()))
	} else {
		buf.Write(appendTelemetry(buf.AvailableBuffer(), seq, time.Now(), d.f.cfg.PayloadBytes))
	}
	d.f.stats.sent.Add(1)
	_ = c.publish(d.telemetry, buf.Bytes(), qos, id) // a failure closes c; onClose counts the loss
}

func (d *device) onPuback(c *conn, id uint16) {
	f := d.f
	now := time.Now()
	d.mu.Lock()
	p, ok := d.pending[id]
	if !ok || d.c != c {
		d.mu.Unlock()
		return
	}
	delete(d.pending, id)
	var nextID uint16
	var seq uint64
	if p.job == "" {
		d.inflight--
		if d.owed > 0 && f.telemetryOn.Load() {
			d.owed--
			nextID, seq = d.reserveTelemetry()
		}
	}
	d.mu.Unlock()
	if p.job != "" {
		f.jobs.answered(f, p.job, now)
	} else {
		f.stats.acked.Add(1)
		f.stats.pubackLat.record(now.Sub(p.at))
	}
	if nextID != 0 {
		d.send(c, 1, nextID, seq)
	}
}

func (d *device) onSuback(c *conn, id uint16, codes []byte) {
	if len(codes) == 0 || codes[0] == 0x80 {
		d.f.stats.subscribeFailed.Add(1)
	}
}

func (d *device) onClose(c *conn, cause error) {
	f := d.f
	d.mu.Lock()
	if d.c != c {
		d.mu.Unlock()
		return
	}
	d.c = nil
	d.conn.Store(nil)
	lost := d.inflight
	d.pending, d.inflight, d.owed = nil, 0, 0
	closed := d.closed
	d.mu.Unlock()
	f.stats.connected.Add(-1)
	f.stats.lost.Add(int64(lost))
	if errors.Is(cause, errClosedByClient) {
		return
	}
	f.stats.disconnects.Add(1)
	f.note(&f.stats.disconnectWhy, "disconnect", cause)
	if !closed && f.cfg.Reconnect {
		d.retryLater()
	}
}

// retryLater queues the device for another connection attempt after an
// exponential backoff with jitter (0.5 s doubling to 30 s).
func (d *device) retryLater() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	backoff := min(30*time.Second, 500*time.Millisecond<<min(d.failures, 6))
	d.failures++
	backoff = backoff/2 + rand.N(backoff/2+1)
	d.retry = time.AfterFunc(backoff, func() { d.f.enqueue(d) })
}

// shutdown ends the device's session and stops any retry; the fleet is
// stopping.
func (d *device) shutdown() {
	d.mu.Lock()
	d.closed = true
	c := d.c
	if d.retry != nil {
		d.retry.Stop()
	}
	d.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// unacked returns the telemetry messages awaiting PUBACK.
func (d *device) unacked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight
}
