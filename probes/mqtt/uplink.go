package mqtt

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/model"
)

// The uplink pipeline takes device messages from OnPublish to the tree and
// sends their acknowledgements.
//
// OnPublish runs on the connection's read goroutine: it decodes the
// message and queues it on its device's shard, then returns without mochi
// acknowledging anything, so the connection can read its next message.
// Each shard's committer takes everything queued and proposes the
// mutations of all of it in one Model.Apply (many messages of many
// connections folded into one proposal), then hands each message's outcome
// to its connection. A connection's ack writer sends the PUBACKs.
//
// Invariants:
//
//   - A PUBACK leaves only once the message's outcome is known: durable,
//     refused (bad payload, another tenant's context), or not stored. A
//     success PUBACK therefore means durable, and a message the store did
//     not take is never acknowledged as a success (MQTT 5: reason 0x83;
//     3.1.1: the connection is closed without one and acknowledges
//     nothing more).
//   - A connection's messages are applied and acknowledged in the order
//     they arrived: all of a device's messages go through one shard (the
//     device id picks it, so a session taken over by a reconnect shares it
//     with its successor), a shard applies one flush after another, and a
//     connection has at most one ack writer, which sends outcomes in the
//     order the shard produced them.
//   - Bounded: at most uplinkWindow messages of a connection await their
//     acknowledgement; past that OnPublish waits, so the broker stops
//     reading the socket. At most maxQueued messages of all connections
//     wait for the store. At most Config.IngestSlots connections read and
//     decode at once (gate.go); a connection that waits here gives its
//     slot back first.
//   - A refused message costs only its own device: a folded proposal the
//     state machine refuses is applied again device by device, and a
//     device refused once has its messages proposed on their own from
//     then on.
const (
	uplinkWindow   = 32
	maxQueued      = 16384
	flushMutations = 4096
	uplinkShards   = 16
	inlineAcks     = 64 // at most this many PUBACKs are written by the committer
)

// verdict is a message's outcome.
type verdict uint8

const (
	stored         verdict = iota // durable
	refusedPayload                // bad payload: MQTT 5 0x99, 3.1.1 acknowledged and dropped
	refusedForeign                // another tenant's context: MQTT 5 0x87, 3.1.1 acknowledged and dropped
	notStored                     // the store failed: MQTT 5 0x83, 3.1.1 disconnected without PUBACK
	refusedRevoked                // the device's credentials stopped working: MQTT 5 0x87, 3.1.1 nothing (closed)
)

// item is one queued message.
type item struct {
	up      *uplink
	muts    []model.Mutation
	one     [1]model.Mutation // muts, when a message is one mutation
	kind    topicKind
	qos     byte
	id      uint16 // packet id of a QoS 1 message
	topic   string
	decided bool // refused before queueing; v holds the verdict
	v       verdict
	err     error // the apply's error, when not stored
}

// uplink is one connection's side of the pipeline.
type uplink struct {
	h      *hook
	cl     *mochi.Client
	id     string
	path   model.Path // DevicePath(id)
	tenant string
	epoch  uint64 // the device's revocation count when it authenticated (hook.epoch)
	v5     bool
	sh     *shard
	window chan struct{} // one token per message queued and not yet acknowledged
	gc     *gatedConn    // the connection under the ingest gate; nil: ungated
	names  names         // telemetry variable names seen (reader only)
	// sock is the connection's socket (nil: unknown); raw is the same
	// when the connection is plain (not TLS), for writes tried without
	// waiting (ack), else nil.
	sock, raw syscall.RawConn

	isolated atomic.Bool // refused once: never folded with other devices

	mu      sync.Mutex
	ready   []outcome     // to acknowledge, in arrival order
	spare   []outcome     // the writer's previous slice, for reuse
	writing bool          // an ack writer (goroutine, or ack inline) is running
	pending int           // messages queued and not yet acknowledged (or dropped)
	idle    chan struct{} // closed when pending drops to zero, if someone waits

	dead      bool   // ack writer only: acknowledge nothing more on this connection
	inlineBuf []byte // ack only
}

type outcome struct {
	id  uint16
	qos byte
	v   verdict
}

func newUplink(h *hook, cl *mochi.Client, tenant string, epoch uint64) *uplink {
	u := &uplink{
		h: h, cl: cl, id: cl.ID, path: DevicePath(cl.ID), tenant: tenant, epoch: epoch, v5: cl.Properties.ProtocolVersion == 5,
		sh: h.b.shardOf(cl.ID), window: make(chan struct{}, uplinkWindow), gc: gateOf(cl.Net.Conn), names: names{},
	}
	var plain bool
	if u.sock, plain = rawSocket(cl.Net.Conn); plain {
		u.raw = u.sock
	}
	return u
}

// enter takes room for one message in the connection's window and in the
// broker's queue, waiting while either is full. It fails only when the
// broker is stopping.
func (u *uplink) enter() bool {
	b := u.h.b
	if !u.take(u.window) {
		return false
	}
	if !u.take(b.queued) {
		<-u.window
		return false
	}
	u.mu.Lock()
	u.pending++
	u.mu.Unlock()
	return true
}

// take puts a token in ch, waiting while it is full (without the
// connection's ingest slot). It fails only when the broker is stopping.
func (u *uplink) take(ch chan struct{}) bool {
	select {
	case ch <- struct{}{}:
		return true
	default:
	}
	u.gc.yield()
	select {
	case ch <- struct{}{}:
		return true
	case <-u.h.b.stopped:
		return false
	}
}

// drain waits until every message queued so far has been acknowledged
// (or dropped), so that what follows is handled after all of it. Called
// on the read goroutine; the committers and ack writers always progress.
func (u *uplink) drain() {
	u.gc.yield()
	u.mu.Lock()
	for u.pending > 0 {
		if u.idle == nil {
			u.idle = make(chan struct{})
		}
		ch := u.idle
		u.mu.Unlock()
		<-ch
		u.mu.Lock()
	}
	u.mu.Unlock()
}

// done records a message's outcome; ack sends it.
func (u *uplink) done(it *item) {
	u.mu.Lock()
	if it.qos == 0 {
		u.settleLocked(1)
		u.mu.Unlock()
		<-u.window
		return
	}
	u.ready = append(u.ready, outcome{id: it.id, qos: it.qos, v: it.v})
	u.mu.Unlock()
}

// ack sends the outcomes done recorded, unless u's ack writer is running
// (it sends them). Called by u's shard only, after a flush. The usual
// case — a few plain PUBACKs to a connection whose socket can take them
// now — is written here, on the committer, so that a commit does not
// start one goroutine per connection it answers (hundreds, all runnable
// at once, ahead of the operator API in the run queue). Otherwise, or if
// the write could wait (the socket is full, or mochi is writing to it),
// u's ack writer goroutine sends them. On a plain connection the write
// is tried once without waiting, and what the socket did not take is
// written by the ack writer before anything else (it keeps the client's
// lock until then); on TLS the socket is asked first (writable).
func (u *uplink) ack() {
	u.mu.Lock()
	if u.writing || len(u.ready) == 0 {
		u.mu.Unlock()
		return
	}
	u.writing = true
	acks := u.ready
	inline := len(acks) <= inlineAcks && !u.dead
	for _, a := range acks {
		inline = inline && plainAck(u.v5, a.v)
	}
	if inline {
		u.ready = u.spare[:0]
	}
	u.mu.Unlock()
	if inline && u.cl.TryLock() {
		if u.raw != nil {
			u.inlineBuf = u.inlineBuf[:0]
			for _, a := range acks {
				u.inlineBuf = append(u.inlineBuf, packets.Puback<<4, 2, byte(a.id>>8), byte(a.id))
			}
			n, err := tryWrite(u.raw, u.inlineBuf)
			if err == nil && n < len(u.inlineBuf) {
				rest := append([]byte(nil), u.inlineBuf[n:]...)
				u.h.b.writers.Go(func() { u.writeRest(rest, acks) })
				return
			}
			u.cl.Unlock()
			if err != nil {
				u.dead = true // the read loop sees the broken connection too
			}
			u.finished(acks)
			u.mu.Lock()
			if len(u.ready) == 0 { // nothing came meanwhile: the shard is the only producer
				u.writing = false
				u.mu.Unlock()
				return
			}
			u.mu.Unlock()
			u.h.b.writers.Go(u.writeAcks)
			return
		}
		if u.sock != nil && writableRaw(u.sock) {
			u.inlineBuf = u.inlineBuf[:0]
			for _, a := range acks {
				u.inlineBuf = append(u.inlineBuf, packets.Puback<<4, 2, byte(a.id>>8), byte(a.id))
			}
			_, err := u.cl.Net.Conn.Write(u.inlineBuf)
			u.cl.Unlock()
			if err != nil {
				u.dead = true // the read loop sees the broken connection too
			}
			u.finished(acks)
			u.mu.Lock()
			if len(u.ready) == 0 { // nothing came meanwhile: the shard is the only producer
				u.writing = false
				u.mu.Unlock()
				return
			}
			u.mu.Unlock()
			u.h.b.writers.Go(u.writeAcks)
			return
		}
		u.cl.Unlock()
	}
	if inline { // put them back, in front
		u.mu.Lock()
		u.ready = append(acks, u.ready...)
		u.mu.Unlock()
	}
	u.h.b.writers.Go(u.writeAcks)
}

// writeRest is the ack writer started by ack when the socket took only
// part of acks' PUBACKs: it writes the rest, still holding the client's
// lock that ack took (so nothing comes between), then goes on as
// writeAcks.
func (u *uplink) writeRest(rest []byte, acks []outcome) {
	_, err := u.cl.Net.Conn.Write(rest)
	u.cl.Unlock()
	if err != nil {
		u.dead = true
	}
	u.finished(acks)
	u.writeAcks()
}

// finished counts acks as sent; the caller is the only ack writer.
func (u *uplink) finished(acks []outcome) {
	u.mu.Lock()
	u.settleLocked(len(acks))
	u.spare = acks[:0]
	u.mu.Unlock()
	for range acks {
		<-u.window
	}
}

// plainAck reports whether verdict v is acknowledged with a plain
// success PUBACK (remaining length 2) in u's protocol version.
func plainAck(v5 bool, v verdict) bool {
	return v == stored || (!v5 && v != notStored && v != refusedRevoked)
}

// settleLocked counts n messages as finished; the caller holds u.mu.
func (u *uplink) settleLocked(n int) {
	u.pending -= n
	if u.pending == 0 && u.idle != nil {
		close(u.idle)
		u.idle = nil
	}
}

// writeAcks is the connection's ack writer goroutine: it sends ready
// outcomes in order until none is left.
func (u *uplink) writeAcks() {
	var buf []byte
	for {
		u.mu.Lock()
		acks := u.ready
		if len(acks) == 0 {
			u.writing = false
			u.mu.Unlock()
			return
		}
		u.ready = u.spare[:0]
		u.mu.Unlock()

		buf = u.send(acks, buf[:0])
		u.finished(acks)
	}
}

// send writes the acknowledgements of acks, batching plain PUBACKs into
// one write.
func (u *uplink) send(acks []outcome, buf []byte) []byte {
	flush := func() {
		if len(buf) == 0 || u.dead {
			return
		}
		u.cl.Lock()
		_, err := u.cl.Net.Conn.Write(buf)
		u.cl.Unlock()
		buf = buf[:0]
		if err != nil {
			u.dead = true // the read loop sees the broken connection too
		}
	}
	for _, a := range acks {
		if u.dead {
			break
		}
		var code packets.Code
		switch {
		case !u.v5 && a.v == refusedRevoked: // being closed: acknowledge nothing
			flush()
			u.dead = true
			continue
		case a.v == stored || (!u.v5 && a.v != notStored):
			// PUBACK, remaining length 2: success in both versions.
			buf = append(buf, packets.Puback<<4, 2, byte(a.id>>8), byte(a.id))
			continue
		case !u.v5: // not stored, MQTT 3.1.1: no way to refuse but to close
			flush()
			u.dead = true
			u.h.b.srv.DisconnectClient(u.cl, packets.ErrServerUnavailable)
			continue
		case a.v == refusedPayload:
			code = packets.ErrPayloadFormatInvalid
		case a.v == refusedForeign, a.v == refusedRevoked:
			code = packets.ErrNotAuthorized
		default:
			code = packets.ErrImplementationSpecificError
		}
		flush()
		err := u.cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    a.id,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: code.Reason},
		})
		if err != nil {
			u.dead = true
		}
	}
	flush()
	return buf
}

// shard is one committer: it applies the queued messages of its devices,
// one flush after another.
type shard struct {
	b *Broker
	// gate is held by a flush from checking that its devices were not
	// revoked until its writes are done, and by a command result from
	// its check to its write; a revocation takes it once, after changing
	// the device's epoch, to wait for writes that checked before.
	gate  sync.Mutex
	mu    sync.Mutex
	queue []*item
	spare []*item
	fold  []model.Mutation
	ups   []*uplink // flush's scratch: connections to acknowledge
	wake  chan struct{}
}

func (s *shard) push(it *item) {
	s.mu.Lock()
	s.queue = append(s.queue, it)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the committer; it returns once quit is closed and the queue is
// empty. Nothing is queued after quit: the broker closes it only when no
// connection is left.
func (s *shard) run(quit <-chan struct{}) {
	for {
		for s.flushQueued() {
		}
		select {
		case <-s.wake:
		case <-quit:
			for s.flushQueued() {
			}
			return
		}
	}
}

// flushQueued applies what is queued (up to flushMutations mutations, and
// at least one message) and reports whether there was anything.
func (s *shard) flushQueued() bool {
	s.mu.Lock()
	n, muts := 0, 0
	for n < len(s.queue) && (n == 0 || muts+len(s.queue[n].muts) <= flushMutations) {
		muts += len(s.queue[n].muts)
		n++
	}
	var items []*item
	if n == len(s.queue) {
		items, s.queue = s.queue, s.spare[:0]
	} else {
		items = append(s.spare[:0], s.queue[:n]...)
		s.queue = append(s.queue[:0], s.queue[n:]...)
	}
	s.mu.Unlock()
	if len(items) == 0 {
		s.spare = items
		return false
	}
	s.flush(items)
	clear(items)
	s.spare = items[:0]
	return true
}

// flush applies items and hands out their outcomes, in order. Messages
// of connections that authenticated before their device's last
// revocation are refused, never written.
func (s *shard) flush(items []*item) {
	s.gate.Lock()
	s.refuseRevoked(items)
	s.apply(items)
	s.gate.Unlock()
	h := s.b.hook
	ups := s.ups[:0]
	for _, it := range items {
		if !it.decided {
			it.v = h.judge(it.up, it.kind, it.topic, it.err)
		}
		it.up.done(it)
		if it.qos > 0 && (len(ups) == 0 || ups[len(ups)-1] != it.up) {
			ups = append(ups, it.up) // ack skips those seen already
		}
		<-s.b.queued
	}
	for _, u := range ups {
		u.ack()
	}
	clear(ups)
	s.ups = ups[:0]
}

// refuseRevoked decides the items of connections whose device was
// revoked since they authenticated. The caller holds s.gate.
func (s *shard) refuseRevoked(items []*item) {
	h := s.b.hook
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, it := range items {
		if !it.decided && !h.liveLocked(it.up.id, it.up.epoch) {
			it.decided, it.v = true, refusedRevoked
			s.b.metrics.revokedWrites.Inc()
		}
	}
}

// apply writes the items not decided yet, setting each one's err.
func (s *shard) apply(items []*item) {
	fold := s.fold[:0]
	var folded, alone [][]*item // device groups
	groups := map[*uplink]int{}
	for _, it := range items {
		if it.decided || len(it.muts) == 0 {
			continue
		}
		if it.up.isolated.Load() {
			i, ok := groups[it.up]
			if !ok {
				i = len(alone)
				groups[it.up] = i
				alone = append(alone, nil)
			}
			alone[i] = append(alone[i], it)
			continue
		}
		fold = append(fold, it.muts...)
	}
	var wg sync.WaitGroup
	for _, g := range alone {
		wg.Go(func() { s.applyGroup(g) })
	}
	if len(fold) > 0 {
		err := s.write(fold...)
		switch {
		case err == nil:
		case refusal(err):
			// One device spoiled the proposal: apply device by device.
			clear(groups)
			for _, it := range items {
				if it.decided || len(it.muts) == 0 || it.up.isolated.Load() {
					continue
				}
				i, ok := groups[it.up]
				if !ok {
					i = len(folded)
					groups[it.up] = i
					folded = append(folded, nil)
				}
				folded[i] = append(folded[i], it)
			}
			for _, g := range folded {
				wg.Go(func() { s.applyGroup(g) })
			}
		default:
			for _, it := range items {
				if !it.decided && len(it.muts) > 0 && !it.up.isolated.Load() {
					it.err = err
				}
			}
		}
	}
	clear(fold)
	s.fold = fold[:0]
	wg.Wait()
}

// applyGroup applies one device's messages together, then one by one if
// the state machine refuses them together; a refused device is isolated.
func (s *shard) applyGroup(g []*item) {
	var muts []model.Mutation
	for _, it := range g {
		muts = append(muts, it.muts...)
	}
	err := s.write(muts...)
	if err == nil || !refusal(err) {
		for _, it := range g {
			it.err = err
		}
		return
	}
	g[0].up.isolated.Store(true)
	for _, it := range g {
		it.err = s.write(it.muts...)
	}
}

func (s *shard) write(muts ...model.Mutation) error {
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	_, err := s.b.cfg.Tree.Apply(ctx, muts...)
	return err
}

// refusal reports whether err refuses the mutations themselves (as
// opposed to the store failing).
func refusal(err error) bool {
	return errors.Is(err, errPayload) || errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrInvalidPath) ||
		errors.Is(err, model.ErrNotFound) || errors.Is(err, model.ErrShared)
}
