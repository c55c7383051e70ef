// Package releases keeps a node's software releases (docs/software.md):
// signed manifests stored as model records, and their artifacts' bytes in
// the object store (package objects), uploaded in resumable pieces.
//
// Invariants:
//
//   - A release exists once its record is durable in the model; the
//     record holds the manifest exactly as signed, and nothing is stored
//     whose signature does not verify against a trusted key, that has
//     expired, or whose name and version are not the ones it is stored
//     under. The node never holds a private key.
//   - An object is stored only with the size and SHA-256 the manifest
//     gives (package objects verifies while streaming); partial uploads
//     live in a staging folder until complete, and survive a restart.
//   - Tenants: a release belongs to its creator's tenant, or is shared
//     (tenant "") when a system user created it. A tenant user sees its
//     tenant's releases and shared ones, and changes only its tenant's;
//     another tenant's answer exactly like missing ones.
//   - Roles: the operator role on "/" creates, uploads and deletes; the
//     viewer role on "/" reads and downloads.
package releases

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/objects"
)

// Kind is the model record kind of releases; the key is
// "<tenant>/<name>/<version>" ("" tenant: shared).
const Kind = "release"

// Errors callers branch on (besides model's and auth's sentinels).
var (
	// ErrNoKeys is a release created on a node that trusts no key.
	ErrNoKeys = errors.New("this node trusts no release signing key (software.trusted_keys)")
)

// OffsetError is an upload that does not start where the node's copy
// ends: Offset is where the next piece must start. It wraps
// model.ErrConflict.
type OffsetError struct {
	Offset int64
	Have   int64 // the offset the client gave
}

func (e *OffsetError) Error() string {
	return fmt.Sprintf("upload offset %d, but the node holds %d bytes: resume from %d", e.Have, e.Offset, e.Offset)
}

func (e *OffsetError) Unwrap() error { return model.ErrConflict }

// Records is the part of the model the service uses.
type Records interface {
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	DeleteRecord(ctx context.Context, kind, key string) error
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
	RegisterUpdater(kind string, fn model.RecordUpdater)
}

// Config is what New needs.
type Config struct {
	Records Records       // required
	Objects objects.Store // required
	// StagingDir holds partial uploads (required; made by the first
	// upload).
	StagingDir string
	// TrustedKeys verify manifests; none: releases cannot be created.
	TrustedKeys []ed25519.PublicKey
	Logger      *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Fetch reads an artifact from the tier above (cache.go); nil: this
	// node fetches nothing.
	Fetch Fetcher
	// CacheBudget bounds the bytes of artifacts fetched from above kept
	// here (0: no bound).
	CacheBudget int64
	// Pinned, when set, returns the artifacts active rollouts need: the
	// cache never evicts them.
	Pinned func() map[string]bool
}

// Service keeps releases. It is safe for concurrent use.
type Service struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu        sync.Mutex
	uploading map[string]bool // artifacts with an upload or a fetch in progress

	cache cache
	// ctx bounds fetches from above, which wg counts; Close ends them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// record is a release's record value.
type record struct {
	Tenant  string                  `json:"tenant"`
	By      string                  `json:"by"`
	Updated time.Time               `json:"updated"`
	Signed  apitypes.SignedManifest `json:"signed"`
	// Source is the tier above the release came from ("" : uploaded
	// here); Staged keeps its artifacts whatever the cache budget.
	Source string `json:"source,omitempty"`
	Staged bool   `json:"staged,omitempty"`
}

// New returns the service of cfg; it counts the objects stored.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Records == nil || cfg.Objects == nil || cfg.StagingDir == "" {
		return nil, errors.New("releases: Records, Objects and StagingDir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "releases"), uploading: map[string]bool{}}
	cfg.Records.RegisterUpdater(Kind, Update)
	var err error
	if s.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	var n, size int64
	if err := cfg.Objects.List(ctx, func(i objects.Info) error { n++; size += i.Size; return nil }); err != nil {
		return nil, fmt.Errorf("releases: list objects: %w", err)
	}
	s.metrics.objects.Set(float64(n))
	s.metrics.objectBytes.Set(float64(size))
	s.metrics.budget.Set(float64(cfg.CacheBudget))
	if err := s.startCache(ctx); err != nil {
		return nil, fmt.Errorf("releases: cache: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.resumeStaged()
	return s, nil
}

// Close stops the fetches in progress and waits for them; what they
// fetched so far stays for the next start.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Trusts reports whether the node trusts at least one signing key.
func (s *Service) Trusts() bool { return len(s.cfg.TrustedKeys) > 0 }

func recordKey(tenant, name, version string) string { return tenant + "/" + name + "/" + version }

// Ref names a release as a caller addresses it. Tenant is honoured only
// for system users ("" : a shared release); tenant users always address
// their own tenant's release, else a shared one.
type Ref struct {
	Tenant, Name, Version string
}

func notFound(ref Ref) error {
	return fmt.Errorf("%w: release %s %s", model.ErrNotFound, ref.Name, ref.Version)
}

func canRead(p *auth.Principal) error {
	if !p.Can(auth.RoleViewer, model.Root) {
		return fmt.Errorf("%w: reading releases needs the viewer role on /", auth.ErrForbidden)
	}
	return nil
}

func canWrite(p *auth.Principal) error {
	if !p.Can(auth.RoleOperator, model.Root) {
		return fmt.Errorf("%w: changing releases needs the operator role on /", auth.ErrForbidden)
	}
	return nil
}

// load returns the stored release ref names for p (see Ref), or
// model.ErrNotFound.
func (s *Service) load(p *auth.Principal, ref Ref) (*record, string, error) {
	if !apitypes.ValidReleaseName(ref.Name) || !apitypes.ValidReleaseName(ref.Version) {
		return nil, "", fmt.Errorf("%w: release name and version: 1 to %d letters, digits or . _ + - ~", model.ErrInvalid, apitypes.MaxReleaseName)
	}
	tenants := []string{ref.Tenant}
	if !p.System {
		tenants = []string{p.Tenant, ""}
	}
	for _, t := range tenants {
		key := recordKey(t, ref.Name, ref.Version)
		b, err := s.cfg.Records.Record(Kind, key)
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, "", fmt.Errorf("release %s: %w", key, err)
		}
		if !p.SeesTenant(rec.Tenant) {
			continue
		}
		return &rec, key, nil
	}
	return nil, "", notFound(ref)
}

// Put creates (created true) or extends the release named by sm's
// manifest, which must be signed by a trusted key, not expired, and
// named name and version. An existing release is replaced only by a
// manifest keeping each of its artifacts (model.ErrConflict otherwise).
func (s *Service) Put(ctx context.Context, p *auth.Principal, ref Ref, sm apitypes.SignedManifest) (*apitypes.Release, bool, error) {
	if err := canWrite(p); err != nil {
		return nil, false, err
	}
	if !s.Trusts() {
		return nil, false, ErrNoKeys
	}
	m, err := sm.Verify(s.cfg.TrustedKeys)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	if m.Name != ref.Name || m.Version != ref.Version {
		return nil, false, fmt.Errorf("%w: the manifest is %s %s, not %s %s", model.ErrInvalid, m.Name, m.Version, ref.Name, ref.Version)
	}
	now := s.cfg.Now()
	if !m.ExpiresTime().After(now) {
		return nil, false, fmt.Errorf("%w: the manifest expired at %s", model.ErrInvalid, m.Expires)
	}
	tenant := p.Tenant
	if p.System {
		tenant = ref.Tenant
	}
	created := true
	old, oldKey, err := s.load(p, Ref{Tenant: tenant, Name: ref.Name, Version: ref.Version})
	switch {
	case errors.Is(err, model.ErrNotFound):
	case err != nil:
		return nil, false, err
	case old.Tenant != tenant:
		return nil, false, fmt.Errorf("%w: release %s %s is shared; a tenant cannot replace it", model.ErrConflict, ref.Name, ref.Version)
	default:
		created = false
		om, err := apitypes.ParseManifest(old.Signed.Manifest)
		if err != nil {
			return nil, false, fmt.Errorf("release %s: %w", oldKey, err)
		}
		if err := extends(om, m); err != nil {
			return nil, false, err
		}
	}
	rec := record{Tenant: tenant, By: p.User, Updated: now.UTC(), Signed: sm}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, false, err
	}
	// The check above answers clearly; Update decides, against the
	// record as the model has it, so that concurrent writers (or
	// replicas) never drop or change an artifact.
	mut := model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: Kind, Key: recordKey(tenant, ref.Name, ref.Version), Value: b}}
	if _, err := s.cfg.Records.Apply(ctx, mut); err != nil {
		return nil, false, err
	}
	r, err := s.view(ctx, &rec)
	return r, created, err
}

// Get returns a release p may read.
func (s *Service) Get(ctx context.Context, p *auth.Principal, ref Ref) (*apitypes.Release, error) {
	if err := canRead(p); err != nil {
		return nil, err
	}
	rec, _, err := s.load(p, ref)
	if err != nil {
		return nil, err
	}
	return s.view(ctx, rec)
}

// List returns the releases p may read, by tenant, name and version.
func (s *Service) List(ctx context.Context, p *auth.Principal) ([]apitypes.Release, error) {
	if err := canRead(p); err != nil {
		return nil, err
	}
	out := []apitypes.Release{}
	err := s.cfg.Records.Records(Kind, func(key string, value []byte) error {
		var rec record
		if err := json.Unmarshal(value, &rec); err != nil {
			s.log.Warn("unreadable release record", "key", key, "err", err)
			return nil
		}
		if !p.SeesTenant(rec.Tenant) {
			return nil
		}
		r, err := s.view(ctx, &rec)
		if err != nil {
			return err
		}
		out = append(out, *r)
		return nil
	})
	return out, err
}

// Delete removes a release p may change, and the objects and partial
// uploads no other release names.
func (s *Service) Delete(ctx context.Context, p *auth.Principal, ref Ref) error {
	if err := canWrite(p); err != nil {
		return err
	}
	rec, key, err := s.load(p, ref)
	if err != nil {
		return err
	}
	if !p.System && rec.Tenant != p.Tenant {
		return fmt.Errorf("%w: release %s %s is shared; only a system user deletes it", auth.ErrForbidden, ref.Name, ref.Version)
	}
	if err := s.cfg.Records.DeleteRecord(ctx, Kind, key); err != nil {
		return err
	}
	m, err := apitypes.ParseManifest(rec.Signed.Manifest)
	if err != nil {
		return nil
	}
	used, err := s.referenced()
	if err != nil {
		return err
	}
	for _, a := range m.Artifacts {
		if used[a.SHA256] {
			continue
		}
		if !s.lock(a.SHA256) {
			continue // being uploaded again: left to that upload
		}
		info, serr := s.cfg.Objects.Stat(ctx, a.SHA256)
		if err := s.cfg.Objects.Delete(ctx, a.SHA256); err != nil {
			s.log.Warn("delete object", "sha256", a.SHA256, "err", err)
		} else if serr == nil {
			s.metrics.objects.Dec()
			s.metrics.objectBytes.Sub(float64(info.Size))
		}
		os.Remove(s.partPath(a.SHA256))
		s.unlock(a.SHA256)
	}
	return nil
}

// referenced returns the artifacts every stored release names.
func (s *Service) referenced() (map[string]bool, error) {
	used := map[string]bool{}
	err := s.cfg.Records.Records(Kind, func(key string, value []byte) error {
		var rec record
		if json.Unmarshal(value, &rec) != nil {
			return nil
		}
		if m, err := apitypes.ParseManifest(rec.Signed.Manifest); err == nil {
			for _, a := range m.Artifacts {
				used[a.SHA256] = true
			}
		}
		return nil
	})
	return used, err
}

// view renders rec with the upload state of its artifacts.
func (s *Service) view(ctx context.Context, rec *record) (*apitypes.Release, error) {
	m, err := apitypes.ParseManifest(rec.Signed.Manifest)
	if err != nil {
		return nil, err
	}
	r := &apitypes.Release{
		Name: m.Name, Version: m.Version, Tenant: rec.Tenant,
		Created: m.CreatedTime(), Expires: m.ExpiresTime(), Expired: !m.ExpiresTime().After(s.cfg.Now()),
		KeyID: rec.Signed.KeyID, By: rec.By, Updated: rec.Updated, Signed: rec.Signed,
	}
	for _, a := range m.Artifacts {
		st, err := s.state(ctx, a)
		if err != nil {
			return nil, err
		}
		r.Artifacts = append(r.Artifacts, apitypes.ReleaseArtifact{Artifact: a, Stored: st.Complete, Uploaded: st.Offset})
	}
	return r, nil
}

// state is how much of artifact a the node holds.
func (s *Service) state(ctx context.Context, a apitypes.Artifact) (apitypes.UploadState, error) {
	st := apitypes.UploadState{SHA256: a.SHA256, Size: a.Size}
	_, err := s.cfg.Objects.Stat(ctx, a.SHA256)
	switch {
	case err == nil:
		st.Offset, st.Complete = a.Size, true
		return st, nil
	case !errors.Is(err, objects.ErrNotFound):
		return st, err
	}
	fi, err := os.Stat(s.partPath(a.SHA256))
	switch {
	case err == nil:
		st.Offset = min(fi.Size(), a.Size)
	case !errors.Is(err, fs.ErrNotExist):
		return st, err
	}
	return st, nil
}

func (s *Service) partPath(sum string) string { return filepath.Join(s.cfg.StagingDir, sum+".part") }

func (s *Service) lock(sum string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploading[sum] {
		return false
	}
	s.uploading[sum] = true
	return true
}

func (s *Service) unlock(sum string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.uploading, sum)
}

// artifact returns the artifact sum of release ref, checking that p
// holds role on releases.
func (s *Service) artifact(p *auth.Principal, ref Ref, sum string, write bool) (apitypes.Artifact, error) {
	check := canRead
	if write {
		check = canWrite
	}
	if err := check(p); err != nil {
		return apitypes.Artifact{}, err
	}
	rec, _, err := s.load(p, ref)
	if err != nil {
		return apitypes.Artifact{}, err
	}
	if write && !p.System && rec.Tenant != p.Tenant {
		return apitypes.Artifact{}, fmt.Errorf("%w: release %s %s is shared; only a system user uploads to it", auth.ErrForbidden, ref.Name, ref.Version)
	}
	m, err := apitypes.ParseManifest(rec.Signed.Manifest)
	if err != nil {
		return apitypes.Artifact{}, err
	}
	a, ok := m.Artifact(strings.ToLower(sum))
	if !ok {
		return apitypes.Artifact{}, fmt.Errorf("%w: release %s %s has no artifact %s", model.ErrNotFound, ref.Name, ref.Version, sum)
	}
	return a, nil
}

// UploadState returns how much of an artifact of release ref the node
// holds (HEAD).
func (s *Service) UploadState(ctx context.Context, p *auth.Principal, ref Ref, sum string) (apitypes.UploadState, error) {
	a, err := s.artifact(p, ref, sum, false)
	if err != nil {
		return apitypes.UploadState{}, err
	}
	return s.state(ctx, a)
}

// Upload appends body, whose bytes start at offset of the artifact, to
// the node's copy of artifact sum of release ref. offset must be where
// that copy ends (*OffsetError otherwise). What arrives is kept (synced)
// even when body fails midway, so the client resumes from there. Once
// all bytes are in, they are verified and stored; bytes whose SHA-256
// differs are dropped (model.ErrInvalid) and the upload starts over.
func (s *Service) Upload(ctx context.Context, p *auth.Principal, ref Ref, sum string, offset int64, body io.Reader) (apitypes.UploadState, error) {
	a, err := s.artifact(p, ref, sum, true)
	if err != nil {
		return apitypes.UploadState{}, err
	}
	if !s.lock(a.SHA256) {
		return apitypes.UploadState{}, fmt.Errorf("%w: artifact %s is being uploaded by another request", model.ErrConflict, a.SHA256)
	}
	defer s.unlock(a.SHA256)
	st, err := s.state(ctx, a)
	if err != nil || st.Complete {
		return st, err
	}
	if offset != st.Offset {
		return st, &OffsetError{Offset: st.Offset, Have: offset}
	}
	if offset < a.Size {
		n, err := s.appendPart(a, body, s.metrics.uploaded)
		st.Offset += n
		if err != nil {
			return st, err
		}
	}
	// More bytes than the artifact has: refused, what fits is kept.
	var one [1]byte
	if n, _ := io.ReadFull(body, one[:]); n > 0 {
		return st, fmt.Errorf("%w: more than the artifact's %d bytes", model.ErrInvalid, a.Size)
	}
	if st.Offset < a.Size {
		return st, nil
	}
	if err := s.store(ctx, a); err != nil {
		st.Offset = 0
		return st, err
	}
	st.Complete = true
	return st, nil
}

// appendPart appends at most what the artifact lacks from body to its
// partial file, synced, and returns the bytes appended.
func (s *Service) appendPart(a apitypes.Artifact, body io.Reader, count prometheus.Counter) (int64, error) {
	if err := os.MkdirAll(s.cfg.StagingDir, 0o700); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(s.partPath(a.SHA256), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	br := &bodyReader{r: io.LimitReader(body, a.Size-fi.Size())}
	n, cerr := io.Copy(f, br)
	if br.err != nil {
		// The client's side: what arrived is kept for a resume.
		cerr = fmt.Errorf("%w: the upload body ended early at offset %d (resume from there): %w", model.ErrInvalid, fi.Size()+n, br.err)
	}
	count.Add(float64(n))
	serr := f.Sync()
	if err := f.Close(); serr == nil {
		serr = err
	}
	if cerr != nil {
		return n, cerr
	}
	return n, serr
}

// store moves a complete partial file (synced) into the object store,
// verified: renamed into place when the store takes files
// (objects.FilePutter: the fs backend), its bytes copied otherwise.
func (s *Service) store(ctx context.Context, a apitypes.Artifact) error {
	part := s.partPath(a.SHA256)
	var err error
	if fp, ok := s.cfg.Objects.(objects.FilePutter); ok {
		err = fp.PutFile(ctx, a.SHA256, part, a.Size)
	} else {
		var f *os.File
		if f, err = os.Open(part); err != nil {
			return err
		}
		err = s.cfg.Objects.Put(ctx, a.SHA256, f, a.Size)
		f.Close()
	}
	if errors.Is(err, objects.ErrDigest) {
		os.Remove(part)
		return fmt.Errorf("%w: the uploaded bytes do not have sha256 %s; upload again from offset 0", model.ErrInvalid, a.SHA256)
	}
	if err != nil {
		return err
	}
	os.Remove(part)
	s.metrics.objects.Inc()
	s.metrics.objectBytes.Add(float64(a.Size))
	s.log.Info("artifact stored", "sha256", a.SHA256, "size", a.Size)
	return nil
}

// Open returns a reader of artifact sum of release ref for p (viewer)
// that seeks (http.ServeContent), with its size. Bytes read count as
// served. The caller closes it.
func (s *Service) Open(ctx context.Context, p *auth.Principal, ref Ref, sum string) (*Reader, apitypes.Artifact, error) {
	a, err := s.artifact(p, ref, sum, false)
	if err != nil {
		return nil, a, err
	}
	if _, err := s.cfg.Objects.Stat(ctx, a.SHA256); errors.Is(err, objects.ErrNotFound) {
		return nil, a, fmt.Errorf("%w: artifact %s is not uploaded yet", model.ErrNotFound, a.SHA256)
	} else if err != nil {
		return nil, a, err
	}
	return &Reader{ctx: ctx, store: s.cfg.Objects, key: a.SHA256, size: a.Size, served: []prometheus.Counter{s.metrics.served}}, a, nil
}

// bodyReader remembers a read error of an upload's body, to tell it from
// a failure to write.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// extends returns model.ErrConflict unless m keeps every artifact of old
// unchanged: a release gains platforms, its bytes never change.
func extends(old, m *apitypes.Manifest) error {
	for _, a := range old.Artifacts {
		if !slices.Contains(m.Artifacts, a) {
			return fmt.Errorf("%w: release %s %s exists and the new manifest drops or changes its %s/%s %s artifact; publish a new version",
				model.ErrConflict, m.Name, m.Version, a.OS, a.Arch, a.Type)
		}
	}
	return nil
}

// Update is the model's updater of release records (register it with
// Model.RegisterUpdater before the model applies proposals, as
// package node does): arg, a release record, replaces cur only when its
// manifest extends cur's.
func Update(key string, cur, arg []byte) ([]byte, error) {
	if cur == nil {
		return arg, nil
	}
	var old, next record
	if err := json.Unmarshal(cur, &old); err != nil {
		return nil, fmt.Errorf("release %s: %w", key, err)
	}
	if err := json.Unmarshal(arg, &next); err != nil {
		return nil, fmt.Errorf("%w: release %s: %v", model.ErrInvalid, key, err)
	}
	om, err := apitypes.ParseManifest(old.Signed.Manifest)
	if err != nil {
		return arg, nil // an unreadable record is replaced
	}
	m, err := apitypes.ParseManifest(next.Signed.Manifest)
	if err != nil {
		return nil, fmt.Errorf("%w: release %s: %v", model.ErrInvalid, key, err)
	}
	if err := extends(om, m); err != nil {
		return nil, err
	}
	return arg, nil
}

// errFound stops a scan of the release records.
var errFound = errors.New("found")

// deviceArtifact returns artifact sum if a release a device of tenant may
// see names it: one of that tenant, or a shared one. Another tenant's
// releases answer like missing ones (model.ErrNotFound).
func (s *Service) deviceArtifact(tenant, sum string) (apitypes.Artifact, string, error) {
	return s.findArtifact(Kind, sum, func(key string, value []byte) *record {
		if t, _, _ := strings.Cut(key, "/"); t != tenant && t != "" {
			return nil
		}
		rec, err := decodeRecord(value)
		if err != nil || (rec.Tenant != tenant && rec.Tenant != "") {
			return nil
		}
		return rec
	})
}

// findArtifact scans the records of kind for a release that names
// artifact sum (release returns the release a record stands for, nil to
// pass it by) and returns the artifact and the release's source;
// model.ErrNotFound when none does.
func (s *Service) findArtifact(kind, sum string, release func(key string, value []byte) *record) (apitypes.Artifact, string, error) {
	var found apitypes.Artifact
	var source string
	err := s.cfg.Records.Records(kind, func(key string, value []byte) error {
		rec := release(key, value)
		if rec == nil {
			return nil
		}
		m, err := apitypes.ParseManifest(rec.Signed.Manifest)
		if err != nil {
			return nil
		}
		if a, ok := m.Artifact(sum); ok {
			found, source = a, rec.Source
			return errFound
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
		return found, source, nil
	case err != nil:
		return apitypes.Artifact{}, "", err
	}
	return apitypes.Artifact{}, "", fmt.Errorf("%w: artifact %s", model.ErrNotFound, sum)
}

// DeviceFetchWait bounds how long a device's download waits for an
// artifact being fetched from above before it is told to come back
// (ErrNotReady).
var DeviceFetchWait = 20 * time.Second

// OpenForDevice returns a reader of artifact sum for an authenticated
// device of tenant (its credentials are the caller's to check): the
// artifact must be named by a release of that tenant or a shared one, and
// stored; model.ErrNotFound otherwise, whatever other tenants hold. Bytes
// read count as served, and as served to devices.
func (s *Service) OpenForDevice(ctx context.Context, tenant, sum string) (*Reader, apitypes.Artifact, error) {
	if !apitypes.ValidSHA256(sum) {
		return nil, apitypes.Artifact{}, fmt.Errorf("%w: artifact %q: want a sha256 in lower-case hex", model.ErrInvalid, sum)
	}
	a, source, err := s.deviceArtifact(tenant, sum)
	if err != nil {
		return nil, a, err
	}
	// Not here yet: fetched from above, for a while (the device asks
	// again on ErrNotReady).
	wctx, cancel := context.WithTimeout(ctx, DeviceFetchWait)
	err = s.ensure(wctx, a, source)
	cancel()
	if err != nil {
		return nil, a, err
	}
	return &Reader{ctx: ctx, store: s.cfg.Objects, key: a.SHA256, size: a.Size,
		served: []prometheus.Counter{s.metrics.served, s.metrics.deviceBytes}}, a, nil
}

// CountDeviceRefusal counts a refused device download (reason is one of
// the Refused constants).
func (s *Service) CountDeviceRefusal(reason string) { s.metrics.refused.WithLabelValues(reason).Inc() }
