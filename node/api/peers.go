package api

import (
	"net/http"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Peers, peer tokens, verification, reload and the audit trail
// (docs/api.md, "Federation"). Listing peers needs the viewer role on
// /peers and verifying mounts the operator role there; creating peer
// tokens, revoking peers, reloading the upstreams and reading the audit
// trail are for system administrators.

func (s *Server) listPeers(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !p.Can(auth.RoleViewer, federation.PeersRoot) {
		return forbidden("listing the peers of", auth.RoleViewer, federation.PeersRoot)
	}
	fed, err := s.federation()
	if err != nil {
		return err
	}
	ps := fed.Peers()
	if ps == nil {
		ps = []federation.PeerStatus{}
	}
	writeJSON(w, http.StatusOK, struct {
		Peers []federation.PeerStatus `json:"peers"`
	}{ps})
	return nil
}

// peerTokenBody is the body creating a peer join token.
type peerTokenBody struct {
	Peer     string   `json:"peer"`
	Grant    string   `json:"grant"`
	Subtrees []string `json:"subtrees"`
	TTL      string   `json:"ttl"`
}

// peerTokenJSON is a new peer token with its secret, shown only now.
type peerTokenJSON struct {
	Token    string       `json:"token"`
	Peer     string       `json:"peer"`
	Grant    string       `json:"grant"`
	Subtrees []model.Path `json:"subtrees"`
	Expires  time.Time    `json:"expires"`
}

// parsePeerToken checks a peer token body; every error wraps
// model.ErrInvalid.
func parsePeerToken(b peerTokenBody) (federation.JoinGrant, error) {
	g := federation.JoinGrant{Peer: b.Peer, Grant: b.Grant}
	if err := model.ValidateName(b.Peer); err != nil {
		return g, invalidf("peer %q: want the joining node's name: %v", b.Peer, err)
	}
	switch b.Grant {
	case federation.GrantRead, federation.GrantOperate:
	default:
		return g, invalidf("grant %q: want %s or %s", b.Grant, federation.GrantRead, federation.GrantOperate)
	}
	for _, sub := range b.Subtrees {
		p, err := model.ParsePath(sub)
		if err != nil {
			return g, invalidf("subtree %q: %v", sub, err)
		}
		g.Subtrees = append(g.Subtrees, p)
	}
	ttl, err := parseTTL(b.TTL)
	if err != nil {
		return g, err
	}
	g.TTL = ttl
	return g, nil
}

func (s *Server) createPeerToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "creating peer tokens"); err != nil {
		return err
	}
	fed, err := s.federation()
	if err != nil {
		return err
	}
	var b peerTokenBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	g, err := parsePeerToken(b)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = g.Peer })
	token, expires, err := fed.CreateJoinToken(r.Context(), g)
	if err != nil {
		return err
	}
	subs := g.Subtrees
	if subs == nil {
		subs = []model.Path{}
	}
	s.log.Info("peer token created", "peer", g.Peer, "grant", g.Grant, "subtrees", subs, "by", p.User, "expires", expires)
	writeJSON(w, http.StatusCreated, peerTokenJSON{Token: token, Peer: g.Peer, Grant: g.Grant, Subtrees: subs, Expires: expires})
	return nil
}

func (s *Server) revokePeer(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "revoking peers"); err != nil {
		return err
	}
	fed, err := s.federation()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := model.ValidateName(name); err != nil {
		return invalidf("peer %q: %v", name, err)
	}
	if err := fed.Revoke(r.Context(), name); err != nil {
		return err
	}
	s.log.Info("peer revoked", "peer", name, "by", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) verifyFederation(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !p.Can(auth.RoleOperator, federation.PeersRoot) {
		return forbidden("verifying the mounts of", auth.RoleOperator, federation.PeersRoot)
	}
	fed, err := s.federation()
	if err != nil {
		return err
	}
	vs, err := fed.Verify(r.Context())
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []federation.VerifyResult{}
	}
	writeJSON(w, http.StatusOK, struct {
		Mounts []federation.VerifyResult `json:"mounts"`
	}{vs})
	return nil
}

// upstreamJSON is an upstream as the reload answers it (without its
// token).
type upstreamJSON struct {
	Address  string       `json:"address"`
	Publish  []model.Path `json:"publish"`
	Replicas []string     `json:"replicas,omitempty"`
}

func (s *Server) reloadFederation(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "reloading the federation upstreams"); err != nil {
		return err
	}
	if _, err := s.federation(); err != nil {
		return err
	}
	if s.cfg.ReloadFederation == nil {
		return apiError(http.StatusNotImplemented, codeNotImplemented, "this node cannot reload its configuration")
	}
	ups, err := s.cfg.ReloadFederation(r.Context())
	if err != nil {
		return err
	}
	out := make([]upstreamJSON, 0, len(ups))
	for _, u := range ups {
		pub := u.Publish
		if pub == nil {
			pub = []model.Path{}
		}
		out = append(out, upstreamJSON{Address: u.Address, Publish: pub, Replicas: u.Replicas})
	}
	s.log.Info("federation upstreams reloaded", "upstreams", len(out), "by", p.User)
	writeJSON(w, http.StatusOK, struct {
		Upstreams []upstreamJSON `json:"upstreams"`
	}{out})
	return nil
}
