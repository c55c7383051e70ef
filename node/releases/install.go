package releases

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// InstallFunction is the device function that installs a release
// (docs/agent.md): a software rollout is a bulk job of it.
const InstallFunction = apitypes.FunctionInstall

// MaxCheckBytes bounds an install's health-check command.
const MaxCheckBytes = apitypes.MaxCheckBytes

// operatorInstall is an install's args as an operator sends them: the
// release by name and version (or as its signed manifest).
type operatorInstall struct {
	Release   json.RawMessage `json:"release"`
	Version   string          `json:"version,omitempty"`
	Tenant    string          `json:"tenant,omitempty"`
	Downgrade bool            `json:"downgrade,omitempty"`
	Check     string          `json:"check,omitempty"`
}

// Install is an install's args as devices and the tiers below get them
// (apitypes.InstallArgs): the signed manifest itself, which the device
// verifies, and the release's tenant ("" : shared).
type Install = apitypes.InstallArgs

// InstallArgs turns an operator's install args into the args a device
// gets: {"release": NAME, "version": V} (a system user may add
// "tenant") names a release p may read; {"release": {signed manifest}}
// must be a release stored here, unchanged. "downgrade" and "check" are
// kept. The release must not have expired.
func (s *Service) InstallArgs(p *auth.Principal, args json.RawMessage) (json.RawMessage, *Install, error) {
	in, ref, given, err := parseOperatorInstall(args)
	if err != nil {
		return nil, nil, err
	}
	tenant, signed, m, err := s.Lookup(p, ref)
	if err != nil {
		return nil, nil, err
	}
	if given != nil && !bytes.Equal(given.Manifest, signed.Manifest) {
		return nil, nil, fmt.Errorf("%w: install args: the manifest given is not the one of release %s %s here", model.ErrInvalid, m.Name, m.Version)
	}
	if !m.ExpiresTime().After(s.cfg.Now()) {
		return nil, nil, fmt.Errorf("%w: release %s %s expired at %s", model.ErrInvalid, m.Name, m.Version, m.Expires)
	}
	out := &Install{Release: signed, Tenant: tenant, Downgrade: in.Downgrade, Check: in.Check}
	b, err := EncodeInstall(out)
	if err != nil {
		return nil, nil, err
	}
	return b, out, nil
}

// parseOperatorInstall reads an operator's install args: the release it
// names, and the signed manifest when one was given instead of a name.
func parseOperatorInstall(args json.RawMessage) (operatorInstall, Ref, *apitypes.SignedManifest, error) {
	var in operatorInstall
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, Ref{}, nil, fmt.Errorf("%w: install args: %v", model.ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return in, Ref{}, nil, fmt.Errorf("%w: install args: more than one JSON value", model.ErrInvalid)
	}
	if len(in.Check) > MaxCheckBytes {
		return in, Ref{}, nil, fmt.Errorf("%w: install args: check longer than %d bytes", model.ErrInvalid, MaxCheckBytes)
	}
	ref := Ref{Tenant: in.Tenant, Version: in.Version}
	switch {
	case len(in.Release) == 0:
		return in, ref, nil, fmt.Errorf("%w: install args: release is required", model.ErrInvalid)
	case in.Release[0] == '"':
		if err := json.Unmarshal(in.Release, &ref.Name); err != nil {
			return in, ref, nil, fmt.Errorf("%w: install args: release: %v", model.ErrInvalid, err)
		}
		if !apitypes.ValidReleaseName(ref.Name) || !apitypes.ValidReleaseName(in.Version) {
			return in, ref, nil, fmt.Errorf("%w: install args: a release name and its version are required (1 to %d letters, digits or . _ + - ~ each)", model.ErrInvalid, apitypes.MaxReleaseName)
		}
		return in, ref, nil, nil
	}
	given := new(apitypes.SignedManifest)
	if err := json.Unmarshal(in.Release, given); err != nil {
		return in, ref, nil, fmt.Errorf("%w: install args: release: want a name or a signed manifest: %v", model.ErrInvalid, err)
	}
	m, err := apitypes.ParseManifest(given.Manifest)
	if err != nil {
		return in, ref, nil, fmt.Errorf("%w: install args: release: %v", model.ErrInvalid, err)
	}
	ref.Name, ref.Version = m.Name, m.Version
	return in, ref, given, nil
}

// ParseInstall reads the args of an install sent down a link (as
// InstallArgs makes them): strictly, as devices do. The signature is
// checked by Receive.
func ParseInstall(args json.RawMessage) (*Install, error) {
	in, err := apitypes.ParseInstallArgs(args)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	return &in, nil
}

// EncodeInstall returns the install's JSON, the signed manifest's bytes
// as they are (not HTML-escaped: the signature covers them).
func EncodeInstall(in *Install) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// InstallManifest returns the install's manifest (not verified).
func InstallManifest(in *Install) (*apitypes.Manifest, error) {
	return apitypes.ParseManifest(in.Release.Manifest)
}

// MaySend reports whether an operator of tenant (or a system one) may
// send this install's release down: a release of its own tenant, or a
// shared one.
func MaySend(in *Install, tenant string, system bool) error {
	if system || in.Tenant == "" || in.Tenant == tenant {
		return nil
	}
	return fmt.Errorf("%w: a release of another tenant", auth.ErrForbidden)
}
