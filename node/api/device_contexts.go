package api

import (
	"errors"
	"fmt"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
)

// Device contexts belong to enrollment (docs/api.md, "Device contexts"):
// /devices/<id> is created by the device registry only, with the tenant
// of the enrollment token, so that nobody can prepare a context at the
// path of a device yet to enroll and receive its data or send it
// commands. On a node with a device registry, a PUT is refused when it
// would
//
//   - create /devices, or give it a tenant;
//   - create /devices/<id>, or anything below it, while /devices/<id>
//     does not exist (or is not the caller's to see: both answer alike);
//   - change the type or the tenant of /devices/<id>;
//   - give any other context the type "device" (a context that has it
//     keeps it).

// errDeviceContext is the one answer to such a PUT.
func errDeviceContext(path model.Path, why string) error {
	return fmt.Errorf("%w: %s: %s; device contexts are created by enrollment only", model.ErrConflict, path, why)
}

// checkDevicePut refuses put m of path by p (cur: the context there, nil
// when missing) when it would create or take over a device context.
func (s *Server) checkDevicePut(p *auth.Principal, path model.Path, m *model.Mutation, cur *model.Context) error {
	if s.cfg.Devices == nil {
		return nil
	}
	if cur != nil && !p.SeesTenant(cur.Tenant) {
		cur = nil // answer as for a missing context: reveal nothing
	}
	switch {
	case path == devices.Root:
		if cur == nil {
			return errDeviceContext(path, "the devices folder does not exist yet")
		}
		if m.Tenant != "" && m.Tenant != cur.Tenant {
			return errDeviceContext(path, "the devices folder has no tenant")
		}
		return nil
	case path.Within(devices.Root):
		segs := path.Segments()
		own := devices.PathOf(segs[1])
		dc := cur
		if path != own {
			c, err := s.model.Get(own)
			switch {
			case errors.Is(err, model.ErrNotFound):
				c = nil
			case err != nil:
				return err
			}
			dc = c
		}
		if dc == nil || !p.SeesTenant(dc.Tenant) {
			return errDeviceContext(path, "no device context is there")
		}
		if path == own {
			if (m.Type != "" && m.Type != dc.Type) || (m.Tenant != "" && m.Tenant != dc.Tenant) {
				return errDeviceContext(path, "the type and tenant of a device context follow its device")
			}
			return nil
		}
	}
	if m.Type == devices.DeviceType && (cur == nil || cur.Type != devices.DeviceType) {
		return errDeviceContext(path, `the type "device" is given by enrollment`)
	}
	return nil
}
