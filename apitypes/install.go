package apitypes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Installing a release on a device (docs/agent.md, "install"): the node
// sends the job's args as InstallArgs, the device answers InstallResult
// and reports what it holds as InstalledSoftware in its inventory.

// FunctionInstall is the name of the install function devices offer.
const FunctionInstall = "install"

// InstallArgs are the args of an install job: the signed manifest of the
// release as the node holds it, whether a version older than the
// installed one is allowed, and an optional health check (a command line
// run with sh -c once the artifact is installed). Tenant is the
// release's tenant as the node names it ("" for a shared release); a
// device does not need it and trusts only the signature.
type InstallArgs struct {
	Release   SignedManifest `json:"release"`
	Tenant    string         `json:"tenant,omitempty"`
	Downgrade bool           `json:"downgrade"`
	Check     string         `json:"check,omitempty"`
}

// MaxCheckBytes bounds InstallArgs.Check.
const MaxCheckBytes = 4 << 10

// ErrInstallArgs is wrapped by ParseInstallArgs's errors.
var ErrInstallArgs = errors.New("invalid install args")

// ParseInstallArgs decodes install args strictly (an unknown key is an
// error) and checks their shape: a manifest, a signature and a key id
// present, a check without NUL of at most MaxCheckBytes. It does not
// verify the signature (SignedManifest.Verify does).
func ParseInstallArgs(raw []byte) (InstallArgs, error) {
	var a InstallArgs
	bad := func(format string, args ...any) (InstallArgs, error) {
		return InstallArgs{}, fmt.Errorf("%w: "+format, append([]any{ErrInstallArgs}, args...)...)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return bad("release is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("trailing data after the args object")
	}
	switch {
	case len(a.Release.Manifest) == 0 || string(a.Release.Manifest) == "null":
		return bad("release.manifest is required")
	case a.Release.Signature == "":
		return bad("release.signature is required")
	case len(a.Release.KeyID) != 16 || !isLowerHex(a.Release.KeyID):
		return bad("release.key_id %q: want 16 lower-case hex digits", a.Release.KeyID)
	case len(a.Check) > MaxCheckBytes:
		return bad("check longer than %d bytes", MaxCheckBytes)
	case strings.ContainsRune(a.Check, 0):
		return bad("check holds NUL")
	case len(a.Tenant) > 256:
		return bad("tenant longer than 256 bytes")
	}
	return a, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// InstallResult is the result of a successful install job (and of a
// failed one where it got far enough to say). Previous is the version
// replaced ("" for a first install); Bytes the artifact bytes received
// by this job's download; Resumed whether it continued an interrupted
// one; AlreadyInstalled that the version was in place and nothing was
// done.
type InstallResult struct {
	Name             string `json:"name"`
	Version          string `json:"version"`
	Previous         string `json:"previous"`
	SHA256           string `json:"sha256"`
	Type             string `json:"type"`
	Bytes            int64  `json:"bytes"`
	Resumed          bool   `json:"resumed"`
	AlreadyInstalled bool   `json:"already_installed,omitempty"`
}

// InstalledSoftware is one release installed on a device, as its
// inventory's software list shows it.
type InstalledSoftware struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Type      string    `json:"type"`
	Installed time.Time `json:"installed"`
}

// SoftwareVariable is the inventory key (so the variable) holding the
// installed version of release name: "software.<name>".
func SoftwareVariable(name string) string { return "software." + name }

// CompareVersions orders two release versions, returning -1, 0 or +1.
// The rule (semver-like, with a fallback for anything else):
//
//   - a leading "v" before a digit is ignored, and so is build metadata
//     from the first "+";
//   - the rest splits at the first "-" or "~" into a core and a
//     pre-release; a version with a pre-release sorts before the same
//     core without one (1.2.0-rc.1 < 1.2.0);
//   - cores compare by dot-separated parts, left to right: two numbers
//     numerically (1.10 > 1.9), a number before a non-number, two
//     non-numbers as strings; a missing part is 0 (1.2 = 1.2.0);
//   - pre-releases compare by dot-separated identifiers the same way,
//     except that the shorter list of equal identifiers sorts first.
//
// Equal under this order is not equal as strings (1.2 and 1.2.0 are
// distinct releases); callers decide what "installed" means by name.
func CompareVersions(a, b string) int {
	ca, pa, hasA := splitVersion(a)
	cb, pb, hasB := splitVersion(b)
	if c := compareParts(strings.Split(ca, "."), strings.Split(cb, "."), true); c != 0 {
		return c
	}
	switch {
	case hasA && !hasB:
		return -1
	case !hasA && hasB:
		return 1
	case !hasA && !hasB:
		return 0
	}
	return compareParts(strings.Split(pa, "."), strings.Split(pb, "."), false)
}

// splitVersion returns v's core and pre-release (and whether it has one).
func splitVersion(v string) (core, pre string, hasPre bool) {
	if len(v) > 1 && (v[0] == 'v' || v[0] == 'V') && v[1] >= '0' && v[1] <= '9' {
		v = v[1:]
	}
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v = v[:i]
	}
	if i := strings.IndexAny(v, "-~"); i >= 0 {
		return v[:i], v[i+1:], true
	}
	return v, "", false
}

// compareParts compares two lists of identifiers. padZero: a missing
// part counts as "0" (cores); else the shorter list sorts first.
func compareParts(a, b []string, padZero bool) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y string
		switch {
		case i < len(a) && i < len(b):
			x, y = a[i], b[i]
		case !padZero && i >= len(a):
			return -1
		case !padZero:
			return 1
		case i < len(a):
			x, y = a[i], "0"
		default:
			x, y = "0", b[i]
		}
		if c := compareIdent(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// compareIdent compares two identifiers: numbers numerically, a number
// before a non-number, else as strings.
func compareIdent(x, y string) int {
	nx, ny := isDigits(x), isDigits(y)
	switch {
	case nx && ny:
		x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
		if len(x) != len(y) {
			if len(x) < len(y) {
				return -1
			}
			return 1
		}
		return strings.Compare(x, y)
	case nx:
		return -1
	case ny:
		return 1
	}
	return strings.Compare(x, y)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ArtifactPreference is the order in which a device picks among its
// platform's artifacts: a system package when its package manager is
// there, else a tarball, a binary, a script.
var ArtifactPreference = []string{ArtifactDeb, ArtifactRPM, ArtifactTar, ArtifactBinary, ArtifactScript}

// ErrNoArtifact is returned by ChooseArtifact when the release has no
// artifact the device can install.
var ErrNoArtifact = errors.New("no artifact for this device")

// ChooseArtifact picks m's artifact for a device of goos and goarch:
// deb when has("deb") (dpkg is there), rpm when has("rpm"), then tar,
// binary, script (has is asked only about deb and rpm).
func ChooseArtifact(m *Manifest, goos, goarch string, has func(pkgType string) bool) (Artifact, error) {
	for _, t := range ArtifactPreference {
		if (t == ArtifactDeb || t == ArtifactRPM) && (has == nil || !has(t)) {
			continue
		}
		for _, a := range m.Artifacts {
			if a.OS == goos && a.Arch == goarch && a.Type == t {
				return a, nil
			}
		}
	}
	var offered []string
	for _, a := range m.Artifacts {
		offered = append(offered, a.OS+"/"+a.Arch+" "+a.Type)
	}
	return Artifact{}, fmt.Errorf("%w: release %s %s has none for %s/%s that it can install (it has %s)",
		ErrNoArtifact, m.Name, m.Version, goos, goarch, strings.Join(offered, ", "))
}
