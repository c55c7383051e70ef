package federation

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/strata-dm/strata/model"
)

// Node-local records (never published) holding federation state.
const (
	recToken  = "fed-token"  // consumer: join tokens by secret hash
	recPeer   = "fed-peer"   // consumer: joined providers by name
	recMount  = "fed-mount"  // consumer: each mount's cursor, in the same commit as the mirror
	recCursor = "fed-cursor" // provider: each consumer's acknowledged cursor
	recGrant  = "fed-grant"  // provider: the grant each consumer holds here, recorded at join
	recNode   = "fed-node"   // this node's log id
)

func newB32() *base32.Encoding {
	return base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
}

// tokenRecord is a join token, stored under the hash of its secret.
type tokenRecord struct {
	Peer     string       `json:"peer"`
	Grant    string       `json:"grant"`
	Subtrees []model.Path `json:"subtrees,omitempty"`
	Expires  time.Time    `json:"expires"`
	Created  time.Time    `json:"created"`
}

// peerRecord is a provider that joined this node.
type peerRecord struct {
	Name     string       `json:"name"`
	Grant    string       `json:"grant"`
	Subtrees []model.Path `json:"subtrees,omitempty"`
	// Serials are the hex serial numbers of its valid certificates (the
	// current one and the one it renewed from).
	Serials []string  `json:"serials"`
	Revoked bool      `json:"revoked,omitempty"`
	Joined  time.Time `json:"joined"`
}

// mountRecord is how far a mirror got: written in the same commit as the
// mirrored changes, so the cursor never runs ahead of or behind the data.
type mountRecord struct {
	LogID  string `json:"log_id"`
	Cursor uint64 `json:"cursor"`
	Gaps   uint64 `json:"gaps,omitempty"`
	// Below is what the provider last announced as mounted under it.
	Below []string `json:"below,omitempty"`
	// Role is the provider's announced role ("" when it told none).
	Role string `json:"role,omitempty"`
	// Publish is the provider's announced published subtrees.
	Publish []model.Path `json:"publish,omitempty"`
	// Resync asks the provider for a snapshot at the next connection.
	Resync bool `json:"resync,omitempty"`
}

// grantRecord is the grant a provider gives a consumer, as the provider
// recorded it when it joined: the only grant it enforces. Whatever the
// consumer says later (its welcome) can narrow it, never widen it.
type grantRecord struct {
	Consumer string       `json:"consumer"`
	Address  string       `json:"address"`
	Grant    string       `json:"grant"`
	Subtrees []model.Path `json:"subtrees,omitempty"`
	Joined   time.Time    `json:"joined"`
}

// narrowGrant is the grant enforced on a link: the recorded one, lowered
// to read when the consumer asks for no more (an unknown or empty
// recorded grant is read).
func narrowGrant(recorded, asked string) string {
	if recorded != GrantOperate || asked == GrantRead {
		return GrantRead
	}
	return GrantOperate
}

// consumerMeta is what a provider keeps about a consumer it joined.
type consumerMeta struct {
	Consumer string   `json:"consumer"`
	Grant    string   `json:"grant"`
	Subtrees []string `json:"subtrees,omitempty"`
}

func decodeConsumerMeta(data []byte, c *creds) error {
	var m consumerMeta
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	if m.Consumer == "" {
		return errors.New("no consumer name")
	}
	c.consumer, c.grant, c.subtrees = m.Consumer, m.Grant, m.Subtrees
	return nil
}

func putRecord(kind, key string, v any) (model.Mutation, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return model.Mutation{}, err
	}
	return model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: kind, Key: key, Value: data}}, nil
}

func getRecord(m *model.Model, kind, key string, v any) error {
	data, err := m.Record(kind, key)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// LogIDKind and LogIDKey name the record holding this node's change-log
// id. A store restored from a backup leaves it out (strata restore): the
// restored log goes on from the backup's last sequence number, reusing
// numbers the node's consumers may have read from the lost history after
// it, so they must see a new log and resynchronise.
const (
	LogIDKind = recNode
	LogIDKey  = "log-id"
)

// logID returns this node's change-log identity, creating it once. A
// consumer's cursor is only meaningful for the log it was taken from: a
// provider whose store was replaced gets a new id, and its consumers
// resynchronise instead of trusting stale cursors.
func logID(ctx context.Context, m *model.Model) (string, error) {
	data, err := m.Record(LogIDKind, LogIDKey)
	if err == nil {
		return string(data), nil
	}
	if !errors.Is(err, model.ErrNotFound) {
		return "", err
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	if err := m.PutRecord(ctx, LogIDKind, LogIDKey, []byte(id)); err != nil {
		return "", fmt.Errorf("federation: store log id: %w", err)
	}
	return id, nil
}

// effective intersects what a provider publishes with what a consumer
// accepts: the subtrees that actually flow over a link. An empty publish
// or accept list means the whole tree; an empty result means nothing
// flows (see within).
func effective(publish, accept []model.Path) []model.Path {
	if len(publish) == 0 {
		publish = []model.Path{model.Root}
	}
	if len(accept) == 0 {
		return model.NormalizeSubtrees(publish)
	}
	return model.IntersectSubtrees(publish, accept)
}

// within reports whether p is inside any of the subtrees.
func within(p model.Path, subtrees []model.Path) bool {
	for _, s := range subtrees {
		if p.Within(s) {
			return true
		}
	}
	return false
}

// mountPath is where provider name is mounted.
func mountPath(name string) model.Path {
	return model.Path(string(PeersRoot) + "/" + name)
}

// mapPath maps a provider path into its mount.
func mapPath(mount, p model.Path) model.Path {
	if p.IsRoot() {
		return mount
	}
	return mount + p
}

// unmapPath maps a mirrored path back to the provider's path.
func unmapPath(mount, p model.Path) model.Path {
	if p == mount {
		return model.Root
	}
	return p[len(mount):]
}

// splitMounted splits /peers/<name>/rest into name and /rest.
func splitMounted(p model.Path) (name string, rest model.Path, ok bool) {
	segs := p.Segments()
	if len(segs) < 2 || "/"+segs[0] != string(PeersRoot) {
		return "", "", false
	}
	name = segs[1]
	rest = model.Root
	if len(segs) > 2 {
		rest = model.Path(string(p)[len(PeersRoot)+1+len(name):])
	}
	return name, rest, true
}
