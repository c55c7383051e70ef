package releases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/objects"
)

// Releases across tiers (docs/software.md): a release goes down a link
// with a rollout or a staging; the receiving node verifies it against
// its own trusted keys and keeps it with the tier it came from (Source),
// from which it fetches the artifacts. A node serves a provider only the
// artifacts of releases it sent that provider (KindSent records): a
// provider, hostile or not, cannot fetch what was not sent to it.

// KindSent is the record kind noting a release sent down a link; its
// key is "<provider>/<tenant>/<name>/<version>".
const KindSent = "release.sent"

// Incoming is a release as it travels down a link.
type Incoming struct {
	Tenant string                  `json:"tenant"`
	Signed apitypes.SignedManifest `json:"signed"`
	// Stage asks the receiver to fetch the artifacts now and keep them
	// whatever its cache budget.
	Stage bool `json:"stage,omitempty"`
	// Forward lists where, below the receiver, to send the release on
	// (mount paths, relative to the receiver: /peers/<name>...).
	Forward []model.Path `json:"forward,omitempty"`
}

func decodeRecord(b []byte) (*record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// Receive stores a release sent from the tier above (source) for tenant:
// verified against this node's trusted keys and not expired, like any
// release. A release already here keeps its origin (one uploaded here
// stays this node's own). With stage, its artifacts are fetched from
// source now, in the background, and kept whatever the cache budget;
// without, each is fetched when first asked for (by a device here or a
// node below), so a tier fetches only what its devices and the tiers
// below it need.
func (s *Service) Receive(ctx context.Context, source, by string, in Incoming) (*apitypes.Manifest, error) {
	if !s.Trusts() {
		return nil, ErrNoKeys
	}
	m, err := in.Signed.Verify(s.cfg.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: release from %s: %v", model.ErrInvalid, source, err)
	}
	if !m.ExpiresTime().After(s.cfg.Now()) {
		return nil, fmt.Errorf("%w: release %s %s expired at %s", model.ErrInvalid, m.Name, m.Version, m.Expires)
	}
	key := recordKey(in.Tenant, m.Name, m.Version)
	rec := record{Tenant: in.Tenant, By: by, Updated: s.cfg.Now().UTC(), Signed: in.Signed, Source: source, Staged: in.Stage}
	if b, err := s.cfg.Records.Record(Kind, key); err == nil {
		old, derr := decodeRecord(b)
		if derr == nil && old.Source == "" {
			return m, nil // this node's own release
		}
		if derr == nil {
			rec.Staged = rec.Staged || old.Staged
			if old.Source == source && old.Staged == rec.Staged && string(old.Signed.Manifest) == string(in.Signed.Manifest) {
				if in.Stage {
					s.prefetch(m, source)
				}
				return m, nil // nothing new: no write
			}
		}
	} else if !errors.Is(err, model.ErrNotFound) {
		return nil, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Records.Apply(ctx, model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: Kind, Key: key, Value: b}}); err != nil {
		return nil, err
	}
	s.log.Info("release received", "name", m.Name, "version", m.Version, "tenant", in.Tenant, "from", source, "staged", rec.Staged)
	if rec.Staged {
		s.prefetch(m, source)
	}
	return m, nil
}

func sentKey(provider, tenant, name, version string) string {
	return provider + "/" + recordKey(tenant, name, version)
}

// MarkSent notes that the release (tenant, name, version) is sent to
// provider, which may then fetch its artifacts from this node. It is
// written before the release is sent.
func (s *Service) MarkSent(ctx context.Context, provider, tenant, name, version string) error {
	key := sentKey(provider, tenant, name, version)
	if _, err := s.cfg.Records.Record(KindSent, key); err == nil {
		return nil
	}
	_, err := s.cfg.Records.Apply(ctx, model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindSent, Key: key, Value: []byte("{}")}})
	return err
}

// sentArtifact returns artifact sum if a release sent to provider names
// it, with the record's source (where this node fetches it from).
func (s *Service) sentArtifact(provider, sum string) (apitypes.Artifact, string, error) {
	prefix := provider + "/"
	return s.findArtifact(KindSent, sum, func(key string, _ []byte) *record {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			return nil
		}
		b, err := s.cfg.Records.Record(Kind, rest)
		if err != nil {
			return nil // the release was deleted since
		}
		rec, err := decodeRecord(b)
		if err != nil {
			return nil
		}
		return rec
	})
}

// OpenForPeer returns the bytes of artifact sum from offset, and its
// size, for provider: only if a release sent to it names the artifact
// (model.ErrNotFound otherwise, whatever this node holds). An artifact
// this node does not hold yet is fetched from above first.
func (s *Service) OpenForPeer(ctx context.Context, provider, sum string, offset int64) (io.ReadCloser, int64, error) {
	if !apitypes.ValidSHA256(sum) {
		return nil, 0, fmt.Errorf("%w: artifact %q: want a sha256 in lower-case hex", model.ErrInvalid, sum)
	}
	a, source, err := s.sentArtifact(provider, sum)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 || offset > a.Size {
		return nil, 0, fmt.Errorf("%w: offset %d of %d bytes", model.ErrInvalid, offset, a.Size)
	}
	if err := s.ensure(ctx, a, source); err != nil {
		return nil, 0, err
	}
	rc, err := s.cfg.Objects.Get(ctx, a.SHA256, offset, -1)
	if errors.Is(err, objects.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: artifact %s", ErrNotReady, a.SHA256)
	}
	if err != nil {
		return nil, 0, err
	}
	return &countingReader{rc: rc, c: []prometheus.Counter{s.metrics.served, s.metrics.peerBytes}}, a.Size, nil
}

type countingReader struct {
	rc io.ReadCloser
	c  []prometheus.Counter
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	for _, c := range r.c {
		c.Add(float64(n))
	}
	return n, err
}

func (r *countingReader) Close() error { return r.rc.Close() }

// Lookup returns release ref as p (viewer) may read it: its tenant, its
// signed manifest and the manifest.
func (s *Service) Lookup(p *auth.Principal, ref Ref) (string, apitypes.SignedManifest, *apitypes.Manifest, error) {
	if err := canRead(p); err != nil {
		return "", apitypes.SignedManifest{}, nil, err
	}
	rec, _, err := s.load(p, ref)
	if err != nil {
		return "", apitypes.SignedManifest{}, nil, err
	}
	m, err := apitypes.ParseManifest(rec.Signed.Manifest)
	if err != nil {
		return "", apitypes.SignedManifest{}, nil, err
	}
	return rec.Tenant, rec.Signed, m, nil
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if c.Write(&m) != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}
