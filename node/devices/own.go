package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Ownership of device contexts and the operations on a device that
// depend on it.

// ErrNotOwnContext refuses a device operation on a context at
// /devices/<id> that is not that device's own (no device record, another
// type, or another tenant than the device's): nothing reaches the device
// through it.
var ErrNotOwnContext = errors.New("not the context of an enrolled device")

// mayOperate refuses p an operation (named by what) on device d, which p
// sees: the operator role on its path, and a system user for a shared
// device (no tenant).
func mayOperate(p *auth.Principal, d *Device, what string) error {
	if !p.Can(auth.RoleOperator, d.Path) {
		return fmt.Errorf("%w: %s devices needs the operator role on %s", auth.ErrForbidden, what, d.Path)
	}
	if d.Tenant == "" && !p.System {
		return fmt.Errorf("%w: shared devices (no tenant) are operated by system administrators only", auth.ErrForbidden)
	}
	return nil
}

// isOwn reports whether context c (nil: missing) is device d's own.
func isOwn(c *model.Context, d *Device) bool {
	return c != nil && c.Path == d.Path && c.Type == DeviceType && c.Tenant == d.Tenant
}

// Owner returns the device whose own context is at path: a device record
// for the id of a /devices/<id> path whose context has type "device" and
// the device's tenant. It answers model.ErrNotFound for a path that
// names no device, and ErrNotOwnContext (wrapped) for a context that is
// not its device's own. It checks no principal: callers do.
func (s *Service) Owner(path model.Path) (Device, error) {
	id, ok := IDOf(path)
	if !ok {
		return Device{}, fmt.Errorf("%w: %s is not a device context", model.ErrNotFound, path)
	}
	d, err := s.load(id)
	if err != nil {
		return Device{}, err
	}
	c, err := s.tree.Get(path)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return Device{}, err
	}
	if !isOwn(c, &d.Device) {
		return Device{}, fmt.Errorf("%w: %s", ErrNotOwnContext, path)
	}
	return d.Device, nil
}

// reclaim is the mutation that takes device d's context back whole: its
// type, tenant, group label and hardware id, nothing else (what another
// tenant put there is dropped). A system write.
func reclaim(d *deviceRecord) model.Mutation {
	hw, _ := json.Marshal(d.HardwareID)
	return model.Mutation{
		Op: model.OpPut, Path: d.Path, Replace: true, Type: DeviceType, Tenant: d.Tenant,
		Labels:    map[string]string{"group": d.Group},
		Variables: map[string]model.Variable{"hardware_id": {Value: hw, Type: model.TypeString, Time: d.Enrolled}},
	}
}

// ensureOwn takes an authenticated device's context back if it is not
// the device's own (a device enrolled before enrollment checked it, into
// a context another tenant had created), so that its data never lands
// in someone else's context. A missing context is left to the device's
// writes, which create it with the device's tenant.
func (s *Service) ensureOwn(d *deviceRecord) error {
	c, err := s.tree.Get(d.Path)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("devices: read context: %w", err)
	}
	if isOwn(c, &d.Device) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, err = s.tree.Get(d.Path); err == nil && isOwn(c, &d.Device) {
		return nil
	}
	if _, err := s.tree.Apply(context.Background(), reclaim(d)); err != nil {
		return fmt.Errorf("devices: take back context: %w", err)
	}
	s.reclaimed.Inc()
	s.log.Warn("device context was not the device's own: taken back", "device", d.ID, "path", d.Path,
		"found_type", c.Type, "found_tenant", c.Tenant)
	return nil
}

// AllowEnroll lets revoked device id enroll again (operator on its path;
// system users for a shared device). The device stays revoked, without
// credentials, until it enrolls. Allowing a device that is not revoked
// is a conflict.
func (s *Service) AllowEnroll(ctx context.Context, p *auth.Principal, id string) (Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.load(id)
	if err != nil {
		return Device{}, err
	}
	if !canSee(p, &d.Device) {
		return Device{}, deviceNotFound(id)
	}
	if err := mayOperate(p, &d.Device, "allowing enrollment of"); err != nil {
		return Device{}, err
	}
	if !d.Revoked {
		return Device{}, fmt.Errorf("%w: device %s is not revoked; it may enroll again already", model.ErrConflict, id)
	}
	if d.EnrollAllowed {
		return d.Device, nil
	}
	d.EnrollAllowed = true
	payload, _ := json.Marshal(map[string]string{"by": p.User})
	_, err = s.tree.Apply(ctx, putDevice(d), model.Mutation{
		Op: model.OpEvent, Path: d.Path,
		Event: &model.Event{Name: "enroll-allowed", Level: model.LevelInfo, Payload: payload, Time: s.clock()},
	})
	if err != nil {
		return Device{}, fmt.Errorf("devices: allow enrollment: %w", err)
	}
	s.log.Info("device allowed to enroll again", "device", id, "by", p.User)
	return d.Device, nil
}
