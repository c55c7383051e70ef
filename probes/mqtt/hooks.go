package mqtt

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/model"
)

// hook is the broker's only mochi hook: authentication, ACL, the tree
// mapping, presence and command delivery.
type hook struct {
	mochi.HookBase
	b *Broker

	// Sessions. A device has at most one registered connection, its
	// current one: registering a new one (once its session is
	// established, under mu) forgets the previous one and closes it (a
	// takeover). Only registered connections are in tenants, ups and
	// out; mochi reports the disconnection of every one of them.
	// Between authentication and registration a connection waits in
	// authed: mochi reports nothing when it fails there (its CONNACK
	// cannot be written, or mochi's own takeover closed it), so closed
	// ones are swept at every authentication.
	mu      sync.Mutex
	authed  map[*mochi.Client]*uplink // authenticated, session not established yet
	conns   map[string]*mochi.Client  // device → its current connection
	tenants map[*mochi.Client]string  // registered connection → tenant
	ups     map[*mochi.Client]*uplink // registered connection → its pipeline
	out     map[*mochi.Client]*outbox // command delivery per connection
	reject  map[string]time.Time      // device → last rejection event
	// epoch counts the revocations of each device (Broker.Disconnect). A
	// connection carries the epoch it authenticated in: one that
	// authenticated before a revocation is refused at registration, and
	// its messages are refused at write time. Entries are never removed
	// (one per device ever revoked or enrolled again), so a count can
	// never come back to a value a connection holds.
	epoch map[string]uint64

	seed    maphash.Seed
	stripes [256]sync.Mutex // per-device presence order
}

func newHook(b *Broker) *hook {
	return &hook{
		b: b, authed: map[*mochi.Client]*uplink{}, conns: map[string]*mochi.Client{}, tenants: map[*mochi.Client]string{}, ups: map[*mochi.Client]*uplink{},
		out: map[*mochi.Client]*outbox{}, reject: map[string]time.Time{}, epoch: map[string]uint64{},
		seed: maphash.MakeSeed(),
	}
}

func (h *hook) ID() string { return "strata" }

// Provides is asked for every hook method mochi calls, several times a
// packet: a switch, without allocating.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish,
		mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnSubscribed,
		mochi.OnQosPublish, mochi.OnQosComplete, mochi.OnPublishDropped, mochi.OnWill, mochi.OnWillSent:
		return true
	}
	return false
}

func (h *hook) stripe(id string) *sync.Mutex {
	return &h.stripes[maphash.String(h.seed, id)%uint64(len(h.stripes))]
}

func (h *hook) current(id string) *mochi.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[id]
}

func (h *hook) connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

func (h *hook) uplink(cl *mochi.Client) *uplink {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ups[cl]
}

func (h *hook) tenant(cl *mochi.Client) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.tenants[cl]
	return t, ok
}

// OnConnectAuthenticate authenticates the device by client certificate
// (common name = client id) or by username = client id and password =
// secret. A will must target the device's own status topic.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	yieldSlot(cl.Net.Conn) // authentication reads and may write the store
	m := h.b.metrics
	id := cl.ID
	if id == "" || !validJobID(id) {
		m.connects.WithLabelValues("bad_client_id").Inc()
		return false
	}
	if cl.Properties.Will.Flag != 0 && cl.Properties.Will.TopicName != TopicPrefix(id)+"status" {
		m.connects.WithLabelValues("bad_will").Inc()
		return false
	}
	addr := cl.Net.Remote
	h.mu.Lock()
	epoch := h.epoch[id] // before the registry reads the credentials
	h.mu.Unlock()
	var tenant string
	var err error
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok && len(tc.ConnectionState().VerifiedChains) > 0 {
		cert := tc.ConnectionState().PeerCertificates[0]
		if cert.Subject.CommonName != id || (len(pk.Connect.Username) > 0 && string(pk.Connect.Username) != id) {
			m.connects.WithLabelValues("bad_identity").Inc()
			return false
		}
		tenant, err = h.b.cfg.Devices.AuthenticateCert(id, cert.SerialNumber.String(), addr)
	} else {
		if string(pk.Connect.Username) != id || len(pk.Connect.Password) == 0 {
			m.connects.WithLabelValues("bad_identity").Inc()
			return false
		}
		tenant, err = h.b.cfg.Devices.Authenticate(id, string(pk.Connect.Password), addr)
	}
	if err != nil {
		m.connects.WithLabelValues("refused").Inc()
		h.b.log.Debug("device refused", "device", id, "remote", addr, "err", err)
		return false
	}
	if !h.authenticated(cl, tenant, epoch) {
		m.connects.WithLabelValues("revoked").Inc()
		h.b.log.Debug("device revoked while connecting", "device", id, "remote", addr)
		return false
	}
	m.connects.WithLabelValues("ok").Inc()
	return true
}

// authenticated keeps cl, authenticated as its device in tenant during
// epoch, until its session is established (OnSessionEstablished
// registers it), unless the device was revoked since. Connections that
// failed before their session was established are forgotten.
func (h *hook) authenticated(cl *mochi.Client, tenant string, epoch uint64) bool {
	u := newUplink(h, cl, tenant, epoch)
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.authed {
		if c.Closed() {
			delete(h.authed, c)
		}
	}
	if !h.liveLocked(cl.ID, epoch) {
		return false
	}
	h.authed[cl] = u
	return true
}

// errTakenOver ends a connection whose device connected again.
var errTakenOver = errors.New("session taken over by a new connection of the device")

// register makes cl, whose session mochi established, its device's
// current connection, unless the device was revoked since cl
// authenticated (revoked) or cl was forgotten (closed before its session
// was established). It reports cl's pipeline (nil when not registered)
// and the connection cl replaces, if any: the caller closes it, and cl
// when not registered, once it let go of the device's stripe. One device
// id has at most one live session [MQTT-3.1.4-3].
func (h *hook) register(cl *mochi.Client) (u *uplink, old *mochi.Client, revoked bool) {
	id := cl.ID
	h.mu.Lock()
	defer h.mu.Unlock()
	u, ok := h.authed[cl]
	delete(h.authed, cl)
	if !ok {
		return nil, nil, false
	}
	if !h.liveLocked(id, u.epoch) {
		return nil, nil, true
	}
	old = h.conns[id]
	h.conns[id] = cl
	h.tenants[cl] = u.tenant
	h.ups[cl] = u
	if old != nil {
		delete(h.tenants, old)
		delete(h.ups, old)
		delete(h.out, old)
	}
	return u, old, false
}

// close ends connection cl: MQTT 5 clients are told why first.
func (h *hook) close(cl *mochi.Client, code packets.Code, cause error) {
	if cl.Properties.ProtocolVersion == 5 {
		h.b.srv.DisconnectClient(cl, code)
	}
	cl.Stop(cause)
}

// revoke closes every session of device id and refuses, from now on,
// what any connection that authenticated before sent: they are written
// nowhere once revoke returns (see uplink.go). A connection
// authenticating at the same time is refused at registration.
func (h *hook) revoke(id string) {
	h.mu.Lock()
	h.epoch[id]++
	cl := h.conns[id]
	h.mu.Unlock()
	if cl != nil {
		h.close(cl, packets.ErrNotAuthorized, errRevoked)
	}
	// A flush that checked the epoch before it changed may still be
	// applying: wait for it (later flushes see the new epoch).
	sh := h.b.shardOf(id)
	sh.gate.Lock()
	sh.gate.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
}

// liveLocked reports whether messages of a connection that authenticated in
// epoch may still be written; the caller holds h.mu.
func (h *hook) liveLocked(id string, epoch uint64) bool { return h.epoch[id] == epoch }

// OnACLCheck confines a device to strata/<id>/: it publishes only its
// uplink topics and subscribes only to filters under its prefix.
//
// mochi answers a refused QoS 1 publish at once (MQTT 5: PUBACK 0x87;
// 3.1.1: disconnect), so a refused publish first waits for the messages
// before it to be acknowledged: PUBACKs keep the order of the PUBLISHes
// [MQTT-4.6.0-2], and a 3.1.1 device is not made to resend messages that
// were stored.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	kind, _, ok := parseTopic(cl.ID, topic)
	if write {
		ok = ok && kind != topicCommand
	} else {
		ok = ok && !strings.ContainsAny(topic[len("strata/")+len(cl.ID)+1:], "$") // ok: topic is under TopicPrefix(cl.ID)
	}
	if !ok {
		h.b.metrics.aclDenied.Inc()
		h.b.log.Debug("acl denied", "device", cl.ID, "topic", truncate(topic, 256), "write", write)
		if u := h.uplink(cl); write && u != nil {
			u.drain()
		}
	}
	return ok
}

// OnSessionEstablished registers the connection as its device's current
// one, marks the device online and delivers pending commands if the
// session kept a command subscription. Registering here, not at
// authentication, means every registered connection is reported to
// OnDisconnect, which forgets it and marks the device offline.
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	admitted(cl.Net.Conn)  // connected: room for the next connection
	yieldSlot(cl.Net.Conn) // presence is written synchronously
	id := cl.ID
	st := h.stripe(id)
	st.Lock()
	u, old, revoked := h.register(cl)
	if u != nil {
		h.presence(id, u.tenant, true)
	}
	st.Unlock()
	if revoked {
		h.b.metrics.connects.WithLabelValues("revoked").Inc()
		h.b.log.Debug("device revoked while connecting", "device", id, "remote", cl.Net.Remote)
		h.close(cl, packets.ErrNotAuthorized, errRevoked)
		return
	}
	if u == nil {
		cl.Stop(errTakenOver) // closed already: make sure
		return
	}
	if old != nil {
		h.b.metrics.takeovers.Inc()
		h.b.log.Debug("session taken over", "device", id, "old_remote", old.Net.Remote, "new_remote", cl.Net.Remote)
		h.close(old, packets.ErrSessionTakenOver, errTakenOver)
	}
	for filter := range cl.State.Subscriptions.GetAll() {
		if matchesCommands(id, filter) {
			h.deliverPending(cl)
			break
		}
	}
}

// OnDisconnect marks the device offline unless another connection of it
// took over, and forgets the connection.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	id := cl.ID
	tenant, ok := h.tenant(cl)
	if !ok {
		return
	}
	st := h.stripe(id)
	st.Lock()
	h.mu.Lock()
	mine := h.conns[id] == cl
	if mine {
		delete(h.conns, id)
		delete(h.reject, id)
		delete(h.tenants, cl)
		delete(h.ups, cl)
		delete(h.out, cl)
	}
	h.mu.Unlock()
	if mine {
		h.presence(id, tenant, false)
	}
	st.Unlock()
}

// presence writes online and last_seen. The caller holds the device's stripe.
func (h *hook) presence(id, tenant string, online bool) {
	now := h.b.cfg.Now().UTC()
	ts, _ := json.Marshal(now.Format(time.RFC3339Nano))
	on := json.RawMessage("false")
	if online {
		on = json.RawMessage("true")
	}
	_, err := h.b.cfg.Tree.Apply(context.Background(), model.Mutation{
		Op: model.OpPut, Path: DevicePath(id), Type: "device", Actor: tenant,
		Variables: map[string]model.Variable{
			"online":    {Value: on, Type: model.TypeBool, Time: now},
			"last_seen": {Value: ts, Type: model.TypeString, Time: now},
		},
	})
	if err != nil && !errors.Is(err, model.ErrClosed) {
		h.b.log.Warn("presence not recorded", "device", id, "online", online, "err", err)
	}
}

// matchesCommands reports whether a subscription filter of device id
// receives its command topics.
func matchesCommands(id, filter string) bool {
	f := strings.Split(filter, "/")
	t := []string{"strata", id, "cmd", "x"}
	for i, level := range f {
		switch {
		case level == "#":
			return true
		case i >= len(t):
			return false
		case level != "+" && level != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

// OnSubscribed delivers pending commands when the device subscribes to
// its command topic, once what the device sent before subscribing is
// applied (a device declares its functions, then subscribes).
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	yieldSlot(cl.Net.Conn) // waits for earlier messages, then delivers
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 && matchesCommands(cl.ID, f.Filter) {
			if u := h.uplink(cl); u != nil {
				u.drain()
			}
			h.deliverPending(cl)
			return
		}
	}
}

// OnWill keeps a will on the device's own status topic whatever happens
// (OnConnectAuthenticate already refused others).
func (h *hook) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	will.TopicName = TopicPrefix(cl.ID) + "status"
	will.Retain = false
	return will, nil
}

// OnWillSent records the will as an event of the device, written with
// the device's tenant: the will of a connection no longer registered
// (taken over) is not recorded, nor that of a connection whose device was
// revoked since it authenticated. mochi sends the will of a session that
// revocation closed before OnDisconnect forgets it, so, like every other
// write of the device, it is checked against the device's epoch under
// its shard's gate (see revoke).
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	u := h.uplink(cl)
	if u == nil {
		return
	}
	payload, _ := json.Marshal(map[string]string{"message": truncate(string(pk.Payload), 1024)})
	h.writeLive(u, model.Mutation{
		Op: model.OpEvent, Path: DevicePath(u.id), Actor: u.tenant,
		Event: &model.Event{Name: "will", Level: model.LevelWarning, Payload: payload, Time: h.b.cfg.Now().UTC()},
	})
}

// writeLive applies m, a record the broker makes of connection u's
// doings (its will, a refusal), in the background, unless u's device was
// revoked since u authenticated: checked under the shard's gate like the
// device's own messages, so nothing is written once revoke returned.
func (h *hook) writeLive(u *uplink, m model.Mutation) {
	h.b.background(func() {
		u.sh.gate.Lock()
		defer u.sh.gate.Unlock()
		h.mu.Lock()
		live := h.liveLocked(u.id, u.epoch)
		h.mu.Unlock()
		if !live {
			h.b.metrics.revokedWrites.Inc()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
		defer cancel()
		h.b.cfg.Tree.Apply(ctx, m)
	})
}
