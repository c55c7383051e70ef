package apitypes

import "time"

// Peer is one federation link as GET /api/v1/peers shows it (docs/api.md,
// "Federation"; docs/federation.md).
type Peer = PeerOf[string]

// PeerOf is Peer with its paths of type P: the federation service uses
// the node's validated path type (model.Path), everyone else a string.
// The JSON is the same.
type PeerOf[P ~string] struct {
	// Name is the other node ("" for an upstream that has not joined yet).
	Name string `json:"name"`
	// Direction is "provider" for a node mounted here and "consumer" for
	// a node this one publishes to.
	Direction string `json:"direction"`
	Address   string `json:"address,omitempty"`
	// Role is a provider's role as it announced it (probe, regional,
	// hq, reporting), empty when unknown.
	Role string `json:"role,omitempty"`
	// State is connected, connecting, down, joining or revoked.
	State    string `json:"state"`
	Grant    string `json:"grant,omitempty"`
	Subtrees []P    `json:"subtrees,omitempty"`
	// Mount is where a provider's subtrees show here.
	Mount P `json:"mount,omitempty"`
	// Cursor is the provider sequence number applied here (provider) or
	// acknowledged by the consumer (consumer); Head the provider's last.
	Cursor     uint64  `json:"cursor"`
	Head       uint64  `json:"head"`
	LagEntries uint64  `json:"lag_entries"`
	LagSeconds float64 `json:"lag_seconds"`
	// Gaps counts resynchronisations that lost history (see the
	// federation.gap events on the mount).
	Gaps          uint64    `json:"gaps"`
	RTTMillis     float64   `json:"rtt_ms"`
	BytesSent     uint64    `json:"bytes_sent"`
	BytesReceived uint64    `json:"bytes_received"`
	Since         time.Time `json:"since"`
	// LastError is what affects the link now (empty once it is healthy
	// again), LastErrorTime when it happened; PreviousError is the last
	// error the link recovered from, and when.
	LastError         string    `json:"last_error,omitempty"`
	LastErrorTime     time.Time `json:"last_error_time,omitzero"`
	PreviousError     string    `json:"previous_error,omitempty"`
	PreviousErrorTime time.Time `json:"previous_error_time,omitzero"`
	// RejectedEntries counts the entries and snapshot contexts a provider
	// sent outside its bounds (bad paths, outside what it publishes or
	// what this node accepted), refused since this node started.
	RejectedEntries uint64    `json:"rejected_entries,omitempty"`
	CertExpires     time.Time `json:"cert_expires,omitzero"`
	// Below lists the nodes mounted, transitively, under a provider.
	Below []string `json:"below,omitempty"`
}

// MountCheck is the digest comparison of one mount with its provider, as
// POST /api/v1/federation/verify answers it.
type MountCheck = MountCheckOf[string]

// MountCheckOf is MountCheck with its path of type P (see PeerOf).
type MountCheckOf[P ~string] struct {
	Peer  string `json:"peer"`
	Mount P      `json:"mount"`
	// Match is true when the mirror equals the provider's published
	// subtrees at the same sequence number.
	Match    bool   `json:"match"`
	Seq      uint64 `json:"seq"`
	Contexts int    `json:"contexts"`
	Digest   string `json:"digest,omitempty"`
	// Source is the provider's digest when it differs.
	Source string `json:"source,omitempty"`
	Error  string `json:"error,omitempty"`
}
