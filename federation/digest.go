package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/strata-dm/strata/model"
)

// digest summarises published contexts: a SHA-256 over each context's
// canonical encoding (provider-relative path, type, tenant, labels,
// variables with their times and quality, functions) in path order.
// Creation times and versions are each node's own and are left out.
type digest struct {
	Seq   uint64 `cbor:"1,keyasint"`
	Count int    `cbor:"2,keyasint"`
	Sum   []byte `cbor:"3,keyasint"`
	// Comparable: no published change happened between the consumer's
	// cursor and Seq, so the two digests describe the same state.
	Comparable bool `cbor:"4,keyasint,omitempty"`
}

var canonical = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

type digestVar struct {
	Name    string
	Value   []byte
	Type    string
	Time    int64
	Quality string
}

type digestContext struct {
	Path      string
	Type      string
	Tenant    string
	Labels    map[string]string
	Variables []digestVar
	Functions []model.Function
}

type digester struct {
	h     hash.Hash
	count int
}

func newDigester() *digester { return &digester{h: sha256.New()} }

func (d *digester) add(p model.Path, c *model.Context) error {
	dc := digestContext{Path: string(p), Type: c.Type, Tenant: c.Tenant, Labels: c.Labels, Functions: c.Functions}
	for name, v := range c.Variables {
		dc.Variables = append(dc.Variables, digestVar{Name: name, Value: v.Value, Type: string(v.Type), Time: v.Time.UnixNano(), Quality: string(v.Quality)})
	}
	slices.SortFunc(dc.Variables, func(a, b digestVar) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	b, err := canonical.Marshal(dc)
	if err != nil {
		return err
	}
	d.h.Write(b)
	d.count++
	return nil
}

// sourceDigest is the provider's digest of what it publishes, and whether
// anything published changed after the consumer's cursor at.
func sourceDigest(ctx context.Context, m *model.Model, subtrees []model.Path, at uint64) (digest, error) {
	root := model.Root
	if len(subtrees) == 1 {
		root = subtrees[0]
	}
	d := newDigester()
	seq, err := m.Snapshot(root, func(c *model.Context) error {
		if c.Path.IsRoot() || !within(c.Path, subtrees) {
			return nil
		}
		return d.add(c.Path, c)
	})
	if err != nil {
		return digest{}, err
	}
	out := digest{Seq: seq, Count: d.count, Sum: d.h.Sum(nil)}
	if at <= seq {
		out.Comparable = true
		cursor, scanned := at, 0
		for cursor < seq && out.Comparable {
			es, err := m.ReadLog(ctx, cursor, 4096)
			if err != nil {
				out.Comparable = false
				break
			}
			for _, e := range es {
				if e.Seq > seq {
					break
				}
				if !e.Local() && within(e.Mutation.Path, subtrees) && e.Mutation.Op != model.OpEvent {
					out.Comparable = false
					break
				}
				cursor = e.Seq
			}
			if scanned += len(es); scanned > 1_000_000 {
				out.Comparable = false
			}
		}
	}
	return out, nil
}

// mirrorDigest is the digest of a mount, with the cursor it reflects.
func (m *mount) mirrorDigest() (digest, string, error) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	rec, subtrees := m.rec, m.subtrees
	m.mu.Unlock()
	if subtrees == nil {
		subtrees = effective(rec.Publish, m.accept)
	}
	d := newDigester()
	_, err := m.s.model.Snapshot(m.path, func(c *model.Context) error {
		if c.Path == m.path {
			return nil
		}
		p := unmapPath(m.path, c.Path)
		if !within(p, subtrees) {
			return nil
		}
		return d.add(p, c)
	})
	if err != nil {
		return digest{}, "", err
	}
	return digest{Seq: rec.Cursor, Count: d.count, Sum: d.h.Sum(nil)}, rec.LogID, nil
}

// verifyAttempts bounds how often Verify retries a mount whose source
// changed while it compared.
const verifyAttempts = 20

// Verify compares every mount with its source. A mount whose provider is
// unreachable, or that keeps changing, is reported with an error.
func (s *Service) Verify(ctx context.Context) ([]VerifyResult, error) {
	s.mu.Lock()
	mounts := make([]*mount, 0, len(s.mounts))
	for _, m := range s.mounts {
		mounts = append(mounts, m)
	}
	s.mu.Unlock()
	slices.SortFunc(mounts, func(a, b *mount) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	out := make([]VerifyResult, 0, len(mounts))
	for _, m := range mounts {
		out = append(out, m.verify(ctx))
	}
	return out, nil
}

func (m *mount) verify(ctx context.Context) VerifyResult {
	res := VerifyResult{Peer: m.name, Mount: m.path}
	for attempt := 0; attempt < verifyAttempts; attempt++ {
		local, _, err := m.mirrorDigest()
		if err != nil {
			res.Error = err.Error()
			return res
		}
		var resp response
		if err := m.request(ctx, request{Op: opDigest, Path: model.Root, At: local.Seq}, &resp); err != nil {
			res.Error = err.Error()
			return res
		}
		src := resp.Digest
		if src == nil {
			res.Error = "the provider answered without a digest"
			return res
		}
		res.Seq, res.Contexts, res.Digest = local.Seq, local.Count, hex.EncodeToString(local.Sum)
		if src.Comparable {
			res.Match = src.Count == local.Count && string(src.Sum) == string(local.Sum)
			if !res.Match {
				res.Source = hex.EncodeToString(src.Sum)
				res.Error = fmt.Sprintf("mirror has %d contexts, source %d; digests differ", local.Count, src.Count)
				if err := m.requestResync(); err != nil {
					res.Error += "; could not ask for a resynchronisation: " + err.Error()
				} else {
					res.Error += "; resynchronising from a snapshot"
				}
			}
			return res
		}
		// The source moved on: wait for the mirror to catch up, then again.
		if err := m.waitCursor(ctx, src.Seq, 5*time.Second); err != nil {
			res.Error = err.Error()
			return res
		}
	}
	res.Error = "the source kept changing; try again when it is quieter"
	return res
}

// waitCursor waits until the mirror has applied the provider's log past
// seq (or has nothing published left to apply before it).
func (m *mount) waitCursor(ctx context.Context, seq uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		m.mu.Lock()
		cur := m.rec.Cursor
		m.mu.Unlock()
		if cur >= seq || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// requestResync records that the mirror needs a snapshot and reconnects
// the link, so the provider sends one (and then the tail from the
// mirror's cursor: no event is lost).
func (m *mount) requestResync() error {
	if err := m.updateRecord(func(r *mountRecord) { r.Resync = true }); err != nil {
		return err
	}
	m.s.log.Warn("federation: mirror differs from its source; resynchronising", "peer", m.name)
	m.disconnect(closeNormal, "resynchronising")
	return nil
}
