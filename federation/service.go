package federation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/model"
)

// Application error codes on QUIC connections and streams.
const (
	closeNormal   quic.ApplicationErrorCode = 0
	closeRefused  quic.ApplicationErrorCode = 1
	closeProtocol quic.ApplicationErrorCode = 2
	closeReplaced quic.ApplicationErrorCode = 3
	closeShutdown quic.ApplicationErrorCode = 4
	closeRevoked  quic.ApplicationErrorCode = 5

	streamCancelled quic.StreamErrorCode = 1
)

// Service is one node's federation. It is safe for concurrent use.
type Service struct {
	cfg   Config
	log   *slog.Logger
	model *model.Model
	// logID is this node's change-log id; idMu guards it (a replica
	// reads it anew at each connection).
	idMu  sync.Mutex
	logID string

	tlsServer *tls.Config
	qconf     *quic.Config

	mu        sync.Mutex
	tr        *quic.Transport
	bind      string // the address tr was bound to
	ln        *quic.Listener
	mounts    map[string]*mount    // consumer side, by provider name
	upstreams map[string]*upstream // provider side, by address
	closed    bool
	closedCh  chan struct{} // closed when Close has finished
	// linksOff holds the upstream links stopped (a replica that does not
	// lead): SetUpstreams only records what to run.
	linksOff bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	metrics *metrics
	clock   Clock
	started atomic.Bool
}

// New prepares the service; it opens nothing until Start.
func New(cfg Config) (*Service, error) {
	if cfg.Model == nil {
		return nil, errors.New("federation: no model")
	}
	if cfg.Name == "" {
		return nil, errors.New("federation: no node name")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = 30 * 24 * time.Hour
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.KeepAlive >= cfg.IdleTimeout {
		return nil, fmt.Errorf("federation: keepalive %v must be below the idle timeout %v", cfg.KeepAlive, cfg.IdleTimeout)
	}
	if cfg.LogBudget == 0 {
		cfg.LogBudget = 5_000_000
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = defaultMaxFrame
	}
	if cfg.ListenAddr != "" && (cfg.CA == nil || cfg.CAKey == nil) {
		return nil, errors.New("federation: a listener needs the node's CA and key")
	}
	s := &Service{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "federation"),
		model:     cfg.Model,
		mounts:    map[string]*mount{},
		upstreams: map[string]*upstream{},
		closedCh:  make(chan struct{}),
		metrics:   newMetrics(),
		clock:     cfg.Clock,
		linksOff:  cfg.Replicated,
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	s.qconf = &quic.Config{
		KeepAlivePeriod:                cfg.KeepAlive,
		MaxIdleTimeout:                 cfg.IdleTimeout,
		HandshakeIdleTimeout:           10 * time.Second,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 2 << 20,
		MaxConnectionReceiveWindow:     32 << 20,
		MaxIncomingStreams:             1024,
		MaxIncomingUniStreams:          -1,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start binds the node's UDP socket, opens the listener when configured,
// restores mounts and starts the upstream links.
func (s *Service) Start(ctx context.Context) error {
	if !s.cfg.Replicated {
		// A replica reads it when a link connects (currentLogID): one
		// that has not applied the leader's yet must not make another.
		id, err := logID(ctx, s.model)
		if err != nil {
			return err
		}
		s.setLogID(id)
	}
	if err := s.loadMounts(); err != nil {
		return err
	}
	bind := s.cfg.ListenAddr
	if bind == "" {
		bind = dialBind(s.cfg.Upstreams)
	}
	tr, err := s.newTransport(bind)
	if err != nil {
		return err
	}
	conn := tr.Conn
	s.mu.Lock()
	s.tr, s.bind = tr, bind
	s.mu.Unlock()
	if s.cfg.ListenAddr != "" {
		cert, err := listenerCert(s.cfg.Name, s.cfg.CA, s.cfg.CAKey)
		if err != nil {
			conn.Close()
			return err
		}
		s.tlsServer = s.serverTLS(cert)
		// A provider opens two streams (control, sync); the consumer opens
		// the request streams, any number, on the provider's side.
		lconf := s.qconf.Clone()
		lconf.MaxIncomingStreams = 16
		ln, err := s.tr.Listen(s.tlsServer, lconf)
		if err != nil {
			conn.Close()
			return fmt.Errorf("federation: listen: %w", err)
		}
		s.mu.Lock()
		s.ln = ln
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.acceptLoop(ln)
		}()
		s.log.Info("federation listening", "addr", conn.LocalAddr().String())
	}
	s.started.Store(true)
	return s.SetUpstreams(s.cfg.Upstreams)
}

// resetKey derives the QUIC stateless reset key from the CA key, so that
// a node restarted on the same address tells its peers at once that their
// old connections are gone (instead of them waiting for the idle
// timeout). Without a CA the key is random: resets then work only until
// a restart.
func (s *Service) resetKey() *quic.StatelessResetKey {
	var k quic.StatelessResetKey
	if s.cfg.CAKey != nil {
		if der, err := x509.MarshalPKCS8PrivateKey(s.cfg.CAKey); err == nil {
			h := sha256.New()
			h.Write([]byte("strata federation stateless reset\x00"))
			h.Write(der)
			copy(k[:], h.Sum(nil))
			return &k
		}
	}
	rand.Read(k[:])
	return &k
}

func (s *Service) newTransport(bind string) (*quic.Transport, error) {
	ua, err := net.ResolveUDPAddr("udp", bind)
	if err != nil {
		return nil, fmt.Errorf("federation: address %q: %w", bind, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("federation: listen %s: %w", bind, err)
	}
	return &quic.Transport{Conn: conn, StatelessResetKey: s.resetKey()}, nil
}

// dialBind picks the socket for a node without a listener: loopback when
// every consumer is on loopback, all addresses otherwise.
func dialBind(ups []Upstream) string {
	if len(ups) == 0 {
		return "127.0.0.1:0"
	}
	for _, u := range ups {
		for _, a := range append([]string{u.Address}, u.Replicas...) {
			host, _, err := net.SplitHostPort(a)
			if err != nil {
				return ":0"
			}
			ip := net.ParseIP(host)
			if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
				return ":0"
			}
		}
	}
	return "127.0.0.1:0"
}

// Addr is the bound UDP address ("" before Start).
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr == nil {
		return ""
	}
	return s.tr.Conn.LocalAddr().String()
}

// Close ends every link and releases the socket; it returns once every
// goroutine of the service has ended. Safe to call more than once, also
// concurrently: every call returns only when the service is closed.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.closedCh
		return nil
	}
	s.closed = true
	defer close(s.closedCh)
	ups := s.upstreams
	s.upstreams = map[string]*upstream{}
	mounts := make([]*mount, 0, len(s.mounts))
	for _, m := range s.mounts {
		mounts = append(mounts, m)
	}
	ln, tr := s.ln, s.tr
	s.mu.Unlock()
	s.cancel()
	for _, u := range ups {
		u.stop()
	}
	for _, m := range mounts {
		m.disconnect(closeShutdown, "shutting down")
	}
	if ln != nil {
		ln.Close()
	}
	s.wg.Wait()
	if tr != nil {
		tr.Close()
		tr.Conn.Close()
	}
	return nil
}

// SetUpstreams reconciles the links up with ups: new consumers are
// dialled, removed ones dropped, changed ones restarted.
func (s *Service) SetUpstreams(ups []Upstream) error {
	for _, u := range ups {
		for _, a := range append([]string{u.Address}, u.Replicas...) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("federation: upstream %q: %w", a, err)
			}
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("federation: closed")
	}
	if !s.started.Load() || s.linksOff {
		s.cfg.Upstreams = ups
		s.mu.Unlock()
		return nil
	}
	var stop []*upstream
	var oldTr *quic.Transport
	if s.ln == nil && s.bind != ":0" && dialBind(ups) == ":0" {
		// A consumer beyond loopback: move every link to a socket bound to
		// all addresses.
		tr, err := s.newTransport(":0")
		if err != nil {
			s.mu.Unlock()
			return err
		}
		oldTr, s.tr, s.bind = s.tr, tr, ":0"
		for addr, cur := range s.upstreams {
			stop = append(stop, cur)
			delete(s.upstreams, addr)
		}
	}
	want := map[string]Upstream{}
	for _, u := range ups {
		want[u.Address] = u
	}
	for addr, cur := range s.upstreams {
		if w, ok := want[addr]; !ok || !sameUpstream(cur.cfg, w) {
			stop = append(stop, cur)
			delete(s.upstreams, addr)
		}
	}
	var start []*upstream
	for addr, u := range want {
		if _, ok := s.upstreams[addr]; ok {
			continue
		}
		up := newUpstream(s, u, filepath.Join(s.cfg.StateDir, StateDirName(addr)))
		s.upstreams[addr] = up
		start = append(start, up)
	}
	// Counted now, under the lock that Close takes first: Close waits
	// for these even if it runs before they start.
	s.wg.Add(len(start))
	s.cfg.Upstreams = ups
	s.mu.Unlock()
	for _, u := range stop {
		u.stop()
	}
	s.forgetConsumers(stop, want)
	if oldTr != nil {
		oldTr.Close()
		oldTr.Conn.Close()
	}
	for _, u := range start {
		u.start()
	}
	return nil
}

// SetLinksActive starts (true) or stops (false) every upstream link,
// keeping what they are (Config.Upstreams, SetUpstreams) and every
// consumer's stored state: a replica of a cluster runs its links only
// while it leads. A service that is not Replicated starts active.
func (s *Service) SetLinksActive(on bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("federation: closed")
	}
	if on {
		s.linksOff = false
		ups := s.cfg.Upstreams
		s.mu.Unlock()
		return s.SetUpstreams(ups)
	}
	s.linksOff = true
	stop := s.upstreams
	s.upstreams = map[string]*upstream{}
	mounts := make([]*mount, 0, len(s.mounts))
	for _, m := range s.mounts {
		mounts = append(mounts, m)
	}
	s.mu.Unlock()
	for _, u := range stop {
		u.stop()
	}
	// Providers connected here move on to the replica that leads now.
	for _, m := range mounts {
		m.disconnect(closeShutdown, "no longer the leader")
	}
	return nil
}

// leading reports whether this node accepts providers' links and joins:
// always, unless it is a replica that does not lead its cluster.
func (s *Service) leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.cfg.Replicated || !s.linksOff
}

func (s *Service) setLogID(id string) {
	s.idMu.Lock()
	s.logID = id
	s.idMu.Unlock()
}

func (s *Service) getLogID() string {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.logID
}

// currentLogID is the log id a link announces: on a replica, the one in
// the model (created by the leader, whose links are the only ones).
func (s *Service) currentLogID(ctx context.Context) (string, error) {
	if !s.cfg.Replicated {
		return s.getLogID(), nil
	}
	id, err := logID(ctx, s.model)
	if err != nil {
		return "", err
	}
	s.setLogID(id)
	return id, nil
}

// forgetConsumers drops the stored cursors of consumers this node no
// longer publishes to, so that compaction stops keeping the log for
// them. An upstream that is only restarted (same address) keeps its own.
func (s *Service) forgetConsumers(stopped []*upstream, want map[string]Upstream) {
	for _, u := range stopped {
		name := u.consumerName()
		if _, again := want[u.cfg.Address]; again || name == "" {
			continue
		}
		for _, kind := range []string{recCursor, recGrant} {
			if err := s.model.DeleteRecord(s.ctx, kind, name); err != nil && !errors.Is(err, model.ErrNotFound) {
				s.log.Warn("federation: dropping a removed consumer's state", "consumer", name, "record", kind, "err", err)
			}
		}
	}
}

func sameUpstream(a, b Upstream) bool {
	return a.Address == b.Address && a.Token == b.Token && slices.Equal(a.Publish, b.Publish) && slices.Equal(a.Replicas, b.Replicas) &&
		a.Bandwidth == b.Bandwidth && slices.Equal(a.Windows, b.Windows)
}

// StateDirName is the folder, under Config.StateDir, holding what this
// node keeps for the consumer at addr (its node certificate, the
// consumer's CA): removing it makes the next connection join again.
func StateDirName(addr string) string {
	r := strings.NewReplacer(":", "_", "[", "", "]", "", "/", "_", "\\", "_")
	return r.Replace(addr)
}

// serverTLS is the listener's TLS: client certificates are requested, not
// required (a joining provider has none yet), and verified by us so that
// failures are logged and counted.
func (s *Service) serverTLS(cert tls.Certificate) *tls.Config {
	c := tlsBase()
	c.Certificates = []tls.Certificate{cert}
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // joining; only a join is accepted on this connection
		}
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		if _, err := verifyChain(raw, s.cfg.CA, x509.ExtKeyUsageClientAuth); err != nil {
			s.metrics.refused.WithLabelValues("certificate").Inc()
			s.log.Warn("federation: refused a certificate", "subject", cs.PeerCertificates[0].Subject.CommonName, "err", err)
			return err
		}
		return nil
	}
	return c
}

// clientTLS is a provider's TLS towards a consumer: the consumer must
// present a certificate from ca (or, when joining, from the CA with the
// pinned fingerprint, which it sends in its chain).
func clientTLS(cert *tls.Certificate, ca *x509.Certificate, pin []byte) *tls.Config {
	c := tlsBase()
	c.InsecureSkipVerify = true // verified below: by CA, never by host name
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		root := ca
		if root == nil {
			for _, r := range raw[1:] {
				if string(fingerprint(r)) == string(pin) {
					root, _ = x509.ParseCertificate(r)
				}
			}
			if root == nil {
				return errors.New("the consumer's CA does not match the join token")
			}
		}
		_, err := verifyChain(raw, root, x509.ExtKeyUsageServerAuth)
		return err
	}
	return c
}

// below is the set of nodes mounted, transitively, under this node.
func (s *Service) below() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, m := range s.mounts {
		out = append(out, name)
		out = append(out, m.belowNames()...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// belowChanged tells every consumer the new set.
func (s *Service) belowChanged() {
	names := s.below()
	s.mu.Lock()
	ups := make([]*upstream, 0, len(s.upstreams))
	for _, u := range s.upstreams {
		ups = append(ups, u)
	}
	s.mu.Unlock()
	for _, u := range ups {
		u.sendBelow(names)
	}
}

// Peers lists every link, both directions, by name then address.
func (s *Service) Peers() []PeerStatus {
	s.mu.Lock()
	mounts := make([]*mount, 0, len(s.mounts))
	for _, m := range s.mounts {
		mounts = append(mounts, m)
	}
	ups := make([]*upstream, 0, len(s.upstreams))
	for _, u := range s.upstreams {
		ups = append(ups, u)
	}
	s.mu.Unlock()
	var out []PeerStatus
	for _, m := range mounts {
		out = append(out, m.status())
	}
	for _, u := range ups {
		out = append(out, u.status())
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		if c := strings.Compare(a.Direction, b.Direction); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out
}

// CompactFloor is the lowest sequence number a consumer of this node
// still needs: the change log must keep entries after it. ok is false
// when no consumer is known.
func (s *Service) CompactFloor() (uint64, bool) {
	floor, ok := uint64(0), false
	err := s.model.Records(recCursor, func(_ string, v []byte) error {
		var c cursorRecord
		if jsonUnmarshal(v, &c) == nil && (!ok || c.Acked < floor) {
			floor, ok = c.Acked, true
		}
		return nil
	})
	if err != nil {
		return 0, false
	}
	return floor, ok
}

// LogBudget is the configured budget, for callers bounding compaction.
func (s *Service) LogBudget() uint64 { return s.cfg.LogBudget }

// onDone runs f when ctx ends, in a goroutine that the returned stop
// waits for (stop also ends it when ctx has not ended): unlike
// context.AfterFunc, nothing outlives its caller.
func onDone(ctx context.Context, f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			f()
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
