package bulk

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/devices"
)

// Bounds of a target.
const (
	MaxTargetPaths = 10000
	maxFilters     = model.MaxSearchFilters
)

// Target is a parsed apitypes.BulkTarget: the devices at Prefix or
// below it (and, when Paths is non-nil, only those of Paths) with type
// Type, labels Labels and variables Vars. Tenant, when set, narrows a
// system user's target to one tenant.
type Target struct {
	Paths  []model.Path
	Prefix model.Path
	Type   string
	Tenant string
	Labels map[string]string
	Vars   map[string]json.RawMessage
}

// ParseTarget checks and normalises a target. Every error wraps
// model.ErrInvalid (or model.ErrInvalidPath). The filter's keys are
// those of GET /api/v1/search that select (path, type, tenant,
// label.<key>, var.<name>); its paging and sorting keys are refused.
func ParseTarget(in apitypes.BulkTarget) (Target, error) {
	t := Target{Prefix: model.Root}
	if len(in.Paths) == 0 && in.Subtree == "" && len(in.Labels) == 0 && len(in.Filter) == 0 {
		return t, invalidf("target selects nothing: give paths, a subtree, labels or a filter (subtree \"/\" is every device)")
	}
	if len(in.Paths) > MaxTargetPaths {
		return t, invalidf("target: more than %d paths", MaxTargetPaths)
	}
	if in.Paths != nil {
		t.Paths = make([]model.Path, 0, len(in.Paths))
		for _, s := range in.Paths {
			p, err := model.ParsePath(s)
			if err != nil {
				return t, fmt.Errorf("target path: %w", err)
			}
			if !slices.Contains(t.Paths, p) {
				t.Paths = append(t.Paths, p)
			}
		}
		slices.Sort(t.Paths)
		if len(t.Paths) == 0 {
			return t, invalidf("target: paths is empty")
		}
	}
	var prefixes []model.Path
	if in.Subtree != "" {
		p, err := model.ParsePath(in.Subtree)
		if err != nil {
			return t, fmt.Errorf("target subtree: %w", err)
		}
		prefixes = append(prefixes, p)
	}
	filters := 0
	addLabel := func(k, v string) error {
		if err := model.ValidText("label key", k, model.MaxLabelLen); err != nil {
			return err
		}
		if err := model.ValidText("label value", v, model.MaxLabelLen); err != nil {
			return err
		}
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		if old, ok := t.Labels[k]; ok && old != v {
			return invalidf("label %q is asked both %q and %q", k, old, v)
		}
		t.Labels[k] = v
		filters++
		return nil
	}
	for k, v := range in.Labels {
		if err := addLabel(k, v); err != nil {
			return t, err
		}
	}
	for key, val := range in.Filter {
		switch {
		case key == "path":
			p, err := model.ParsePath(val)
			if err != nil {
				return t, fmt.Errorf("filter path: %w", err)
			}
			prefixes = append(prefixes, p)
		case key == "type":
			if err := model.ValidText("type", val, model.MaxTypeLen); err != nil {
				return t, err
			}
			t.Type = val
		case key == "tenant":
			if err := auth.ValidTenant(val); err != nil {
				return t, err
			}
			t.Tenant = val
		case strings.HasPrefix(key, "label."):
			if err := addLabel(strings.TrimPrefix(key, "label."), val); err != nil {
				return t, err
			}
		case strings.HasPrefix(key, "var."):
			name := strings.TrimPrefix(key, "var.")
			if err := model.ValidateName(name); err != nil {
				return t, invalidf("variable name %q: %v", name, err)
			}
			if t.Vars == nil {
				t.Vars = map[string]json.RawMessage{}
			}
			t.Vars[name] = model.SearchVarValue(val)
			filters++
		default:
			return t, invalidf("filter key %q: want path, type, tenant, label.<key> or var.<name>", key)
		}
	}
	if filters > maxFilters {
		return t, invalidf("more than %d label and variable filters", maxFilters)
	}
	for _, p := range prefixes {
		switch {
		case p.Within(t.Prefix):
			t.Prefix = p
		case t.Prefix.Within(p):
		default:
			return t, invalidf("target: subtree %s and filter path %s do not meet", t.Prefix, p)
		}
	}
	if t.Type != "" && t.Type != devices.DeviceType {
		return t, invalidf("target type %q: functions run on devices only (type %q)", t.Type, devices.DeviceType)
	}
	return t, nil
}

// Map returns the part of t that lies in the tree of the provider
// mounted at mount, in that provider's paths, and false when none does.
func (t Target) Map(mount model.Path) (Target, bool) {
	out := t
	prefix, ok := mapInto(t.Prefix, mount)
	if !ok {
		return Target{}, false
	}
	out.Prefix = prefix
	if t.Paths != nil {
		out.Paths = nil
		for _, p := range t.Paths {
			if p.Within(mount) && p != mount {
				out.Paths = append(out.Paths, unmount(mount, p))
			}
		}
		if len(out.Paths) == 0 {
			return Target{}, false
		}
	}
	return out, true
}

// Wire is t as the target of a bulk job sent to a provider.
func (t Target) Wire() apitypes.BulkTarget {
	var out apitypes.BulkTarget
	for _, p := range t.Paths {
		out.Paths = append(out.Paths, string(p))
	}
	out.Subtree = string(t.Prefix)
	if t.Type != "" || t.Tenant != "" || len(t.Vars) > 0 {
		out.Filter = map[string]string{}
		if t.Type != "" {
			out.Filter["type"] = t.Type
		}
		if t.Tenant != "" {
			out.Filter["tenant"] = t.Tenant
		}
		for k, v := range t.Vars {
			out.Filter["var."+k] = string(v)
		}
	}
	if len(t.Labels) > 0 {
		out.Labels = t.Labels
	}
	return out
}

// mapInto maps path p of this node to the provider mounted at mount:
// the provider's whole tree when p holds the mount, the rest of p when
// the mount holds it, none otherwise.
func mapInto(p, mount model.Path) (model.Path, bool) {
	switch {
	case mount.Within(p):
		return model.Root, true
	case p.Within(mount):
		return unmount(mount, p), true
	}
	return "", false
}

// MapScope maps the subtrees scope (nil: everything) to the provider at
// mount; ok is false when none of it reaches there.
func MapScope(scope []model.Path, mount model.Path) ([]model.Path, bool) {
	if scope == nil {
		return nil, true
	}
	var out []model.Path
	for _, s := range scope {
		if p, ok := mapInto(s, mount); ok {
			out = append(out, p)
		}
	}
	return out, len(out) > 0
}

func unmount(mount, p model.Path) model.Path {
	if p == mount {
		return model.Root
	}
	return p[len(mount):]
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{model.ErrInvalid}, args...)...)
}
