package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// Route prefixes followed by a context path.
const (
	contextsPrefix = "/api/v1/contexts"
	eventsPrefix   = "/api/v1/events"
)

// pathSegments splits the escaped URL path after prefix into unescaped
// context path segments, each a valid name. Segments are unescaped one by
// one, so "%2F" can never become a separator, and nothing is cleaned: an
// empty, "." or ".." segment is an error, as is a trailing slash. The bare
// prefix, or the prefix and one slash, is the root (no segments).
func pathSegments(escaped, prefix string) ([]string, error) {
	rest, ok := strings.CutPrefix(escaped, prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return nil, invalidf("URL path %q does not start with %s/", escaped, prefix)
	}
	if rest == "" || rest == "/" {
		return nil, nil
	}
	parts := strings.Split(rest[1:], "/")
	if len(parts) > model.MaxDepth+2 { // +2: ".../functions/{name}"
		return nil, fmt.Errorf("%w: deeper than %d segments", model.ErrInvalidPath, model.MaxDepth)
	}
	segs := make([]string, len(parts))
	for i, part := range parts {
		seg, err := url.PathUnescape(part)
		if err != nil {
			return nil, fmt.Errorf("%w: segment %q: bad escape", model.ErrInvalidPath, part)
		}
		if err := model.ValidateName(seg); err != nil {
			return nil, err
		}
		segs[i] = seg
	}
	return segs, nil
}

// joinPath makes a canonical context path of validated segments.
func joinPath(segs []string) (model.Path, error) {
	if len(segs) == 0 {
		return model.Root, nil
	}
	s := "/" + strings.Join(segs, "/")
	p, err := model.ParsePath(s)
	if err != nil {
		return "", err
	}
	if string(p) != s {
		return "", fmt.Errorf("%w: %q is not canonical", model.ErrInvalidPath, s)
	}
	return p, nil
}

// contextPathOf extracts the context path that follows prefix in an
// escaped URL path.
func contextPathOf(escaped, prefix string) (model.Path, error) {
	segs, err := pathSegments(escaped, prefix)
	if err != nil {
		return "", err
	}
	return joinPath(segs)
}

func urlContextPath(r *http.Request, prefix string) (model.Path, error) {
	return contextPathOf(r.URL.EscapedPath(), prefix)
}

// forbidden says the caller's grants do not reach path. It depends only on
// the caller and the path, never on what exists, so it reveals nothing.
func forbidden(what string, need auth.Role, path model.Path) error {
	return fmt.Errorf("%w: %s %s needs the %s role there", auth.ErrForbidden, what, path, need)
}

var errSharedFolder = fmt.Errorf("%w: shared folders (no tenant) are changed by system administrators only", auth.ErrForbidden)

// visibleContext returns the context at path when p sees its tenant. A
// missing context and one of another tenant give the same error. The root,
// which has no stored state, reads as a shared folder.
func (s *Server) visibleContext(p *auth.Principal, path model.Path) (*model.Context, error) {
	c, err := s.model.Get(path)
	switch {
	case errors.Is(err, model.ErrNotFound) && path.IsRoot():
		return &model.Context{Path: model.Root, Type: model.FolderType}, nil
	case errors.Is(err, model.ErrNotFound):
		return nil, contextNotFound(path)
	case err != nil:
		return nil, err
	case !p.SeesTenant(c.Tenant):
		return nil, contextNotFound(path)
	}
	return c, nil
}

// contextJSON is a context as the API shows it: labels and variables
// always objects, functions always an array.
type contextJSON struct {
	Path      model.Path              `json:"path"`
	Type      string                  `json:"type"`
	Tenant    string                  `json:"tenant"`
	Labels    map[string]string       `json:"labels"`
	Variables map[string]variableJSON `json:"variables"`
	Functions []model.Function        `json:"functions"`
	Created   time.Time               `json:"created"`
	Updated   time.Time               `json:"updated"`
	Version   uint64                  `json:"version"`
}

// variableJSON is a variable with its value as raw JSON and its quality
// spelled out ("good" when unset).
type variableJSON struct {
	Value   json.RawMessage `json:"value"`
	Type    model.ValueType `json:"type"`
	Time    time.Time       `json:"time"`
	Quality model.Quality   `json:"quality"`
}

func renderVariables(vs map[string]model.Variable, at time.Time) map[string]variableJSON {
	out := make(map[string]variableJSON, len(vs))
	for name, v := range vs {
		j := variableJSON{Value: v.Value, Type: v.Type, Time: v.Time, Quality: v.Quality}
		if j.Quality == "" {
			j.Quality = model.QualityGood
		}
		if j.Time.IsZero() {
			j.Time = at
		}
		if len(j.Value) == 0 {
			j.Value = json.RawMessage("null")
		}
		out[name] = j
	}
	return out
}

func renderContext(c *model.Context) contextJSON {
	j := contextJSON{
		Path:      c.Path,
		Type:      c.Type,
		Tenant:    c.Tenant,
		Labels:    c.Labels,
		Variables: renderVariables(c.Variables, c.Updated),
		Functions: c.Functions,
		Created:   c.Created,
		Updated:   c.Updated,
		Version:   c.Version,
	}
	if j.Labels == nil {
		j.Labels = map[string]string{}
	}
	if j.Functions == nil {
		j.Functions = []model.Function{}
	}
	return j
}

func (s *Server) getContext(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, contextsPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleViewer, path) {
		return forbidden("reading", auth.RoleViewer, path)
	}
	if live, err := liveRead(r); err != nil {
		return err
	} else if live && s.mounted(path) {
		return s.getLive(w, r, p, path)
	}
	c, err := s.visibleContext(p, path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderContext(c))
	return nil
}

// putBody is the body of a PUT on a context.
type putBody struct {
	Type      string                     `json:"type"`
	Labels    map[string]string          `json:"labels"`
	Variables map[string]json.RawMessage `json:"variables"`
	Tenant    string                     `json:"tenant"`
}

// decodePut reads a PUT body into the put mutation of path, with the
// tenant as asked (not yet authorized). Every error wraps model.ErrInvalid
// (or model.ErrInvalidPath), except a body over its limit.
func decodePut(rd io.Reader, path model.Path) (model.Mutation, error) {
	var b putBody
	if err := decodeStrict(rd, &b); err != nil {
		return model.Mutation{}, err
	}
	if len(b.Variables) > model.MaxVariables {
		return model.Mutation{}, invalidf("more than %d variables", model.MaxVariables)
	}
	m := model.Mutation{Op: model.OpPut, Path: path, Type: b.Type, Tenant: b.Tenant, Labels: b.Labels}
	if b.Tenant != "" {
		if err := auth.ValidTenant(b.Tenant); err != nil {
			return model.Mutation{}, err
		}
	}
	if len(b.Variables) > 0 {
		m.Variables = make(map[string]model.Variable, len(b.Variables))
		for name, raw := range b.Variables {
			if err := model.ValidateName(name); err != nil {
				return model.Mutation{}, invalidf("variable name %q: %v", name, err)
			}
			// A zero time takes the time of the log entry.
			v, err := model.NewVariable(raw, time.Time{})
			if err != nil {
				return model.Mutation{}, fmt.Errorf("variable %q: %w", name, err)
			}
			m.Variables[name] = v
		}
	}
	if err := m.Validate(); err != nil {
		return model.Mutation{}, err
	}
	return m, nil
}

func (s *Server) putContext(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, contextsPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleOperator, path) {
		return forbidden("writing", auth.RoleOperator, path)
	}
	if err := readOnlyMount(path); err != nil {
		return err
	}
	m, err := decodePut(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), path)
	if err != nil {
		return err
	}
	if !p.System && m.Tenant != "" && m.Tenant != p.Tenant {
		return fmt.Errorf("%w: only system administrators place contexts in another tenant", auth.ErrForbidden)
	}

	if !p.System {
		m.Actor = p.Tenant
	}
	cur, err := s.model.Get(path)
	switch {
	case errors.Is(err, model.ErrNotFound):
		cur = nil
	case err != nil:
		return err
	}
	if err := s.checkDevicePut(p, path, &m, cur); err != nil {
		return err
	}
	if cur != nil {
		switch {
		case !p.SeesTenant(cur.Tenant):
			return contextNotFound(path)
		case !p.System && cur.Tenant == "":
			return errSharedFolder
		case !p.System:
			m.Tenant = "" // theirs already: unchanged
		}
	} else if !p.System {
		if err := s.visibleParent(p, path); err != nil {
			return err
		}
		m.Tenant = p.Tenant
	}
	if _, err := s.model.Apply(r.Context(), m); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			if cur == nil && !p.System {
				// Another tenant's context above: the answer of a
				// missing parent.
				return parentNotFound(path)
			}
			return contextNotFound(path)
		}
		return err
	}
	c, err := s.model.Get(path)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if cur == nil {
		status = http.StatusCreated
	}
	writeJSON(w, status, renderContext(c))
	return nil
}

// visibleParent checks that a non-system caller may create path: its
// parent exists and the caller sees it. A missing parent and another
// tenant's answer the same (parentNotFound), so a create never reveals
// what another tenant holds; that is also why only system users create
// missing ancestors (as shared folders) implicitly. Nobody creates inside
// another tenant's context; the model's Actor check holds that against
// races.
func (s *Server) visibleParent(p *auth.Principal, path model.Path) error {
	parent := path.Parent()
	if parent.IsRoot() {
		return nil
	}
	c, err := s.model.Get(parent)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return parentNotFound(path)
	case err != nil:
		return err
	case !p.SeesTenant(c.Tenant):
		return parentNotFound(path)
	}
	return nil
}

// parentNotFound is the one answer for creating path under a missing
// parent or one the caller may not see.
func parentNotFound(path model.Path) error {
	return fmt.Errorf("%w: context %s (the parent of %s; create it first)", model.ErrNotFound, path.Parent(), path)
}

func (s *Server) deleteContext(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, contextsPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleOperator, path) {
		return forbidden("deleting", auth.RoleOperator, path)
	}
	if err := readOnlyMount(path); err != nil {
		return err
	}
	cur, err := s.visibleContext(p, path)
	if err != nil {
		return err
	}
	if !p.System && cur.Tenant == "" {
		return errSharedFolder
	}
	del := model.Mutation{Op: model.OpDelete, Path: path}
	if !p.System {
		del.Actor = p.Tenant
	}
	if _, err := s.model.Apply(r.Context(), del); err != nil {
		switch {
		case errors.Is(err, model.ErrNotFound):
			return contextNotFound(path)
		case errors.Is(err, model.ErrConflict) && !p.System:
			return s.releaseContext(w, r, p, cur, err)
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// releaseContext answers a tenant's DELETE of its context cur that the
// model refused with conflict (children). When the caller sees one of the
// children, that is the answer (409: delete them first). When every child
// belongs to another tenant (only a system administrator can arrange
// that), answering 409 would reveal them; instead the caller's context is
// deleted as far as the caller is concerned: its tenant, type, labels,
// variables and functions go, and a shared folder remains as the parent
// of the other tenant's contexts, exactly like the folders created
// implicitly as ancestors. The answer is 204, as for a context without
// children.
func (s *Server) releaseContext(w http.ResponseWriter, r *http.Request, p *auth.Principal, cur *model.Context, conflict error) error {
	after := ""
	for {
		kids, err := s.model.Children(cur.Path, after, 256)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if p.SeesTenant(k.Tenant) {
				return conflict
			}
		}
		if len(kids) < 256 {
			break
		}
		after = kids[len(kids)-1].Name
	}
	// A system write (the caller's tenant is checked above): the model's
	// Actor rule would refuse a tenant making a shared folder.
	rel := model.Mutation{Op: model.OpPut, Path: cur.Path, Type: model.FolderType, Replace: true}
	if _, err := s.model.Apply(r.Context(), rel); err != nil {
		return err
	}
	s.log.Info("context released to a shared folder: its remaining children belong to other tenants",
		"path", cur.Path, "tenant", cur.Tenant, "by", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// callFunction routes POST /api/v1/contexts/{path}/functions/{name}: the
// caller needs the operator role on the path and must see the context,
// which must declare the function; callDeviceFunction does the rest.
func (s *Server) callFunction(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	segs, err := pathSegments(r.URL.EscapedPath(), contextsPrefix)
	if err != nil {
		return err
	}
	n := len(segs)
	if n < 2 || segs[n-2] != "functions" {
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
		return apiError(http.StatusMethodNotAllowed, codeMethodNotAllowed,
			"POST on a context calls a function: POST %s{path}/functions/{name}", contextsPrefix+"/")
	}
	path, err := joinPath(segs[:n-2])
	if err != nil {
		return err
	}
	name := segs[n-1]
	if !p.Can(auth.RoleOperator, path) {
		return forbidden("calling functions of", auth.RoleOperator, path)
	}
	if s.mounted(path) {
		return s.callRemote(w, r, p, path, name)
	}
	c, err := s.visibleContext(p, path)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(c.Functions, func(f model.Function) bool { return f.Name == name }) {
		return apiError(http.StatusNotFound, codeNotFound, "function %q of %s not found", name, path)
	}
	return s.callDeviceFunction(w, r, p, c, name)
}
