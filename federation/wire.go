package federation

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fxamacker/cbor/v2"

	"github.com/strata-dm/strata/model"
)

// The wire: every stream carries frames, each a uvarint length followed by
// that many bytes of CBOR: an envelope {1: kind, 2: body}. Bodies are CBOR
// maps with integer keys; decoders ignore unknown keys, and a stream
// ignores frames of kinds it does not know, so a newer tier can add
// fields and messages that an older one skips. Incompatible changes take a
// new ALPN ("strata-fed/2").

// wireVersion is the minor version a node announces in hello and welcome.
const wireVersion = 1

// defaultMaxFrame bounds one frame; larger ones end the stream.
const defaultMaxFrame = 16 << 20

// kind is a frame's message type. Values are on the wire: never renumber.
type kind uint16

const (
	// control stream (the first stream the provider opens)
	kindHello   kind = 1 // provider → consumer: who it is, what it publishes
	kindWelcome kind = 2 // consumer → provider: accepted, with its cursor
	kindJoin    kind = 3 // provider → consumer: token + certificate request
	kindJoined  kind = 4 // consumer → provider: the signed certificate
	kindRefuse  kind = 5 // either way: refused, with a reason; then close
	kindRenew   kind = 6 // provider → consumer: a new certificate request
	kindRenewed kind = 7 // consumer → provider: the renewed certificate
	kindBelow   kind = 8 // provider → consumer: the nodes mounted below changed

	// sync stream (the second stream the provider opens)
	kindSyncOpen      kind = 9  // provider → consumer: first frame of the sync stream
	kindBatch         kind = 10 // provider → consumer: log entries
	kindSnapshotBegin kind = 11 // provider → consumer: a snapshot follows
	kindSnapshotChunk kind = 12 // provider → consumer: contexts of the snapshot
	kindSnapshotEnd   kind = 13 // provider → consumer: snapshot complete
	kindGap           kind = 14 // provider → consumer: history was lost
	kindAck           kind = 15 // consumer → provider: applied durably up to a sequence

	// request streams (one per call or read, opened by the consumer)
	kindRequest  kind = 20
	kindResponse kind = 21

	// fetch streams (one per artifact fetch, opened by the provider
	// after its sync stream; artifacts.go)
	kindFetch     kind = 30 // provider → consumer: the artifact and offset wanted
	kindFetchHead kind = 31 // consumer → provider: its size (or an error); raw bytes follow
)

type envelope struct {
	Kind kind   `cbor:"1,keyasint"`
	Body []byte `cbor:"2,keyasint,omitempty"`
}

type hello struct {
	Version uint         `cbor:"1,keyasint"`
	Node    string       `cbor:"2,keyasint"`
	LogID   string       `cbor:"3,keyasint"`
	Publish []model.Path `cbor:"4,keyasint,omitempty"`
	Below   []string     `cbor:"5,keyasint,omitempty"`
	Head    uint64       `cbor:"6,keyasint,omitempty"`
	// Role is the provider's role (probe, regional, ...); the consumer
	// labels the mount's root context with it (RoleLabel).
	Role string `cbor:"7,keyasint,omitempty"`
}

type welcome struct {
	Version  uint         `cbor:"1,keyasint"`
	Node     string       `cbor:"2,keyasint"`
	Grant    string       `cbor:"3,keyasint"`
	Subtrees []model.Path `cbor:"4,keyasint,omitempty"`
	// Cursor is the last provider sequence applied durably; LogID the
	// provider log it belongs to ("" before the first sync).
	Cursor uint64 `cbor:"5,keyasint"`
	LogID  string `cbor:"6,keyasint,omitempty"`
	// Resync asks for a snapshot before the tail (the mirror was found to
	// differ from its source).
	Resync bool `cbor:"7,keyasint,omitempty"`
	// Features lists what the consumer serves beyond the sync
	// (FeatureFetch).
	Features []string `cbor:"8,keyasint,omitempty"`
}

type join struct {
	Version uint   `cbor:"1,keyasint"`
	Node    string `cbor:"2,keyasint"`
	Token   string `cbor:"3,keyasint"`
	CSR     []byte `cbor:"4,keyasint"` // DER certificate request
}

type joined struct {
	Node     string       `cbor:"1,keyasint"`
	Cert     []byte       `cbor:"2,keyasint"` // DER
	CA       []byte       `cbor:"3,keyasint"` // DER
	Grant    string       `cbor:"4,keyasint"`
	Subtrees []model.Path `cbor:"5,keyasint,omitempty"`
}

// Refusal codes.
const (
	refuseToken    = "bad_token"
	refuseRevoked  = "revoked"
	refuseLoop     = "loop"
	refuseName     = "name"
	refuseProtocol = "protocol"
	refuseBusy     = "duplicate"
	refuseInternal = "internal"
	// refuseNotLeader: a replica of a cluster that does not lead it; the
	// provider tries the cluster's next address.
	refuseNotLeader = "not_leader"
)

type refuse struct {
	Code    string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
}

type renew struct {
	CSR []byte `cbor:"1,keyasint"`
}

type renewed struct {
	Cert []byte `cbor:"1,keyasint"`
}

type below struct {
	Names []string `cbor:"1,keyasint,omitempty"`
}

type syncOpen struct{}

type batch struct {
	Entries []model.Entry `cbor:"1,keyasint,omitempty"`
	// Last is the last provider sequence this batch covers (entries that
	// are not published are skipped but still covered).
	Last uint64 `cbor:"2,keyasint"`
	Head uint64 `cbor:"3,keyasint"`
}

// rawBatch is a batch as a provider sends it: the entries as its store
// holds them (each the encoding of a model.Entry).
type rawBatch struct {
	Entries []cbor.RawMessage `cbor:"1,keyasint,omitempty"`
	Last    uint64            `cbor:"2,keyasint"`
	Head    uint64            `cbor:"3,keyasint"`
}

type snapshotBegin struct {
	Seq uint64 `cbor:"1,keyasint"`
}

type snapshotChunk struct {
	Contexts []*model.Context `cbor:"1,keyasint,omitempty"`
}

type snapshotEnd struct {
	// Seq is the cursor after the snapshot: the tail follows it. It is the
	// sequence the snapshot reflects, or an earlier one when the provider
	// replays entries the snapshot already contains (always safe).
	Seq uint64 `cbor:"1,keyasint"`
}

type gap struct {
	From   uint64 `cbor:"1,keyasint"`
	To     uint64 `cbor:"2,keyasint"`
	Reason string `cbor:"3,keyasint,omitempty"`
}

type ack struct {
	Seq uint64 `cbor:"1,keyasint"`
}

// Request operations.
const (
	opCall   = "call"
	opGet    = "get"
	opDigest = "digest"
	opJob    = "job"
	opBulk   = "bulk"
	// opRelease sends a release down (ReleaseReceiver); its body is in
	// Bulk, opaque to the links.
	opRelease = "release"
	// opInfo asks for a report of the provider's (Informer), opaque to
	// the links: Job names which.
	opInfo = "info"
	// opAlert acts on an alert the provider (or a node below it) owns
	// (AlertActor): its body, in Bulk, is opaque to the links.
	opAlert = "alert"
	// opHistory reads a context's variable history on the node that
	// owns it (HistoryReader); the query and the answer are opaque to
	// the links.
	opHistory = "history"
)

type request struct {
	Op       string       `cbor:"1,keyasint"`
	Path     model.Path   `cbor:"2,keyasint,omitempty"`
	Call     *CallRequest `cbor:"3,keyasint,omitempty"`
	Identity Identity     `cbor:"4,keyasint"`
	// Deadline bounds the request (Unix nanoseconds; 0: none).
	Deadline int64 `cbor:"5,keyasint,omitempty"`
	// At is, for a digest, the consumer's cursor: the provider says
	// whether its published state is still the one at that cursor.
	At uint64 `cbor:"6,keyasint,omitempty"`
	// Job is, for a job read, the job's id on the node at Path.
	Job string `cbor:"7,keyasint,omitempty"`
	// Bulk is, for a bulk job request, its body (BulkReceiver), and for
	// a history read its query (HistoryReader): opaque to the links.
	Bulk []byte `cbor:"8,keyasint,omitempty"`
}

// Error codes in responses, mapped back to the sentinel errors.
const (
	codeNotFound    = "not_found"
	codeInvalid     = "invalid"
	codeForbidden   = "forbidden"
	codeUnreachable = "unreachable"
	codeConflict    = "conflict"
	codeTimeout     = "timeout"
	codeInternal    = "internal"
)

type response struct {
	Code    string         `cbor:"1,keyasint,omitempty"`
	Error   string         `cbor:"2,keyasint,omitempty"`
	Result  *CallResult    `cbor:"3,keyasint,omitempty"`
	Context *model.Context `cbor:"4,keyasint,omitempty"`
	Digest  *digest        `cbor:"5,keyasint,omitempty"`
	// Body is an info request's or a history read's answer, opaque to
	// the links.
	Body []byte `cbor:"6,keyasint,omitempty"`
}

// errFrameTooLarge ends a stream whose peer sent an oversized frame.
var errFrameTooLarge = errors.New("frame too large")

// frameWriter writes frames to a stream; safe for concurrent use.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

func (fw *frameWriter) write(k kind, body any) error {
	b, err := encodeFrame(k, body)
	if err != nil {
		return err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err = fw.w.Write(b)
	return err
}

// encodeFrame returns the whole frame (length prefix included).
func encodeFrame(k kind, body any) ([]byte, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = model.Marshal(body); err != nil {
			return nil, fmt.Errorf("encode %d: %w", k, err)
		}
	}
	env, err := model.Marshal(envelope{Kind: k, Body: raw})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(env)+binary.MaxVarintLen64)
	out = binary.AppendUvarint(out, uint64(len(env)))
	return append(out, env...), nil
}

// frameReader reads frames from a stream.
type frameReader struct {
	r   *bufio.Reader
	max int
}

func newFrameReader(r io.Reader, max int) *frameReader {
	if max <= 0 {
		max = defaultMaxFrame
	}
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next reads one frame and returns its kind and body.
func (fr *frameReader) next() (kind, []byte, error) {
	n, err := binary.ReadUvarint(fr.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("frame length: %w", err)
	}
	if n == 0 || n > uint64(fr.max) {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", errFrameTooLarge, n, fr.max)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		return 0, nil, fmt.Errorf("frame body: %w", err)
	}
	return decodeEnvelope(buf)
}

// decodeEnvelope parses one frame's envelope (without length prefix).
func decodeEnvelope(buf []byte) (kind, []byte, error) {
	var env envelope
	if err := model.Unmarshal(buf, &env); err != nil {
		return 0, nil, fmt.Errorf("frame: %w", err)
	}
	if env.Kind == 0 {
		return 0, nil, errors.New("frame: no kind")
	}
	return env.Kind, env.Body, nil
}

// decode parses a frame body into v.
func decode(k kind, body []byte, v any) error {
	if err := model.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode message %d: %w", k, err)
	}
	return nil
}

// expect reads the next frame and requires it to be of kind want (a refuse
// frame becomes an error carrying its reason).
func (fr *frameReader) expect(want kind, v any) error {
	k, body, err := fr.next()
	if err != nil {
		return err
	}
	if k == kindRefuse && want != kindRefuse {
		var r refuse
		if err := decode(k, body, &r); err != nil {
			return err
		}
		return &RefusedError{Code: r.Code, Message: r.Message}
	}
	if k != want {
		return fmt.Errorf("protocol: got message %d, want %d", k, want)
	}
	return decode(k, body, v)
}

// RefusedError is a link refused by the other node.
type RefusedError struct {
	Code    string
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused by peer (%s): %s", e.Code, e.Message)
}

// Is makes a refused join match ErrBadToken.
func (e *RefusedError) Is(target error) bool {
	return target == ErrBadToken && e.Code == refuseToken
}
