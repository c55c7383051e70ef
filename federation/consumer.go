package federation

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/model"
)

// The consumer side: providers dial in; each is mounted at /peers/<name>.

// handshakeTimeout bounds the first message of a new connection.
const handshakeTimeout = 10 * time.Second

func (s *Service) acceptLoop(ln *quic.Listener) {
	for {
		conn, err := ln.Accept(s.ctx)
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
		}()
	}
}

// serveConn runs one inbound connection: a join, or a provider's link.
func (s *Service) serveConn(conn *quic.Conn) {
	// Shutting down ends every inbound connection, whatever stage it is at.
	defer onDone(s.ctx, func() { conn.CloseWithError(closeShutdown, "shutting down") })()
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		cancel()
		s.metrics.refused.WithLabelValues("handshake").Inc()
		conn.CloseWithError(closeProtocol, "no control stream")
		return
	}
	stop := onDone(ctx, func() { st.CancelRead(streamCancelled) })
	fr, fw := newFrameReader(st, s.cfg.MaxFrame), newFrameWriter(st)
	k, body, err := fr.next()
	stop()
	cancel()
	if err != nil {
		s.metrics.refused.WithLabelValues("protocol").Inc()
		s.log.Warn("federation: bad first message", "remote", conn.RemoteAddr().String(), "err", err)
		conn.CloseWithError(closeProtocol, "bad first message")
		return
	}
	if !s.leading() {
		s.refuse(conn, fw, refuseNotLeader, fmt.Sprintf("this replica of %s does not lead its cluster: try another of its addresses", s.cfg.Name))
		return
	}
	certs := conn.ConnectionState().TLS.PeerCertificates
	switch k {
	case kindJoin:
		var j join
		if err := decode(k, body, &j); err != nil {
			s.refuse(conn, fw, refuseProtocol, err.Error())
			return
		}
		s.handleJoin(conn, fw, j)
	case kindHello:
		var h hello
		if err := decode(k, body, &h); err != nil {
			s.refuse(conn, fw, refuseProtocol, err.Error())
			return
		}
		if len(certs) == 0 {
			s.refuse(conn, fw, refuseProtocol, "a link needs the node certificate obtained by joining")
			return
		}
		s.handleHello(conn, st, fr, fw, h, certs[0].Subject.CommonName, hex.EncodeToString(certs[0].SerialNumber.Bytes()))
	default:
		s.refuse(conn, fw, refuseProtocol, fmt.Sprintf("unexpected first message %d", k))
	}
}

func (s *Service) refuse(conn *quic.Conn, fw *frameWriter, code, msg string) {
	s.metrics.refused.WithLabelValues(code).Inc()
	s.log.Warn("federation: refused a connection", "remote", conn.RemoteAddr().String(), "code", code, "reason", msg)
	fw.write(kindRefuse, refuse{Code: code, Message: msg})
	// Let the refusal reach the peer before the connection closes.
	s.closeSoon(conn, 200*time.Millisecond, closeRefused, code)
}

// closeSoon closes conn after d, or sooner when the peer closes it or the
// service shuts down; it runs in the connection's own goroutine.
func (s *Service) closeSoon(conn *quic.Conn, d time.Duration, code quic.ApplicationErrorCode, why string) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-conn.Context().Done():
	case <-s.ctx.Done():
	}
	conn.CloseWithError(code, why)
}

// handleJoin exchanges a join token for a node certificate.
func (s *Service) handleJoin(conn *quic.Conn, fw *frameWriter, j join) {
	hash, _, err := parseJoinToken(j.Token)
	if err != nil {
		s.refuse(conn, fw, refuseToken, err.Error())
		return
	}
	if err := model.ValidateName(j.Node); err != nil || j.Node == s.cfg.Name {
		s.refuse(conn, fw, refuseName, fmt.Sprintf("bad node name %q", j.Node))
		return
	}
	key := hex.EncodeToString(hash)
	var tok tokenRecord
	if err := getRecord(s.model, recToken, key, &tok); err != nil {
		s.refuse(conn, fw, refuseToken, "unknown or already used join token")
		return
	}
	if time.Now().After(tok.Expires) {
		s.refuse(conn, fw, refuseToken, "join token expired")
		return
	}
	if tok.Peer != j.Node {
		s.refuse(conn, fw, refuseToken, fmt.Sprintf("join token is for node %q, not %q", tok.Peer, j.Node))
		return
	}
	var prev peerRecord
	if err := getRecord(s.model, recPeer, j.Node, &prev); err == nil && prev.Revoked {
		// Joining again with a fresh token un-revokes: the token is the
		// consumer administrator's decision.
		s.log.Info("federation: revoked peer joins again", "peer", j.Node)
	}
	cert, err := signCSR(s.cfg.CA, s.cfg.CAKey, j.CSR, j.Node, s.cfg.CertValidity)
	if err != nil {
		s.refuse(conn, fw, refuseProtocol, err.Error())
		return
	}
	rec := peerRecord{Name: j.Node, Grant: tok.Grant, Subtrees: tok.Subtrees, Serials: []string{hex.EncodeToString(cert.SerialNumber.Bytes())}, Joined: time.Now().UTC()}
	put, err := putRecord(recPeer, j.Node, rec)
	if err != nil {
		s.refuse(conn, fw, refuseInternal, err.Error())
		return
	}
	// The token is consumed in the same commit that records the peer.
	del := model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: recToken, Key: key}}
	if _, err := s.model.Apply(s.ctx, put, del); err != nil {
		s.refuse(conn, fw, refuseInternal, "could not record the peer")
		return
	}
	s.log.Info("federation: peer joined", "peer", j.Node, "grant", tok.Grant, "expires", cert.NotAfter)
	if err := fw.write(kindJoined, joined{Node: s.cfg.Name, Cert: cert.Raw, CA: s.cfg.CA.Raw, Grant: tok.Grant, Subtrees: tok.Subtrees}); err != nil {
		return
	}
	s.closeSoon(conn, 2*time.Second, closeNormal, "joined")
}

// CreateJoinToken makes a one-time token for a provider to join this node.
func (s *Service) CreateJoinToken(ctx context.Context, g JoinGrant) (string, time.Time, error) {
	if s.cfg.CA == nil || s.cfg.CAKey == nil {
		return "", time.Time{}, errors.New("federation: this node has no CA to sign peer certificates")
	}
	if err := model.ValidateName(g.Peer); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: peer name: %v", model.ErrInvalid, err)
	}
	if g.Peer == s.cfg.Name {
		return "", time.Time{}, fmt.Errorf("%w: a node cannot join itself", model.ErrInvalid)
	}
	switch g.Grant {
	case GrantRead, GrantOperate:
	default:
		return "", time.Time{}, fmt.Errorf("%w: grant must be %q or %q", model.ErrInvalid, GrantRead, GrantOperate)
	}
	subtrees := make([]model.Path, 0, len(g.Subtrees))
	for _, p := range g.Subtrees {
		q, err := model.ParsePath(string(p))
		if err != nil {
			return "", time.Time{}, fmt.Errorf("%w: subtree: %v", model.ErrInvalid, err)
		}
		subtrees = append(subtrees, q) // canonical: "devices" is "/devices"
	}
	if g.TTL <= 0 {
		g.TTL = 24 * time.Hour
	}
	token, hash, err := newJoinToken(s.cfg.CA.Raw)
	if err != nil {
		return "", time.Time{}, err
	}
	now := time.Now().UTC()
	rec := tokenRecord{Peer: g.Peer, Grant: g.Grant, Subtrees: model.NormalizeSubtrees(subtrees), Expires: now.Add(g.TTL), Created: now}
	put, err := putRecord(recToken, hex.EncodeToString(hash), rec)
	if err != nil {
		return "", time.Time{}, err
	}
	if _, err := s.model.Apply(ctx, put); err != nil {
		return "", time.Time{}, err
	}
	return token, rec.Expires, nil
}

// Revoke refuses a provider's certificates from now on and drops its link.
// Its mirror stays, frozen, until it joins again.
func (s *Service) Revoke(ctx context.Context, peer string) error {
	var rec peerRecord
	if err := getRecord(s.model, recPeer, peer, &rec); err != nil {
		return fmt.Errorf("federation: peer %q: %w", peer, err)
	}
	rec.Revoked = true
	put, err := putRecord(recPeer, peer, rec)
	if err != nil {
		return err
	}
	if _, err := s.model.Apply(ctx, put); err != nil {
		return err
	}
	s.mu.Lock()
	m := s.mounts[peer]
	s.mu.Unlock()
	if m != nil {
		m.setRevoked()
		m.disconnect(closeRevoked, "revoked")
	}
	s.log.Info("federation: peer revoked", "peer", peer)
	return nil
}

// loadMounts restores known mounts (their cursors and what is below them)
// at start, so that loop detection and routing work before they connect.
func (s *Service) loadMounts() error {
	return s.model.Records(recPeer, func(name string, v []byte) error {
		var p peerRecord
		if err := json.Unmarshal(v, &p); err != nil {
			s.log.Warn("federation: unreadable peer record", "peer", name, "err", err)
			return nil
		}
		m := newMount(s, p)
		var mr mountRecord
		if err := getRecord(s.model, recMount, name, &mr); err == nil {
			m.rec = mr
		}
		s.mu.Lock()
		s.mounts[name] = m
		s.mu.Unlock()
		return nil
	})
}

// handleHello admits a provider's link after checking its certificate
// against the peer record and the loop rule.
func (s *Service) handleHello(conn *quic.Conn, st *quic.Stream, fr *frameReader, fw *frameWriter, h hello, name, serial string) {
	var rec peerRecord
	if err := getRecord(s.model, recPeer, name, &rec); err != nil {
		s.refuse(conn, fw, refuseRevoked, fmt.Sprintf("node %q has not joined", name))
		return
	}
	if rec.Revoked {
		s.refuse(conn, fw, refuseRevoked, fmt.Sprintf("node %q is revoked", name))
		return
	}
	if !slices.Contains(rec.Serials, serial) {
		s.refuse(conn, fw, refuseRevoked, "certificate is no longer valid for this node")
		return
	}
	if h.Node != name {
		s.refuse(conn, fw, refuseName, fmt.Sprintf("hello names %q but the certificate is for %q", h.Node, name))
		return
	}
	if slices.Contains(h.Below, s.cfg.Name) {
		s.refuse(conn, fw, refuseLoop, fmt.Sprintf("%s already has %s below it: mounting it would make a loop", name, s.cfg.Name))
		return
	}
	for _, p := range h.Publish {
		if !canonicalPath(p) {
			s.refuse(conn, fw, refuseProtocol, fmt.Sprintf("published path %q is not a canonical absolute path", p))
			return
		}
	}
	if h.Role != "" && model.ValidateName(h.Role) != nil {
		s.refuse(conn, fw, refuseProtocol, fmt.Sprintf("role %q is not a name", h.Role))
		return
	}
	for _, n := range h.Below {
		if model.ValidateName(n) != nil {
			s.refuse(conn, fw, refuseProtocol, fmt.Sprintf("node below %q is not a node name", n))
			return
		}
	}
	s.mu.Lock()
	m := s.mounts[name]
	if m == nil {
		m = newMount(s, rec)
		s.mounts[name] = m
	}
	s.mu.Unlock()
	if s.cfg.Replicated {
		// Another replica may have led since this one read the mount:
		// resume from the cursor in the model.
		var mr mountRecord
		if err := getRecord(s.model, recMount, name, &mr); err == nil {
			m.mu.Lock()
			m.rec = mr
			m.mu.Unlock()
		}
	}
	m.attach(conn, st, fr, fw, h, rec)
}

// mount is one provider mounted here, across its connections.
type mount struct {
	s    *Service
	name string
	path model.Path

	// applyMu serialises applying the mirror; digests hold it to read a
	// mirror that matches its cursor.
	applyMu sync.Mutex

	mu        sync.Mutex
	rec       mountRecord // as last committed
	grant     string
	accept    []model.Path // subtrees the join token accepts
	subtrees  []model.Path // effective: published ∩ accepted
	bounds    bounds       // where the connected provider's data may land
	conn      *quic.Conn
	state     string
	since     time.Time
	errs      linkErrors
	rejected  uint64 // entries refused for being outside bounds
	head      uint64
	caughtUp  time.Time // last time the mirror was at the provider's head
	revoked   bool
	persisted time.Time // last commit of a progress-only cursor
}

func newMount(s *Service, rec peerRecord) *mount {
	return &mount{s: s, name: rec.Name, path: mountPath(rec.Name), grant: rec.Grant, accept: rec.Subtrees, state: "down", since: time.Now(), revoked: rec.Revoked}
}

func (m *mount) belowNames() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec.Below
}

func (m *mount) setRevoked() {
	m.mu.Lock()
	m.revoked = true
	m.state = "revoked"
	m.since = time.Now()
	m.mu.Unlock()
}

func (m *mount) disconnect(code quic.ApplicationErrorCode, why string) {
	m.mu.Lock()
	c := m.conn
	m.mu.Unlock()
	if c != nil {
		c.CloseWithError(code, why)
	}
}

func (m *mount) setState(state, lastErr string) {
	m.mu.Lock()
	if m.state != state {
		m.state, m.since = state, time.Now()
	}
	if state == "connected" {
		m.errs.healthy()
	}
	m.errs.set(lastErr, time.Now())
	m.mu.Unlock()
	m.s.metrics.linkState(m.name, "provider", state)
}

// attach runs a provider's connection until it ends: welcome, then the
// sync stream is applied to the mirror while calls use the connection.
func (m *mount) attach(conn *quic.Conn, st *quic.Stream, fr *frameReader, fw *frameWriter, h hello, rec peerRecord) {
	s := m.s
	m.mu.Lock()
	old := m.conn
	m.conn = conn
	m.grant, m.accept, m.revoked = rec.Grant, rec.Subtrees, false
	m.subtrees = effective(h.Publish, rec.Subtrees)
	m.bounds = newBounds(m.path, h.Publish, rec.Subtrees)
	cur := m.rec
	m.head = h.Head
	m.mu.Unlock()
	if old != nil {
		old.CloseWithError(closeReplaced, "replaced by a newer connection")
	}
	defer func() {
		m.mu.Lock()
		if m.conn == conn {
			m.conn = nil
		}
		m.mu.Unlock()
	}()

	if err := m.ensureRoot(h); err != nil {
		s.log.Warn("federation: mount root", "peer", m.name, "err", err)
		conn.CloseWithError(closeProtocol, "internal error")
		return
	}
	logIDMatch := cur.LogID == h.LogID
	cursor := cur.Cursor
	if !logIDMatch {
		cursor = 0
	}
	if err := fw.write(kindWelcome, welcome{Version: wireVersion, Node: s.cfg.Name, Grant: rec.Grant, Subtrees: rec.Subtrees, Cursor: cursor, LogID: cur.LogID, Resync: cur.Resync, Features: []string{FeatureFetch}}); err != nil {
		return
	}
	m.setState("connected", "")
	s.log.Info("federation: provider connected", "peer", m.name, "remote", conn.RemoteAddr().String(), "cursor", cursor, "subtrees", m.subtrees)
	s.belowChanged()

	done := make(chan struct{})
	go func() {
		defer close(done)
		m.control(conn, fr, fw)
	}()
	var fetches sync.WaitGroup
	err := m.sync(conn, h.LogID, &fetches)
	if err != nil && conn.Context().Err() == nil {
		s.log.Warn("federation: sync stream ended", "peer", m.name, "err", err)
		conn.CloseWithError(closeProtocol, "sync failed")
	}
	<-conn.Context().Done()
	<-done
	fetches.Wait()
	m.mu.Lock()
	revoked := m.revoked
	m.mu.Unlock()
	if revoked {
		m.setState("revoked", "")
	} else {
		m.setState("down", errString(context.Cause(conn.Context())))
	}
	s.log.Info("federation: provider disconnected", "peer", m.name, "err", context.Cause(conn.Context()))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ensureRoot creates the mount's root context (type "peer", labelled
// with the provider's role when it tells one), and records the
// provider's announced subtrees, below set and role.
func (m *mount) ensureRoot(h hello) error {
	root := model.Mutation{Op: model.OpPut, Path: m.path, Type: PeerType}
	if h.Role != "" {
		root.Labels = map[string]string{RoleLabel: h.Role}
	}
	return m.updateRecord(func(r *mountRecord) { r.Below, r.Publish, r.Role = h.Below, h.Publish, h.Role }, root)
}

// control serves the control stream after the welcome: renewals and
// updates of the below set.
func (m *mount) control(conn *quic.Conn, fr *frameReader, fw *frameWriter) {
	s := m.s
	for {
		k, body, err := fr.next()
		if err != nil {
			if !errors.Is(err, io.EOF) && conn.Context().Err() == nil {
				conn.CloseWithError(closeProtocol, "control stream: "+err.Error())
			}
			return
		}
		switch k {
		case kindRenew:
			var r renew
			if err := decode(k, body, &r); err != nil {
				conn.CloseWithError(closeProtocol, err.Error())
				return
			}
			cert, err := m.renew(r.CSR)
			if err != nil {
				s.log.Warn("federation: renewal failed", "peer", m.name, "err", err)
				fw.write(kindRefuse, refuse{Code: refuseInternal, Message: err.Error()})
				continue
			}
			fw.write(kindRenewed, renewed{Cert: cert})
		case kindBelow:
			var b below
			if err := decode(k, body, &b); err != nil {
				conn.CloseWithError(closeProtocol, err.Error())
				return
			}
			if slices.Contains(b.Names, s.cfg.Name) {
				s.log.Warn("federation: provider now has this node below it; dropping the link to avoid a loop", "peer", m.name)
				m.setState("down", "loop: this node is below "+m.name)
				conn.CloseWithError(closeRefused, refuseLoop)
				return
			}
			m.updateBelow(b.Names)
		default:
			// Unknown messages from a newer provider are ignored.
		}
	}
}

func (m *mount) updateBelow(names []string) {
	if err := m.updateRecord(func(r *mountRecord) { r.Below = names }); err != nil {
		m.s.log.Warn("federation: recording the nodes below a peer", "peer", m.name, "err", err)
	}
	m.s.belowChanged()
}

// updateRecord changes the mount's record and commits it, with extra
// mutations in the same commit, while no batch is being applied.
func (m *mount) updateRecord(change func(*mountRecord), extra ...model.Mutation) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	rec := m.rec
	m.mu.Unlock()
	change(&rec)
	put, err := putRecord(recMount, m.name, rec)
	if err != nil {
		return err
	}
	if _, err := m.s.model.Apply(m.s.ctx, append(extra, put)...); err != nil {
		return err
	}
	m.mu.Lock()
	m.rec = rec
	m.mu.Unlock()
	return nil
}

// renew signs a new certificate for the provider and records its serial
// (keeping the previous one valid until the provider reconnects with it).
func (m *mount) renew(csr []byte) ([]byte, error) {
	s := m.s
	cert, err := signCSR(s.cfg.CA, s.cfg.CAKey, csr, m.name, s.cfg.CertValidity)
	if err != nil {
		return nil, err
	}
	var rec peerRecord
	if err := getRecord(s.model, recPeer, m.name, &rec); err != nil {
		return nil, err
	}
	rec.Serials = append(rec.Serials, hex.EncodeToString(cert.SerialNumber.Bytes()))
	if len(rec.Serials) > 2 {
		rec.Serials = rec.Serials[len(rec.Serials)-2:]
	}
	put, err := putRecord(recPeer, m.name, rec)
	if err != nil {
		return nil, err
	}
	if _, err := s.model.Apply(s.ctx, put); err != nil {
		return nil, err
	}
	s.log.Info("federation: renewed a peer certificate", "peer", m.name, "expires", cert.NotAfter)
	return cert.Raw, nil
}

func (m *mount) status() PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := PeerStatus{
		Name: m.name, Direction: "provider", State: m.state, Grant: m.grant,
		Subtrees: m.subtrees, Mount: m.path, Cursor: m.rec.Cursor, Head: m.head,
		Gaps: m.rec.Gaps, Since: m.since, Below: m.rec.Below, RejectedEntries: m.rejected, Role: m.rec.Role,
	}
	m.errs.fill(&st)
	if st.Subtrees == nil {
		st.Subtrees = effective(m.rec.Publish, m.accept)
	}
	if m.head > m.rec.Cursor {
		st.LagEntries = m.head - m.rec.Cursor
		if !m.caughtUp.IsZero() {
			st.LagSeconds = time.Since(m.caughtUp).Seconds()
		}
	}
	if m.conn != nil {
		cs := m.conn.ConnectionStats()
		st.RTTMillis = float64(cs.SmoothedRTT.Microseconds()) / 1000
		st.BytesSent, st.BytesReceived = cs.BytesSent, cs.BytesReceived
		st.Address = m.conn.RemoteAddr().String()
	}
	return st
}
