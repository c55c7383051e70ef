package mqtt

import (
	"bytes"
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

var packetsNotAuthorized = packets.ErrNotAuthorized

// hook is the broker's only mochi hook: authentication, ACL, the tree
// mapping, presence and command delivery.
type hook struct {
	mochi.HookBase
	b *Broker

	mu      sync.Mutex
	conns   map[string]*mochi.Client  // device → its current connection
	tenants map[*mochi.Client]string  // authenticated connection → tenant
	ups     map[*mochi.Client]*uplink // authenticated connection → its pipeline
	out     map[*mochi.Client]*outbox // command delivery per connection
	reject  map[string]time.Time      // device → last rejection event

	seed    maphash.Seed
	stripes [256]sync.Mutex // per-device presence order
}

func newHook(b *Broker) *hook {
	return &hook{
		b: b, conns: map[string]*mochi.Client{}, tenants: map[*mochi.Client]string{}, ups: map[*mochi.Client]*uplink{},
		out: map[*mochi.Client]*outbox{}, reject: map[string]time.Time{},
		seed: maphash.MakeSeed(),
	}
}

func (h *hook) ID() string { return "strata" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish,
		mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnSubscribed,
		mochi.OnQosPublish, mochi.OnQosComplete, mochi.OnPublishDropped, mochi.OnWill, mochi.OnWillSent,
	}, []byte{b})
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
	u := newUplink(h, cl, tenant)
	h.mu.Lock()
	h.tenants[cl] = tenant
	h.ups[cl] = u
	h.mu.Unlock()
	m.connects.WithLabelValues("ok").Inc()
	return true
}

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
		ok = ok && !strings.ContainsAny(strings.TrimPrefix(topic, TopicPrefix(cl.ID)), "$")
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

// OnSessionEstablished marks the device online and delivers pending
// commands if the session kept a command subscription.
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	id := cl.ID
	tenant, ok := h.tenant(cl)
	if !ok {
		return
	}
	st := h.stripe(id)
	st.Lock()
	h.mu.Lock()
	h.conns[id] = cl
	h.mu.Unlock()
	h.presence(id, tenant, true)
	st.Unlock()
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
	}
	delete(h.tenants, cl)
	delete(h.ups, cl)
	delete(h.out, cl)
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

// OnWillSent records the will as an event of the device.
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	tenant, ok := h.tenant(cl)
	if !ok {
		tenant = "" // connection already forgotten: the guard still applies below
	}
	payload, _ := json.Marshal(map[string]string{"message": truncate(string(pk.Payload), 1024)})
	id := cl.ID
	h.b.background(func() {
		h.b.cfg.Tree.Apply(context.Background(), model.Mutation{
			Op: model.OpEvent, Path: DevicePath(id), Actor: tenant,
			Event: &model.Event{Name: "will", Level: model.LevelWarning, Payload: payload, Time: h.b.cfg.Now().UTC()},
		})
	})
}
