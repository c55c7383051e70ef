package apitypes

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Software releases (docs/software.md): a release is a name and a version
// holding one artifact per platform, described by a manifest that an
// operator signs with an Ed25519 key the node never holds. Nodes (and,
// later, agents) verify the manifest against the public keys they trust.

// Artifact types.
const (
	ArtifactDeb    = "deb"
	ArtifactRPM    = "rpm"
	ArtifactTar    = "tar"
	ArtifactBinary = "binary"
	ArtifactScript = "script"
)

// Bounds of a manifest.
const (
	MaxManifestBytes = 64 << 10
	MaxArtifacts     = 64
	MaxReleaseName   = 128
)

// Artifact is one platform's file of a release, content-addressed by
// SHA256 (lower-case hex).
type Artifact struct {
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	Type   string `json:"type"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest is what a release signature covers. Its canonical form
// (Canonical) is the JSON encoding of this struct, fields in this order,
// no white space, artifacts sorted by os, arch and type, times in UTC
// RFC 3339 with second precision.
type Manifest struct {
	Name      string     `json:"name"`
	Version   string     `json:"version"`
	Artifacts []Artifact `json:"artifacts"`
	Created   string     `json:"created"`
	Expires   string     `json:"expires"`
}

// SignedManifest is the body of PUT /api/v1/releases/{name}/{version}:
// the manifest exactly as signed (its canonical form), the signature
// (base64 of the Ed25519 signature of those bytes) and the id of the key
// that made it (KeyID).
type SignedManifest struct {
	Manifest  json.RawMessage `json:"manifest"`
	Signature string          `json:"signature"`
	KeyID     string          `json:"key_id"`
}

// Release is a release as the API shows it: its manifest, who holds it
// and which of its artifacts the node stores in full.
type Release struct {
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Tenant    string            `json:"tenant"`
	Artifacts []ReleaseArtifact `json:"artifacts"`
	Created   time.Time         `json:"created"`
	Expires   time.Time         `json:"expires"`
	Expired   bool              `json:"expired"`
	KeyID     string            `json:"key_id"`
	By        string            `json:"by"`
	Updated   time.Time         `json:"updated"`
	Signed    SignedManifest    `json:"signed"`
}

// ReleaseArtifact is an artifact of a release with its upload state:
// Stored is true once the node holds all of its bytes (verified), else
// Uploaded is how many it has received.
type ReleaseArtifact struct {
	Artifact
	Stored   bool  `json:"stored"`
	Uploaded int64 `json:"uploaded"`
}

// ReleaseList is the answer of GET /api/v1/releases.
type ReleaseList struct {
	Releases []Release `json:"releases"`
}

// UploadState is the answer of an artifact upload (PUT): how many bytes
// the node holds and whether the artifact is complete and verified.
type UploadState struct {
	SHA256   string `json:"sha256"`
	Offset   int64  `json:"offset"`
	Size     int64  `json:"size"`
	Complete bool   `json:"complete"`
}

// UploadOffsetHeader carries an upload's offset: the node's in answers
// to HEAD and PUT, the client's (where its bytes start) in a PUT.
const UploadOffsetHeader = "Upload-Offset"

// KeyID names an Ed25519 public key: the first 8 bytes of its SHA-256,
// in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// ParsePublicKey decodes a release signing public key: the base64 of
// its 32 bytes, surrounding white space ignored (what strata ctl
// releases keygen writes to its .pub file).
func ParsePublicKey(text string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("want the base64 of a %d-byte Ed25519 public key", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// ErrManifest is wrapped by every error of ParseManifest and Verify.
var ErrManifest = errors.New("manifest")

func manifestErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrManifest}, args...)...)
}

// validName is a release name or version: 1 to MaxReleaseName bytes of
// letters, digits and . _ + - ~, not starting with '.'.
func validName(s string) bool {
	if s == "" || len(s) > MaxReleaseName || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '+', c == '-', c == '~':
		default:
			return false
		}
	}
	return true
}

// ValidReleaseName reports whether s may name a release or a version.
func ValidReleaseName(s string) bool { return validName(s) }

// validPlatform is an os or arch: 1 to 32 bytes of lower-case letters,
// digits and _.
func validPlatform(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ValidSHA256 reports whether s is 64 lower-case hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Check validates m's fields (not its signature).
func (m *Manifest) Check() error {
	if !validName(m.Name) {
		return manifestErr("name %q: want 1 to %d letters, digits or . _ + - ~", m.Name, MaxReleaseName)
	}
	if !validName(m.Version) {
		return manifestErr("version %q: want 1 to %d letters, digits or . _ + - ~", m.Version, MaxReleaseName)
	}
	created, err := time.Parse(time.RFC3339, m.Created)
	if err != nil {
		return manifestErr("created %q: want an RFC 3339 time", m.Created)
	}
	expires, err := time.Parse(time.RFC3339, m.Expires)
	if err != nil {
		return manifestErr("expires %q: want an RFC 3339 time", m.Expires)
	}
	if !expires.After(created) {
		return manifestErr("expires %s is not after created %s", m.Expires, m.Created)
	}
	if len(m.Artifacts) == 0 || len(m.Artifacts) > MaxArtifacts {
		return manifestErr("%d artifacts: want 1 to %d", len(m.Artifacts), MaxArtifacts)
	}
	for i, a := range m.Artifacts {
		if !validPlatform(a.OS) || !validPlatform(a.Arch) {
			return manifestErr("artifact %d: os %q, arch %q: want 1 to 32 of a-z 0-9 _", i, a.OS, a.Arch)
		}
		switch a.Type {
		case ArtifactDeb, ArtifactRPM, ArtifactTar, ArtifactBinary, ArtifactScript:
		default:
			return manifestErr("artifact %d: type %q: want deb, rpm, tar, binary or script", i, a.Type)
		}
		if a.Size <= 0 {
			return manifestErr("artifact %d: size %d: want more than 0", i, a.Size)
		}
		if !ValidSHA256(a.SHA256) {
			return manifestErr("artifact %d: sha256 %q: want 64 lower-case hex digits", i, a.SHA256)
		}
		if i > 0 {
			p := m.Artifacts[i-1]
			if p.OS == a.OS && p.Arch == a.Arch && p.Type == a.Type {
				return manifestErr("artifact %d: a second %s/%s %s", i, a.OS, a.Arch, a.Type)
			}
		}
	}
	return nil
}

// CreatedTime and ExpiresTime are m's times (zero when they do not parse).
func (m *Manifest) CreatedTime() time.Time { t, _ := time.Parse(time.RFC3339, m.Created); return t }
func (m *Manifest) ExpiresTime() time.Time { t, _ := time.Parse(time.RFC3339, m.Expires); return t }

// Artifact returns m's artifact of content sum, if any.
func (m *Manifest) Artifact(sum string) (Artifact, bool) {
	for _, a := range m.Artifacts {
		if a.SHA256 == sum {
			return a, true
		}
	}
	return Artifact{}, false
}

// Canonical returns m's canonical form after sorting its artifacts and
// normalising its times to UTC seconds.
func (m *Manifest) Canonical() ([]byte, error) {
	c := *m
	c.Artifacts = slices.Clone(m.Artifacts)
	slices.SortFunc(c.Artifacts, func(a, b Artifact) int {
		return strings.Compare(a.OS+"\x00"+a.Arch+"\x00"+a.Type, b.OS+"\x00"+b.Arch+"\x00"+b.Type)
	})
	for _, t := range []*string{&c.Created, &c.Expires} {
		if pt, err := time.Parse(time.RFC3339, *t); err == nil {
			*t = pt.UTC().Truncate(time.Second).Format(time.RFC3339)
		}
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ParseManifest decodes a manifest that must be in canonical form: no
// unknown fields, valid, and byte for byte what Canonical makes of it,
// so that one manifest has one signed encoding.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestBytes {
		return nil, manifestErr("%d bytes: at most %d", len(data), MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, manifestErr("%v", err)
	}
	if dec.InputOffset() != int64(len(data)) {
		return nil, manifestErr("more than one JSON value")
	}
	canon, err := m.Canonical()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, data) {
		return nil, manifestErr("not in canonical form (fields in order, no white space, artifacts sorted, UTC times)")
	}
	return &m, nil
}

// Sign returns m signed with key.
func (m *Manifest) Sign(key ed25519.PrivateKey) (*SignedManifest, error) {
	canon, err := m.Canonical()
	if err != nil {
		return nil, err
	}
	return &SignedManifest{
		Manifest:  canon,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, canon)),
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
	}, nil
}

// Verify parses s's manifest and checks its signature against trusted:
// the key named by KeyID must be one of them, and its signature must
// hold. It does not look at expiry (callers compare ExpiresTime with
// their clock).
func (s *SignedManifest) Verify(trusted []ed25519.PublicKey) (*Manifest, error) {
	m, err := ParseManifest(s.Manifest)
	if err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, manifestErr("signature: want base64 of %d bytes", ed25519.SignatureSize)
	}
	for _, k := range trusted {
		if KeyID(k) != s.KeyID {
			continue
		}
		if ed25519.Verify(k, s.Manifest, sig) {
			return m, nil
		}
		return nil, manifestErr("signature does not verify with key %s", s.KeyID)
	}
	return nil, manifestErr("key %q is not trusted", s.KeyID)
}
