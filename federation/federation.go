// Package federation links Strata nodes into a hierarchy over QUIC.
//
// A provider (the lower tier) dials each of its consumers (upper tiers)
// from one UDP socket; nothing ever dials into a provider. Over that link
// the provider publishes subtrees of its tree: the consumer mirrors them at
// /peers/<provider>/... in its own store, by following the provider's
// change log from its own durable cursor (snapshot + tail when the log was
// compacted past it). Calls and live reads on a mounted path go the other
// way, hop by hop, routed by the path: the consumer strips /peers/<name>
// and hands the rest to that provider, which checks the grant it gave the
// consumer.
//
// Joining: the consumer creates a one-time join token (CreateJoinToken);
// the provider's first connection presents it and a certificate request,
// and gets a node certificate signed by the consumer's CA. Every later
// connection is mutual TLS 1.3 with that certificate (ALPN strata-fed/1).
//
// The package builds on model only; node wires it (see docs/federation.md
// for the protocol).
package federation

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/model"
)

// ALPN is the protocol name links negotiate; its suffix is the major
// version of the wire protocol.
const ALPN = "strata-fed/1"

// PeersRoot is where a consumer mounts its providers.
const PeersRoot model.Path = "/peers"

// A mount's root context (PeersRoot/<provider>) has type PeerType and,
// when the provider announced its role, the label RoleLabel with it. A
// consumer that publishes its mounts upward publishes these too, so a
// node sees every node below it, with its role, in its tree (search
// type=peer).
const (
	PeerType  = "peer"
	RoleLabel = "role"
)

// Grants a consumer can hold on what a provider publishes to it.
const (
	GrantRead    = "read"    // mirror and live reads
	GrantOperate = "operate" // read, plus function calls
)

// Errors callers branch on with errors.Is.
var (
	// ErrUnreachable: the link to the provider owning a path is down (or
	// the provider is not known); the call was not delivered.
	ErrUnreachable = errors.New("peer unreachable")
	// ErrForbidden: the provider refused: its grant to this consumer does
	// not allow the operation.
	ErrForbidden = errors.New("not granted by the peer")
	// ErrBadToken: a join token is unknown, used, expired or malformed.
	ErrBadToken = errors.New("invalid join token")
)

// Config configures a Service.
type Config struct {
	// Name is this node's name, unique among any consumer's providers.
	Name string
	// Role is this node's role (probe, regional, hq, reporting; "" when
	// unset), told to its consumers, which label its mount with it.
	Role   string
	Model  *model.Model
	Logger *slog.Logger

	// ListenAddr is the UDP address providers dial ("" = no listener:
	// the node only dials its consumers, from an ephemeral port).
	ListenAddr string
	// CA is this node's certificate authority: it signs the certificates
	// of providers that join and the listener's certificate.
	CA    *x509.Certificate
	CAKey crypto.Signer
	// CertValidity is the lifetime of node certificates issued to
	// providers (default 30 days); providers renew them when a third of
	// it is left.
	CertValidity time.Duration

	// StateDir keeps, per upstream, the node certificate and the
	// consumer's CA obtained by joining.
	StateDir string
	// Upstreams are the consumers this node publishes to.
	Upstreams []Upstream

	// Local serves calls and live reads that reach this node.
	Local Local

	// KeepAlive and IdleTimeout tune links (defaults 5 s and 30 s).
	KeepAlive   time.Duration
	IdleTimeout time.Duration
	// LogBudget bounds the change-log entries kept for consumers that are
	// behind (default 5,000,000); a consumer further behind gets a
	// snapshot and a gap marker.
	LogBudget uint64
	// MaxFrame bounds one wire frame (default 16 MiB).
	MaxFrame int
	// Clock decides when node certificates are renewed (nil: the system
	// clock; tests use a fake one).
	Clock Clock

	// Slots, when set, bound the mirrors' work on what providers send:
	// decoding and translating a batch or snapshot chunk holds one slot
	// (the commit does not). The node shares them with its MQTT ingest,
	// so that device work of every source stays below its Ps. nil:
	// unbounded.
	Slots *slots.Limiter

	// Replicated makes the service one replica's of a cluster (several
	// replicas that are one node, docs/cluster.md): its upstream links
	// run only while SetLinksActive(true) (on the leader); its change-log
	// id is read from the model when a link connects (the leader creates
	// it); and the credentials a link obtains by joining, or renews, are
	// kept in the model too (record fed-creds), so that whichever replica
	// leads next connects with them. StateDir is then only a local copy.
	Replicated bool
}

// Upstream is one consumer this node publishes to.
type Upstream struct {
	// Address is the consumer's federation listener, HOST:PORT.
	Address string `json:"address" yaml:"address"`
	// Token is the join token; used once, on the first connection.
	Token string `json:"token,omitempty" yaml:"token,omitempty"`
	// Publish lists the subtrees published; empty means the whole tree.
	Publish []model.Path `json:"publish,omitempty" yaml:"publish,omitempty"`
	// Replicas are the other addresses of a consumer that is a cluster:
	// the link tries Address, then each of these in turn, until one
	// accepts (the leader). Address names the link.
	Replicas []string `json:"replicas,omitempty" yaml:"replicas,omitempty"`
	// Bandwidth bounds the artifact bytes fetched over the link, in bytes
	// per second (0: unlimited); Windows are the daily times in which
	// it fetches (none: always). The sync is not bounded by either.
	Bandwidth int64    `json:"bandwidth,omitempty" yaml:"bandwidth,omitempty"`
	Windows   []Window `json:"windows,omitempty" yaml:"windows,omitempty"`
}

// Identity is who a routed call or read is made for: the operator at the
// tier where it started, and the consumers it went through.
type Identity struct {
	User   string `cbor:"1,keyasint,omitempty" json:"user,omitempty"`
	Tenant string `cbor:"2,keyasint,omitempty" json:"tenant,omitempty"`
	// System is set for a system administrator (all tenants).
	System bool `cbor:"3,keyasint,omitempty" json:"system,omitempty"`
	// Via lists the nodes the request came through, nearest last.
	Via []string `cbor:"4,keyasint,omitempty" json:"via,omitempty"`
}

// CallRequest is a function call on a path.
type CallRequest struct {
	Path     model.Path      `cbor:"1,keyasint" json:"path"`
	Function string          `cbor:"2,keyasint" json:"function"`
	Args     json.RawMessage `cbor:"3,keyasint,omitempty" json:"args,omitempty"`
	// Wait is how long to wait for the result before answering with a
	// pending job; Deadline is when the job expires (zero: the owner's
	// default).
	Wait     time.Duration `cbor:"4,keyasint,omitempty" json:"wait,omitempty"`
	Deadline time.Time     `cbor:"5,keyasint,omitempty" json:"deadline,omitzero"`
	Identity Identity      `cbor:"6,keyasint" json:"identity"`
}

// CallResult is a call's answer: a final status with its result, or a
// pending job when the wait ran out.
type CallResult struct {
	Job    string          `cbor:"1,keyasint,omitempty" json:"job,omitempty"`
	State  string          `cbor:"2,keyasint" json:"state"` // the job's state
	Result json.RawMessage `cbor:"3,keyasint,omitempty" json:"result,omitempty"`
	Error  string          `cbor:"4,keyasint,omitempty" json:"error,omitempty"`
	// Node is the path, relative to the answering tier, of the node that
	// owns the job ("" for the local node).
	Node model.Path `cbor:"5,keyasint,omitempty" json:"node,omitempty"`
	// Path is the job's target, on the owning node.
	Path model.Path `cbor:"6,keyasint,omitempty" json:"path,omitempty"`
	// JobJSON is the whole job as the owning node's API shows it (a JSON
	// object). Tiers in between pass it on untouched and the reading tier
	// decodes it leniently, so fields added by a newer owner reach the
	// operator through older tiers; an older owner leaves it empty and
	// the fields above are all there is.
	JobJSON json.RawMessage `cbor:"7,keyasint,omitempty" json:"job_json,omitempty"`
}

// Local is what a node offers to calls and reads that reach it over a
// link. Implementations enforce tenants (Identity) and record the audit
// trail; the link has already checked the consumer's grant.
type Local interface {
	Call(ctx context.Context, consumer string, req CallRequest) (CallResult, error)
	Get(ctx context.Context, consumer string, id Identity, p model.Path) (*model.Context, error)
}

// JobReader is implemented by a Local whose jobs consumers may follow
// (GET /api/v1/jobs/{id}?node=/peers/...): Job returns a job this node
// owns, as the identity may see it.
type JobReader interface {
	Job(ctx context.Context, consumer string, id Identity, jobID string) (CallResult, error)
}

// BulkReceiver is implemented by a Local that takes bulk jobs from its
// consumers (node/bulk): body is the sender's request, opaque to the
// links; subtrees are what this node publishes to consumer, outside of
// which the job must not run. Only a consumer granted operate reaches
// it.
type BulkReceiver interface {
	Bulk(ctx context.Context, consumer string, id Identity, subtrees []model.Path, body []byte) error
}

// JoinGrant is what a join token allows the joining provider.
type JoinGrant struct {
	Peer     string        // the provider's node name
	Grant    string        // GrantRead or GrantOperate
	Subtrees []model.Path  // what the consumer accepts; empty: all published
	TTL      time.Duration // token lifetime (default 24 h)
}

// TLS returns a minimal TLS 1.3 configuration with the federation ALPN.
func tlsBase() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{ALPN}}
}

// PeerStatus is one link, as GET /api/v1/peers shows it (apitypes.Peer,
// with the node's path type).
type PeerStatus = apitypes.PeerOf[model.Path]

// VerifyResult is the digest comparison of one mount with its source
// (apitypes.MountCheck, with the node's path type).
type VerifyResult = apitypes.MountCheckOf[model.Path]
