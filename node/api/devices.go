package api

import (
	"net"
	"net/http"
	"strings"

	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
)

// Device endpoints (docs/api.md, "Devices and enrollment"): the public
// enrollment exchange, enrollment tokens and the device registry. The
// registry (devices.Service) enforces tenant isolation and roles itself;
// these handlers add the checks that depend on the caller only.

var errNoDevices = apiError(http.StatusNotImplemented, codeNotImplemented, "devices are not enabled on this node")

// deviceService returns the registry, or a 501 when the node has none.
func (s *Server) deviceService() (*devices.Service, error) {
	if s.cfg.Devices == nil {
		return nil, errNoDevices
	}
	return s.cfg.Devices, nil
}

// enroll exchanges an enrollment token for a device's credentials. It is
// public: the token in the body is the credential. Failures are rate
// limited per TCP peer address by the registry.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	var req devices.EnrollRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	e, err := ds.Enroll(r.Context(), req, r.RemoteAddr)
	if err != nil {
		return err
	}
	if s.cfg.MQTTAddress != nil {
		e.MQTTAddress = s.cfg.MQTTAddress(hostOnly(r.Host))
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

// hostOnly strips the port (and an IPv6 literal's brackets) from a Host
// header value.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// mayManageEnrollTokens refuses callers without the operator role on
// /devices: it depends only on the caller, so it reveals nothing.
func mayManageEnrollTokens(p *auth.Principal) error {
	if !p.Can(auth.RoleOperator, devices.Root) {
		return forbidden("managing enrollment tokens of", auth.RoleOperator, devices.Root)
	}
	return nil
}

func (s *Server) listEnrollTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	if err := mayManageEnrollTokens(p); err != nil {
		return err
	}
	ts, err := ds.ListTokens(p)
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []devices.EnrollToken{}
	}
	writeJSON(w, http.StatusOK, struct {
		Tokens []devices.EnrollToken `json:"tokens"`
	}{ts})
	return nil
}

// newEnrollTokenBody is the body creating an enrollment token.
type newEnrollTokenBody struct {
	Group  string `json:"group"`
	Tenant string `json:"tenant"`
	TTL    string `json:"ttl"`
	Uses   int    `json:"uses"`
}

// createdEnrollTokenJSON is a new enrollment token with its secret, shown
// only now.
type createdEnrollTokenJSON struct {
	Secret string `json:"token"`
	devices.EnrollToken
}

func (s *Server) createEnrollToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	if err := mayManageEnrollTokens(p); err != nil {
		return err
	}
	var b newEnrollTokenBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	ttl, err := parseTTL(b.TTL)
	if err != nil {
		return err
	}
	secret, t, err := ds.CreateToken(r.Context(), p, devices.TokenSpec{Group: b.Group, Tenant: b.Tenant, TTL: ttl, Uses: b.Uses})
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = t.ID })
	writeJSON(w, http.StatusCreated, createdEnrollTokenJSON{Secret: secret, EnrollToken: t})
	return nil
}

func (s *Server) revokeEnrollToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	if err := mayManageEnrollTokens(p); err != nil {
		return err
	}
	if err := ds.RevokeToken(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	list, err := ds.List(p)
	if err != nil {
		return err
	}
	if list == nil {
		list = []devices.Device{}
	}
	writeJSON(w, http.StatusOK, struct {
		Devices []devices.Device `json:"devices"`
	}{list})
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	d, err := ds.Get(p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// allowDeviceEnroll lets a revoked device enroll again; the body, if
// any, is ignored. 409 for a device that is not revoked.
func (s *Server) allowDeviceEnroll(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	d, err := ds.AllowEnroll(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// revokeDevice revokes a device's credentials and disconnects it; the
// body, if any, is ignored. Revoking a revoked device answers it again.
func (s *Server) revokeDevice(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ds, err := s.deviceService()
	if err != nil {
		return err
	}
	d, err := ds.Revoke(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}
