package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/strata-dm/strata/model"
)

// The provider side: this node dials each consumer and publishes to it.

// Backoff between connection attempts.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

// replicaHandshakeTimeout bounds the QUIC handshake with one replica of a
// consumer that is a cluster (Upstream.Replicas), instead of 10 s.
const replicaHandshakeTimeout = 3 * time.Second

// upstream is one consumer this node publishes to.
type upstream struct {
	s   *Service
	cfg Upstream
	dir string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// next indexes the address (Address, then Replicas) the link dials.
	next     int
	state    string
	since    time.Time
	errs     linkErrors
	consumer string
	grant    string
	subtrees []model.Path // effective
	conn     *quic.Conn
	control  *frameWriter
	certExp  time.Time
	leaf     *x509.Certificate // the node certificate in use or renewed
	features []string          // what the consumer serves (welcome)
	limiter  *rate.Limiter     // artifact fetches' bandwidth; nil: unlimited
	acked    atomic.Uint64
	// up is set once a connection is established, taken by run.
	up atomic.Bool
	// sentLast is the last sequence the publish loop sent (a batch's
	// last, or a snapshot's); scanned the last it read. Entries between
	// them are all unpublished: the consumer does not lag behind them.
	sentLast, scanned atomic.Uint64
}

func newUpstream(s *Service, cfg Upstream, dir string) *upstream {
	ctx, cancel := context.WithCancel(s.ctx)
	return &upstream{s: s, cfg: cfg, dir: dir, ctx: ctx, cancel: cancel, done: make(chan struct{}), state: "connecting", since: time.Now(),
		limiter: newLimiter(cfg.Bandwidth)}
}

// start runs the link; the caller has counted it in s.wg.
func (u *upstream) start() {
	go func() {
		defer u.s.wg.Done()
		defer close(u.done)
		u.run()
	}()
}

func (u *upstream) stop() {
	u.cancel()
	u.mu.Lock()
	c := u.conn
	u.mu.Unlock()
	if c != nil {
		c.CloseWithError(closeShutdown, "link removed")
	}
	<-u.done
}

func (u *upstream) setState(state string, err error) {
	u.mu.Lock()
	if u.state != state {
		u.state, u.since = state, time.Now()
	}
	if state == "connected" {
		u.errs.healthy()
	}
	if err != nil {
		u.errs.set(err.Error(), time.Now())
	}
	name := u.consumer
	u.mu.Unlock()
	if name == "" {
		name = u.cfg.Address
	}
	u.s.metrics.linkState(name, "consumer", state)
}

// run keeps the link up: connect, serve until it drops, back off with
// jitter, again; until stopped.
func (u *upstream) run() {
	wait := backoffMin
	for {
		start := time.Now()
		err := u.connect()
		if u.ctx.Err() != nil {
			return
		}
		var ref *RefusedError
		switch {
		case errors.As(err, &ref) && ref.Code == refuseRevoked:
			u.setState("revoked", err)
		case errors.As(err, &ref) && ref.Code == refuseToken:
			u.setState("joining", err)
		default:
			u.setState("down", err)
		}
		tried, round := u.rotate()
		u.s.log.Warn("federation: link to consumer down", "consumer", u.cfg.Address, "tried", tried, "err", err)
		if time.Since(start) > 2*backoffMax {
			wait = backoffMin // it was up for a while: retry soon
		}
		var d time.Duration
		switch {
		case len(u.cfg.Replicas) > 0 && u.takeUp():
			// A consumer that is a cluster dropped the link (its leader
			// died or stepped down): look for the new leader at once.
			wait, d = backoffMin, 0
		case len(u.cfg.Replicas) > 0 && !round:
			// The next replica may be the leader: try it soon; back off
			// only once every address failed in a row.
			d = backoffMin/2 + rand.N(backoffMin/2+1)
		default:
			d = wait/2 + rand.N(wait/2+1)
			wait = min(wait*2, backoffMax)
		}
		if ref != nil && (ref.Code == refuseRevoked || ref.Code == refuseToken || ref.Code == refuseLoop) {
			d = backoffMax
		}
		select {
		case <-u.ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// connect joins when needed, then runs one connection until it ends.
func (u *upstream) connect() error {
	s := u.s
	if s.cfg.Replicated {
		if err := u.restoreCreds(); err != nil {
			return err
		}
	}
	id, err := s.currentLogID(u.ctx)
	if err != nil {
		return fmt.Errorf("the change log's id: %w", err)
	}
	cr, err := loadCreds(u.dir)
	if errors.Is(err, os.ErrNotExist) {
		u.setState("joining", nil)
		if cr, err = u.join(); err != nil {
			return fmt.Errorf("join: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("credentials in %s: %w", u.dir, err)
	}
	u.mu.Lock()
	u.consumer, u.grant, u.certExp, u.leaf = cr.consumer, cr.grant, cr.leaf.NotAfter, cr.leaf
	u.mu.Unlock()
	if u.state != "connected" {
		u.setState("connecting", nil)
	}
	conn, err := u.dial(clientTLS(&cr.cert, cr.ca, nil))
	if err != nil {
		return err
	}
	defer conn.CloseWithError(closeNormal, "")
	ctx, cancel := context.WithTimeout(u.ctx, handshakeTimeout)
	st, err := conn.OpenStreamSync(ctx)
	cancel()
	if err != nil {
		return err
	}
	fr, fw := newFrameReader(st, s.cfg.MaxFrame), newFrameWriter(st)
	h := hello{Version: wireVersion, Node: s.cfg.Name, LogID: id, Publish: model.NormalizeSubtrees(u.cfg.Publish), Below: s.below(), Head: s.model.LastSeq(), Role: s.cfg.Role}
	if err := fw.write(kindHello, h); err != nil {
		return err
	}
	var w welcome
	st.SetReadDeadline(time.Now().Add(handshakeTimeout))
	err = fr.expect(kindWelcome, &w)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	if w.Node != cr.consumer {
		return fmt.Errorf("consumer answers as %q, joined as %q", w.Node, cr.consumer)
	}
	// The grant and subtrees enforced are this node's record of the join;
	// the welcome may only narrow them.
	g, err := u.grantFor(cr)
	if err != nil {
		return err
	}
	grant := narrowGrant(g.Grant, w.Grant)
	subtrees := effective(u.cfg.Publish, g.Subtrees)
	if len(w.Subtrees) > 0 {
		subtrees = model.IntersectSubtrees(subtrees, w.Subtrees) // never wider than recorded
	}
	if len(subtrees) == 0 {
		s.log.Warn("federation: nothing flows to this consumer: what this node publishes and what the consumer accepted do not meet",
			"consumer", w.Node, "publish", u.cfg.Publish, "accepted", g.Subtrees, "welcome_subtrees", w.Subtrees)
	}
	if w.Grant != g.Grant || !slices.Equal(model.NormalizeSubtrees(w.Subtrees), model.NormalizeSubtrees(g.Subtrees)) {
		s.log.Warn("federation: the consumer's welcome differs from the grant recorded at join; enforcing the recorded one",
			"consumer", w.Node, "recorded", g.Grant, "welcome", w.Grant, "recorded_subtrees", g.Subtrees, "welcome_subtrees", w.Subtrees)
	}
	u.mu.Lock()
	u.conn, u.control, u.grant, u.subtrees, u.features = conn, fw, grant, subtrees, w.Features
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.conn, u.control = nil, nil
		u.mu.Unlock()
	}()
	if now := s.below(); !slices.Equal(now, h.Below) {
		u.sendBelow(now) // a mount came or went during the handshake
	}
	u.acked.Store(w.Cursor)
	u.up.Store(true)
	u.setState("connected", nil)
	s.log.Info("federation: publishing to consumer", "consumer", w.Node, "addr", u.address(), "cursor", w.Cursor, "subtrees", subtrees)

	// Renewal state belongs to this connection: a link that drops in the
	// middle of a renewal starts clean on the next one.
	ren := &renewal{}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		u.controlLoop(conn, fr, cr, ren)
	}()
	go func() {
		defer wg.Done()
		if err := u.publish(conn, w, subtrees); err != nil && conn.Context().Err() == nil {
			s.log.Warn("federation: publishing failed", "consumer", w.Node, "err", err)
			conn.CloseWithError(closeProtocol, "sync failed")
		}
	}()
	go func() {
		defer wg.Done()
		u.serveRequests(conn, w.Node, grant, subtrees)
	}()
	// Renew while connected, checking often enough for short lifetimes.
	life := cr.leaf.NotAfter.Sub(cr.leaf.NotBefore)
	every := min(time.Minute, max(life/20, 100*time.Millisecond))
	u.maybeRenew(ren, cr)
wait:
	for {
		select {
		case <-conn.Context().Done():
			break wait
		case <-u.ctx.Done():
			conn.CloseWithError(closeShutdown, "shutting down")
			break wait
		case <-s.clock.After(every):
			u.maybeRenew(ren, cr)
		}
	}
	wg.Wait()
	return context.Cause(conn.Context())
}

// takeUp reports whether a connection was established since the last
// call.
func (u *upstream) takeUp() bool { return u.up.Swap(false) }

// address is the consumer address the link dials now.
func (u *upstream) address() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.next == 0 || u.next > len(u.cfg.Replicas) {
		return u.cfg.Address
	}
	return u.cfg.Replicas[u.next-1]
}

// rotate moves the link to the consumer's next address (a consumer that
// is a cluster has several) and returns the one it leaves; round is true
// when it is back at the first one (every address was tried).
func (u *upstream) rotate() (tried string, round bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	tried = u.cfg.Address
	if u.next > 0 && u.next <= len(u.cfg.Replicas) {
		tried = u.cfg.Replicas[u.next-1]
	}
	u.next = (u.next + 1) % (len(u.cfg.Replicas) + 1)
	return tried, u.next == 0
}

func (u *upstream) dial(tc *tls.Config) (*quic.Conn, error) {
	s := u.s
	addr, err := net.ResolveUDPAddr("udp", u.address())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	tr := s.tr
	s.mu.Unlock()
	if tr == nil {
		return nil, errors.New("not started")
	}
	qc := s.qconf
	if len(u.cfg.Replicas) > 0 {
		// A consumer that is a cluster: a replica that does not answer
		// (its machine died) is given up on sooner, for the next.
		qc = qc.Clone()
		qc.HandshakeIdleTimeout = replicaHandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(u.ctx, handshakeTimeout+5*time.Second)
	defer cancel()
	return tr.Dial(ctx, addr, tc, qc)
}

// join presents the token and a certificate request, and keeps what the
// consumer answers.
func (u *upstream) join() (*creds, error) {
	s := u.s
	if u.cfg.Token == "" {
		return nil, errors.New("no join token for this consumer: run strata join with a token")
	}
	_, pin, err := parseJoinToken(u.cfg.Token)
	if err != nil {
		return nil, err
	}
	key, csr, err := newCSR(s.cfg.Name)
	if err != nil {
		return nil, err
	}
	conn, err := u.dial(clientTLS(nil, nil, pin))
	if err != nil {
		return nil, err
	}
	defer conn.CloseWithError(closeNormal, "")
	ctx, cancel := context.WithTimeout(u.ctx, handshakeTimeout)
	defer cancel()
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	stop := onDone(ctx, func() { st.CancelRead(streamCancelled) })
	defer stop()
	fr, fw := newFrameReader(st, s.cfg.MaxFrame), newFrameWriter(st)
	if err := fw.write(kindJoin, join{Version: wireVersion, Node: s.cfg.Name, Token: u.cfg.Token, CSR: csr}); err != nil {
		return nil, err
	}
	var j joined
	if err := fr.expect(kindJoined, &j); err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(j.CA)
	if err != nil || string(fingerprint(j.CA)) != string(pin) {
		return nil, errors.New("the consumer's CA does not match the join token")
	}
	leaf, err := verifyChain([][]byte{j.Cert}, ca, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(u.dir, fileCA), pemBlock("CERTIFICATE", j.CA), 0o644); err != nil {
		return nil, err
	}
	subs := make([]string, len(j.Subtrees))
	for i, p := range j.Subtrees {
		subs[i] = string(p)
	}
	meta, _ := json.Marshal(consumerMeta{Consumer: j.Node, Grant: j.Grant, Subtrees: subs})
	if err := writeFileAtomic(filepath.Join(u.dir, fileConsumer), meta, 0o644); err != nil {
		return nil, err
	}
	if err := saveCert(u.dir, key, j.Cert); err != nil {
		return nil, err
	}
	if err := u.recordGrant(grantRecord{Consumer: j.Node, Address: u.cfg.Address, Grant: j.Grant, Subtrees: j.Subtrees, Joined: time.Now().UTC()}); err != nil {
		return nil, err
	}
	if s.cfg.Replicated {
		if err := u.saveCreds(); err != nil {
			return nil, err
		}
	}
	s.log.Info("federation: joined consumer", "consumer", j.Node, "addr", u.cfg.Address, "grant", j.Grant, "expires", leaf.NotAfter)
	return loadCreds(u.dir)
}

// recordGrant keeps, in this node's own state, the grant a consumer
// holds here.
func (u *upstream) recordGrant(g grantRecord) error {
	put, err := putRecord(recGrant, g.Consumer, g)
	if err != nil {
		return err
	}
	if _, err := u.s.model.Apply(u.ctx, put); err != nil {
		return fmt.Errorf("recording the grant of %s: %w", g.Consumer, err)
	}
	return nil
}

// grantFor returns the grant recorded for the consumer of cr. A link that
// joined before grants were recorded in the model takes the one its
// join wrote to consumer.json (also this node's record of the join).
func (u *upstream) grantFor(cr *creds) (grantRecord, error) {
	var g grantRecord
	err := getRecord(u.s.model, recGrant, cr.consumer, &g)
	if err == nil {
		return g, nil
	}
	if !errors.Is(err, model.ErrNotFound) {
		return g, fmt.Errorf("the grant of %s: %w", cr.consumer, err)
	}
	g = grantRecord{Consumer: cr.consumer, Address: u.cfg.Address, Grant: cr.grant, Joined: cr.leaf.NotBefore.UTC()}
	for _, p := range cr.subtrees {
		if q, err := model.ParsePath(p); err == nil {
			g.Subtrees = append(g.Subtrees, q)
		}
	}
	return g, u.recordGrant(g)
}

// controlLoop reads the consumer's control messages.
func (u *upstream) controlLoop(conn *quic.Conn, fr *frameReader, cr *creds, ren *renewal) {
	for {
		k, body, err := fr.next()
		if err != nil {
			return
		}
		switch k {
		case kindRenewed:
			var r renewed
			if decode(k, body, &r) != nil {
				continue
			}
			u.finishRenew(ren, r.Cert, cr)
		case kindRefuse:
			var r refuse
			if decode(k, body, &r) == nil {
				u.s.log.Warn("federation: consumer refused", "consumer", u.cfg.Address, "code", r.Code, "reason", r.Message)
				if r.Code == refuseLoop {
					conn.CloseWithError(closeRefused, r.Code)
					return
				}
			}
			// The only request a consumer answers with a refusal on a live
			// link is a renewal.
			u.renewFailed(ren, cr, fmt.Errorf("refused by the consumer: %s", r.Message))
		default:
		}
	}
}

// sendBelow tells the consumer the nodes now mounted under this one.
func (u *upstream) sendBelow(names []string) {
	u.mu.Lock()
	fw := u.control
	u.mu.Unlock()
	if fw != nil {
		fw.write(kindBelow, below{Names: names})
	}
}

func (u *upstream) status() PeerStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := PeerStatus{
		Name: u.consumer, Direction: "consumer", Address: u.cfg.Address, State: u.state,
		Grant: u.grant, Subtrees: u.subtrees, Cursor: u.acked.Load(), Head: u.s.model.LastSeq(),
		Since: u.since, CertExpires: u.certExp,
	}
	u.errs.fill(&st)
	if u.conn == nil { // not connected: what would flow, as configured
		st.Subtrees = model.NormalizeSubtrees(u.cfg.Publish)
		if len(st.Subtrees) == 0 {
			st.Subtrees = []model.Path{model.Root}
		}
	}
	// Lag: the log entries after the acknowledged cursor, less those the
	// publish loop read and found unpublished.
	if st.Head > st.Cursor {
		st.LagEntries = st.Head - st.Cursor
		if sent, scanned := u.sentLast.Load(), u.scanned.Load(); scanned > sent && sent >= st.Cursor {
			st.LagEntries -= min(st.LagEntries, scanned-sent)
		}
	}
	if u.conn != nil {
		cs := u.conn.ConnectionStats()
		st.RTTMillis = float64(cs.SmoothedRTT.Microseconds()) / 1000
		st.BytesSent, st.BytesReceived = cs.BytesSent, cs.BytesReceived
	}
	return st
}
