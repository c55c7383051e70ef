package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/releases"
)

// Device downloads (docs/software.md, "Device downloads"): a device
// fetches an artifact from the node it is connected to with its own
// credentials, the device id and secret of its enrollment (the MQTT
// username and password) in HTTP Basic authentication. It may fetch an
// artifact that a release of its tenant or a shared release names;
// anything else answers like a missing artifact. Failed authentications
// share the device's MQTT failure limit. Downloads are not in the audit
// trail (they change nothing); refusals are counted.

// deviceRealm is the WWW-Authenticate challenge of device routes.
const deviceRealm = `Basic realm="strata devices", charset="UTF-8"`

// deviceArtifact answers GET and HEAD /api/v1/device/artifacts/{sha256}:
// the artifact's bytes, with Range and If-Range (the ETag is the quoted
// SHA-256), through the same ranged reader as operator downloads.
func (s *Server) deviceArtifact(w http.ResponseWriter, r *http.Request) {
	if err := s.serveDeviceArtifact(w, r); err != nil {
		writeError(w, r, err)
	}
}

func (s *Server) serveDeviceArtifact(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.releaseService()
	if err != nil {
		return err
	}
	if s.cfg.Devices == nil {
		return errNoDevices
	}
	if len(r.URL.Query()) > 0 {
		return invalidf("device downloads take no query parameters")
	}
	id, secret, ok := r.BasicAuth()
	if !ok || id == "" || secret == "" {
		rs.CountDeviceRefusal(releases.RefusedCredentials)
		w.Header().Set("WWW-Authenticate", deviceRealm)
		return fmt.Errorf("%w: missing device credentials (Basic: device id and secret)", auth.ErrUnauthorized)
	}
	dev, err := s.cfg.Devices.Authenticate(id, secret, clientAddr(r.RemoteAddr))
	var rle *auth.RateLimitError
	switch {
	case errors.As(err, &rle), errors.Is(err, auth.ErrRateLimited):
		rs.CountDeviceRefusal(releases.RefusedRateLimited)
		return err
	case errors.Is(err, devices.ErrBadCredentials):
		rs.CountDeviceRefusal(releases.RefusedCredentials)
		w.Header().Set("WWW-Authenticate", deviceRealm)
		return err
	case err != nil:
		return err
	}
	if rec, ok := w.(*recorder); ok {
		rec.user = "device:" + dev.ID
	}
	sum := r.PathValue("sha256")
	if !apitypes.ValidSHA256(sum) {
		return invalidf("artifact %q: want a sha256 in lower-case hex", sum)
	}
	rd, _, err := rs.OpenForDevice(r.Context(), dev.Tenant, sum)
	if errors.Is(err, model.ErrNotFound) {
		rs.CountDeviceRefusal(releases.RefusedNotFound)
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sum+`"`)
	http.ServeContent(w, r, "", time.Time{}, rd)
	return nil
}
