// Package mqtt is a node's device endpoint: an embedded MQTT 3.1.1/5
// broker (mochi-mqtt) whose topics map onto the context tree as
// docs/mqtt.md describes.
//
// Invariants the package keeps (and its tests try to break):
//
//   - Every connection is authenticated as one device (token or client
//     certificate) whose id is the client id; there is no anonymous access
//     and no other authentication hook, since mochi ORs them.
//   - A device publishes and subscribes only under strata/<its id>/, and
//     publishes only its uplink topics; its will message can only go to
//     its own status topic.
//   - A QoS 1 message is acknowledged only after its effect is durable
//     (the Tree.Apply holding it returned); when the store refuses, MQTT 5
//     clients get an error PUBACK and 3.1.1 clients are disconnected
//     without one, so the message is sent again. A connection's messages
//     are applied and acknowledged in the order they arrived, several of
//     them in flight at once (uplink.go).
//   - Bad payloads change nothing, are counted and recorded (at most one
//     event per device per second), and never cost the connection.
//   - Presence: online/last_seen follow the device's current connection;
//     a session taken over by a reconnect never marks the device offline.
//
// Lifecycle: New wires the broker; Start opens the listeners; Shutdown
// closes them and every connection. Shutdown twice is safe.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/model"
)

// Authenticator checks device credentials; node/devices implements it
// through the node. remoteAddr keys rate limiting of failures. Both return
// the device's tenant.
type Authenticator interface {
	Authenticate(id, secret, remoteAddr string) (tenant string, err error)
	// AuthenticateCert checks a device whose client certificate (common
	// name id, serial as decimal) the TLS layer verified against the CA.
	AuthenticateCert(id, serial, remoteAddr string) (tenant string, err error)
}

// Tree is where device data goes; *model.Model implements it.
type Tree interface {
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
}

// Commands is the job side of commands; node/jobs implements it through
// the node.
type Commands interface {
	// Pending returns the commands of device still to deliver, oldest first.
	Pending(device string) []Command
	// Delivered records that device acknowledged job.
	Delivered(ctx context.Context, device, job string) error
	// Report records a device's result for job durably.
	Report(ctx context.Context, device, job string, r Result) error
}

// Defaults of Config.
const (
	DefaultMaxPayloadBytes = 256 << 10
	DefaultMaxSessions     = 200_000
	DefaultConnectTimeout  = 10 * time.Second
	DefaultWritesPending   = 8
	DefaultBufferSize      = 2 << 10
)

// Config is what New needs.
type Config struct {
	// TLSAddr, TCPAddr, WSAddr are listen addresses; empty ones are off.
	TLSAddr string
	TCPAddr string
	WSAddr  string
	// TLS is the server's TLS configuration for TLSAddr (minimum TLS 1.2
	// is enforced). Set ClientCAs to accept client certificates.
	TLS *tls.Config

	Devices  Authenticator // required
	Tree     Tree          // required
	Commands Commands      // nil: commands are refused
	Logger   *slog.Logger
	// Registerer receives the broker's metrics; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time

	// MaxPayloadBytes bounds a message's payload; larger ones are
	// rejected like malformed ones. Packets over twice this size are
	// refused by the broker (disconnect, as MQTT prescribes).
	MaxPayloadBytes int
	// MaxSessions bounds concurrent connections.
	MaxSessions int64
	// ConnectTimeout bounds the time from TCP accept to CONNECT on the
	// TLS and TCP listeners. The WebSocket listener (mochi's) does not
	// take it: its HTTP server's 60 s read timeout bounds that time.
	ConnectTimeout time.Duration
	// WritesPending bounds the packets queued to one client; BufferSize
	// is each connection's read and write buffer. Both set the memory a
	// session costs.
	WritesPending int
	BufferSize    int
	// MaxConnecting bounds the connections each listener (TLS, TCP) has
	// accepted that are not yet connected: through the TLS handshake and
	// CONNECT (admit.go). 0: DefaultMaxConnecting; negative: unbounded.
	MaxConnecting int
	// MaxConnectingPerSource bounds the connecting connections from one
	// source address, so that one client cannot hold the whole of
	// MaxConnecting. 0: half of MaxConnecting, at least 1.
	MaxConnectingPerSource int
	// MaxParkedPerSource bounds the connections of one source address
	// that wait, parked, for its share of MaxConnecting (admit.go);
	// beyond it they are closed. 0: DefaultMaxParkedPerSource; negative:
	// none wait.
	MaxParkedPerSource int
	// IngestSlots bounds the device connections that parse and decode
	// their messages at once (gate.go); the others wait, unread. 0:
	// DefaultIngestSlots (half of GOMAXPROCS, at least 1); negative:
	// unbounded. Ignored when Slots is set.
	IngestSlots int
	// IngestPollerOff makes device readers wait for data in Go's network
	// poller, taking their slot once it has come, as on systems other
	// than Linux; by default on Linux the gate's poller wakes them with a
	// slot taken for them (poll_linux.go).
	IngestPollerOff bool
	// Slots, when set, are the ingest slots: the node's device-work
	// limiter, which its federation's sync application shares, so that
	// device work of every source together stays within it.
	Slots *slots.Limiter
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.WritesPending <= 0 {
		c.WritesPending = DefaultWritesPending
	}
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.IngestSlots == 0 {
		c.IngestSlots = DefaultIngestSlots()
	}
	if c.MaxConnecting == 0 {
		c.MaxConnecting = DefaultMaxConnecting()
	}
}

// Broker is one node's device endpoint.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	srv     *mochi.Server
	hook    *hook
	metrics *metrics
	gate    *ingestGate // nil: ungated

	mu         sync.Mutex
	listeners  []net.Listener
	admissions []*admission      // of the TLS and TCP listeners
	addrs      map[string]string // kind → bound address
	started    bool

	bg     sync.WaitGroup // background writes (rejections, wills)
	shards [uplinkShards]*shard
	queued chan struct{} // one token per message waiting for the store
	quit   chan struct{} // closed to stop the committers and the delivery recorder
	// deliveries are the commands acknowledged by devices, to record
	// (deliver.go).
	deliveries chan delivery
	commits    sync.WaitGroup // the committers
	writers    sync.WaitGroup // ack writers
	stopOnce   sync.Once
	stopped    chan struct{}
}

// New wires a broker; it listens only in Start.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	switch {
	case cfg.Devices == nil:
		return nil, errors.New("mqtt: Devices is required")
	case cfg.Tree == nil:
		return nil, errors.New("mqtt: Tree is required")
	case cfg.TLSAddr != "" && cfg.TLS == nil:
		return nil, errors.New("mqtt: a TLS listener needs a TLS config")
	}
	b := &Broker{
		cfg: cfg, log: cfg.Logger.With("component", "mqtt"), addrs: map[string]string{}, stopped: make(chan struct{}),
		queued: make(chan struct{}, maxQueued), quit: make(chan struct{}), deliveries: make(chan delivery, maxDeliveries),
	}
	for i := range b.shards {
		b.shards[i] = &shard{b: b, wake: make(chan struct{}, 1)}
	}
	switch {
	case cfg.Slots != nil:
		b.gate = newIngestGate(cfg.Slots)
	case cfg.IngestSlots > 0:
		b.gate = newIngestGate(slots.New(cfg.IngestSlots))
	}
	var err error
	if b.metrics, err = newMetrics(cfg.Registerer, b); err != nil {
		return nil, err
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClients = cfg.MaxSessions
	caps.MaximumClientWritesPending = int32(cfg.WritesPending)
	caps.MaximumPacketSize = uint32(2*cfg.MaxPayloadBytes + 64<<10)
	caps.RetainAvailable = 0
	caps.MaximumQos = 1
	caps.MaximumInflight = 1024
	caps.SharedSubAvailable = 0
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	b.srv = mochi.New(&mochi.Options{
		Capabilities:             caps,
		ClientNetWriteBufferSize: cfg.BufferSize,
		ClientNetReadBufferSize:  cfg.BufferSize,
		Logger:                   slog.New(&quietHandler{b.log.Handler()}),
		InlineClient:             true,
		SysTopicResendInterval:   3600,
	})
	b.hook = newHook(b)
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add hook: %w", err)
	}
	return b, nil
}

// Start opens the configured listeners and serves.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("mqtt: already started")
	}
	b.started = true
	for _, s := range b.shards {
		b.commits.Go(func() { s.run(b.quit) })
	}
	if b.gate != nil && !b.cfg.IngestPollerOff {
		p, err := newPoller(b.gate)
		if err != nil {
			b.log.Warn("mqtt: no ingest poller, device readers wait in Go's network poller", "err", err)
		}
		b.gate.p = p
	}
	if b.cfg.Commands != nil {
		b.commits.Go(func() { b.recordDeliveries(b.quit) })
	}
	open := func(kind, addr string, tlsConf *tls.Config) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("mqtt %s listen %s: %w", kind, addr, err)
		}
		b.addrs[kind] = ln.Addr().String()
		dl := &deadlineListener{Listener: ln, timeout: b.cfg.ConnectTimeout, gate: b.gate,
			abandoned: b.metrics.connects.WithLabelValues("abandoned"), crowded: b.metrics.connects.WithLabelValues("crowded"),
			parked: b.metrics.connects.WithLabelValues("parked")}
		if b.cfg.MaxConnecting > 0 {
			dl.admit = newAdmission(b.cfg.MaxConnecting, b.cfg.MaxConnectingPerSource, b.cfg.MaxParkedPerSource)
			b.admissions = append(b.admissions, dl.admit)
		}
		dl.run()
		var l net.Listener = dl
		if tlsConf != nil {
			l = tls.NewListener(l, tlsConf)
		}
		b.listeners = append(b.listeners, dl)
		return b.srv.AddListener(listeners.NewNet(kind, l))
	}
	var tlsConf *tls.Config
	if b.cfg.TLS != nil {
		tlsConf = b.cfg.TLS.Clone()
		tlsConf.MinVersion = max(tlsConf.MinVersion, tls.VersionTLS12)
		if tlsConf.ClientCAs != nil {
			tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	err := errors.Join(open("tls", b.cfg.TLSAddr, tlsConf), open("tcp", b.cfg.TCPAddr, nil))
	if err == nil && b.cfg.WSAddr != "" {
		ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: b.cfg.WSAddr})
		b.addrs["ws"] = b.cfg.WSAddr
		err = b.srv.AddListener(ws)
	}
	if err == nil {
		err = b.srv.Serve()
	}
	if err != nil {
		for _, ln := range b.listeners {
			ln.Close()
		}
		if b.gate != nil && b.gate.p != nil {
			b.gate.p.close()
		}
		return err
	}
	b.log.Info("mqtt endpoint started", "addrs", b.addrs)
	return nil
}

// Addr returns the bound address of listener kind ("tls", "tcp", "ws"), or
// "" when it is off.
func (b *Broker) Addr(kind string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[kind]
}

// Shutdown closes the listeners and every connection, lets the uplink
// pipeline apply what it holds, then waits for background writes. Calling
// it more than once is safe.
func (b *Broker) Shutdown(ctx context.Context) error {
	var err error
	b.stopOnce.Do(func() {
		close(b.stopped)
		err = b.srv.Close() // returns once every connection's goroutines ended
		if b.gate != nil && b.gate.p != nil {
			b.gate.p.close()
		}
		close(b.quit)
		done := make(chan struct{})
		go func() { b.commits.Wait(); b.writers.Wait(); b.bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = errors.Join(err, ctx.Err())
		}
	})
	return err
}

// shardOf is the committer of device id's messages.
func (b *Broker) shardOf(id string) *shard {
	return b.shards[maphash.String(b.hook.seed, id)%uplinkShards]
}

// Connected is the number of connected devices.
func (b *Broker) Connected() int { return b.hook.connected() }

// Online reports whether device id has a connection.
func (b *Broker) Online(id string) bool {
	cl := b.hook.current(id)
	return cl != nil && !cl.Closed()
}

// Disconnect is called once device id's credentials stopped working
// (revoked, or enrolled again): it closes every session of the device,
// and when it returns nothing those sessions sent is written any more,
// whatever they had in flight. A connection that authenticated with the
// old credentials and registers later is refused.
func (b *Broker) Disconnect(id string) { b.hook.revoke(id) }

var errRevoked = errors.New("device credentials revoked")

// Deliver sends a command to device id if it is online and subscribed to
// its command topic; otherwise it is delivered when the device next
// subscribes.
func (b *Broker) Deliver(id string, c Command) {
	if cl := b.hook.current(id); cl != nil {
		b.hook.enqueue(cl, []Command{c}, false)
	}
}

// background runs fn on a goroutine the broker waits for at Shutdown.
func (b *Broker) background(fn func()) {
	select {
	case <-b.stopped:
		return
	default:
	}
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		fn()
	}()
}

// quietHandler demotes mochi's per-client info and warning logs (every
// disconnect, every refused client) to debug: at fleet scale they flood.
// So is mochi's error log of a publish the hook refused with a reason
// code (an MQTT 5 command result for an unknown job or another tenant's
// context): the refusal is counted and recorded already, and the log
// would dump the device's payload at error level for every message.
type quietHandler struct{ slog.Handler }

// hookRefusal is mochi's message for a publish a hook answered with a
// reason code.
const hookRefusal = "publish packet error"

func (h *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError || r.Message == hookRefusal {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h *quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l < slog.LevelError {
		l = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, l)
}

func (h *quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &quietHandler{h.Handler.WithAttrs(a)}
}

func (h *quietHandler) WithGroup(n string) slog.Handler { return &quietHandler{h.Handler.WithGroup(n)} }
