// Package calls is the one implementation of "call a device function as
// this principal": the API's function calls and the calls that reach the
// node over a federation link both go through Service.Call, so that the
// rules below hold on every path.
//
// A call of function f on path by principal p creates a job only when:
//
//   - p holds the operator role on path (a call over a link carries the
//     grant its link checked: see FederationPrincipal);
//   - p sees the context's tenant (another tenant's context answers
//     exactly like a missing one);
//   - the context declares f;
//   - the context is a device's own: a device record exists for the id
//     of /devices/<id>, and the context has type "device" and the
//     device's tenant (devices.Service.Owner); any other context never
//     sends a device commands;
//   - the device is not shared (no tenant), or p is a system user;
//   - the device is not revoked.
//
// The job takes its tenant from the device record, never from the
// context or the caller.
package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
)

// Errors a call is refused with, besides model.ErrNotFound (no such
// context, or not the caller's to see, or no such function) and
// auth.ErrForbidden (no operator role).
var (
	// ErrNotDevice: the context is not a device's own context.
	ErrNotDevice = fmt.Errorf("%w: functions run only on the contexts of enrolled devices", model.ErrInvalid)
	// ErrShared: a tenant user called a shared device.
	ErrShared = fmt.Errorf("%w: functions of shared devices (no tenant) are called by system administrators only", auth.ErrForbidden)
	// ErrRevoked: the device is revoked and could never answer.
	ErrRevoked = fmt.Errorf("%w: the device is revoked", model.ErrConflict)
)

// Tree is where contexts are read; *model.Model implements it.
type Tree interface {
	Get(p model.Path) (*model.Context, error)
}

// Service calls device functions. Its zero value is not usable: all
// fields are required.
type Service struct {
	Tree    Tree
	Devices *devices.Service
	Jobs    *jobs.Service
}

// Request is one call.
type Request struct {
	Path     model.Path
	Function string
	Args     json.RawMessage // a JSON object, or empty for {}
	Deadline time.Time       // zero: the jobs service's default
	By       string          // who the job is created by (audit, history)
}

// Call checks that p may call req.Function on req.Path (see the package
// doc) and creates the job.
func (s *Service) Call(ctx context.Context, p *auth.Principal, req Request) (jobs.Job, error) {
	d, err := s.Check(p, req.Path, req.Function)
	if err != nil {
		return jobs.Job{}, err
	}
	return s.Jobs.Create(ctx, jobs.Spec{
		Path: d.Path, Device: d.ID, Tenant: d.Tenant, Function: req.Function,
		Args: req.Args, By: req.By, Deadline: req.Deadline,
	})
}

// Check answers what Call would refuse, without creating anything, and
// the device called otherwise. Callers may use it to refuse early (before
// reading a request's body); Call checks again.
func (s *Service) Check(p *auth.Principal, path model.Path, function string) (devices.Device, error) {
	if !p.Can(auth.RoleOperator, path) {
		return devices.Device{}, fmt.Errorf("%w: calling functions of %s needs the operator role there", auth.ErrForbidden, path)
	}
	c, err := s.Tree.Get(path)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return devices.Device{}, fmt.Errorf("%w: context %s", model.ErrNotFound, path)
	case err != nil:
		return devices.Device{}, err
	case !p.SeesTenant(c.Tenant):
		return devices.Device{}, fmt.Errorf("%w: context %s", model.ErrNotFound, path)
	}
	if !slices.ContainsFunc(c.Functions, func(f model.Function) bool { return f.Name == function }) {
		return devices.Device{}, fmt.Errorf("%w: function %q of %s", model.ErrNotFound, function, path)
	}
	d, err := s.Devices.Owner(path)
	switch {
	case errors.Is(err, model.ErrNotFound), errors.Is(err, devices.ErrNotOwnContext):
		return devices.Device{}, fmt.Errorf("%w (%s)", ErrNotDevice, path)
	case err != nil:
		return devices.Device{}, err
	case d.Tenant == "" && !p.System:
		return devices.Device{}, ErrShared
	case !p.SeesTenant(d.Tenant):
		return devices.Device{}, fmt.Errorf("%w: context %s", model.ErrNotFound, path)
	case d.Revoked:
		return devices.Device{}, fmt.Errorf("%w: device %s", ErrRevoked, d.ID)
	}
	return d, nil
}

// FederationPrincipal is who a call that arrived over a link is made
// for: the operator of the tier where it started, with that operator's
// tenant (or system rights), and the operator role the link's grant
// gave (the link refuses calls its grant does not allow before they
// reach here).
func FederationPrincipal(user, tenant string, system bool) *auth.Principal {
	return &auth.Principal{
		User: user, Tenant: tenant, System: system,
		Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: string(model.Root)}},
	}
}
