package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// Federation (docs/api.md, "Federation"; docs/federation.md).

// Error codes of federation answers (APIError.Code).
const (
	CodePeerUnreachable = apitypes.CodePeerUnreachable // the link to the owning peer is down
	CodePeerForbidden   = apitypes.CodePeerForbidden   // the peer's grant to this node does not allow it
	CodeMountedReadOnly = apitypes.CodeMountedReadOnly
)

// Peer is one federation link as GET /api/v1/peers shows it.
type Peer = apitypes.Peer

// NewPeerToken asks for a join token for the node named Peer. Grant is
// "read" or "operate"; Subtrees (empty: all) limit what this node accepts
// of what the peer publishes; TTL zero is the server's default (24h).
type NewPeerToken struct {
	Peer     string        `json:"peer"`
	Grant    string        `json:"grant"`
	Subtrees []string      `json:"subtrees,omitempty"`
	TTL      time.Duration `json:"-"`
}

// PeerToken is a created join token; Token is shown only once.
type PeerToken struct {
	Token    string    `json:"token"`
	Peer     string    `json:"peer"`
	Grant    string    `json:"grant"`
	Subtrees []string  `json:"subtrees"`
	Expires  time.Time `json:"expires"`
}

// MountCheck is the digest comparison of one mount with its peer.
type MountCheck = apitypes.MountCheck

// Upstream is a consumer this node publishes to, as a reload applied it.
type Upstream struct {
	Address string   `json:"address"`
	Publish []string `json:"publish"`
}

// AuditRecord is one entry of the node's audit trail: a state-changing
// action on its API, or a call or read that reached it over a link
// (Consumer set). See docs/api.md, "Audit trail".
type AuditRecord = apitypes.AuditRecord

// Peers lists the node's federation links, both directions.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out struct {
		Peers []Peer `json:"peers"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/peers", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Peers, nil
}

// CreatePeerToken creates a one-time join token for a peer below the node.
func (c *Client) CreatePeerToken(ctx context.Context, t NewPeerToken) (*PeerToken, error) {
	body := struct {
		NewPeerToken
		TTL string `json:"ttl,omitempty"`
	}{t, durationString(t.TTL)}
	var out PeerToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/peer-tokens", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokePeer refuses a peer's certificates from now on and drops its link.
func (c *Client) RevokePeer(ctx context.Context, name string) error {
	p, err := idPath("/api/v1/peers/", name, "/revoke")
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, p, nil, nil, nil)
}

// VerifyFederation compares every mount with its peer.
func (c *Client) VerifyFederation(ctx context.Context) ([]MountCheck, error) {
	var out struct {
		Mounts []MountCheck `json:"mounts"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/federation/verify", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Mounts, nil
}

// ReloadFederation makes the node re-read federation.upstreams from its
// config file and apply them.
func (c *Client) ReloadFederation(ctx context.Context) ([]Upstream, error) {
	var out struct {
		Upstreams []Upstream `json:"upstreams"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/federation/reload", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Upstreams, nil
}

// Audit returns the newest limit audit records (0: the server's default,
// 100), newest first.
func (c *Client) Audit(ctx context.Context, limit int) ([]AuditRecord, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var out struct {
		Records []AuditRecord `json:"records"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/audit", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Records, nil
}

// GetContextLive reads the context at a mounted path (/peers/<peer>/...)
// from the node that owns it rather than from the mirror.
func (c *Client) GetContextLive(ctx context.Context, path string) (*Context, error) {
	var x Context
	q := url.Values{"live": {"true"}}
	if err := c.do(ctx, http.MethodGet, "/api/v1/contexts"+contextPath(path), q, nil, &x); err != nil {
		return nil, err
	}
	return &x, nil
}
