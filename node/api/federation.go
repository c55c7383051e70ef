package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/jobs"
)

// Federation in the API (docs/api.md, "Federation"; docs/federation.md).
//
// A consumer mirrors each provider at /peers/<provider>. The mirror is
// read like any subtree, from this node's store; it is never written
// through this API (409 mounted_read_only): the data belongs to the
// provider. Function calls on a mounted path, and reads with ?live=true,
// go down the link to the node that owns the context. This node checks
// the caller's grants on the path first, exactly as for local contexts;
// the provider then checks the grant it gave this node and the caller's
// tenant, and records the call in its own audit trail.

// Federation is what the API needs of the node's federation service;
// *federation.Service implements it.
type Federation interface {
	Peers() []federation.PeerStatus
	CreateJoinToken(ctx context.Context, g federation.JoinGrant) (string, time.Time, error)
	Revoke(ctx context.Context, peer string) error
	Verify(ctx context.Context) ([]federation.VerifyResult, error)
	Mounted(p model.Path) bool
	Call(ctx context.Context, req federation.CallRequest) (federation.CallResult, error)
	Get(ctx context.Context, id federation.Identity, p model.Path) (*model.Context, error)
	Job(ctx context.Context, id federation.Identity, node model.Path, jobID string) (federation.CallResult, error)
	Alert(ctx context.Context, id federation.Identity, p model.Path, body []byte) ([]byte, error)
	History(ctx context.Context, id federation.Identity, p model.Path, query []byte) ([]byte, error)
}

// Error codes of federation answers.
const (
	codePeerUnreachable = apitypes.CodePeerUnreachable
	codePeerForbidden   = apitypes.CodePeerForbidden
	codeMountedReadOnly = apitypes.CodeMountedReadOnly
	codeAlertsReadOnly  = apitypes.CodeAlertsReadOnly
)

// remoteCallMargin is added to a call's wait to bound the whole request
// down the link (the provider answers once the wait runs out).
const remoteCallMargin = 30 * time.Second

var errNoFederation = apiError(http.StatusNotImplemented, codeNotImplemented,
	"federation is not enabled on this node: it needs its CA (tls/ca.crt and tls/ca.key, as strata init writes them)")

func (s *Server) federation() (Federation, error) {
	if s.cfg.Federation == nil {
		return nil, errNoFederation
	}
	return s.cfg.Federation, nil
}

// mounted reports whether path is served by a provider below this node.
func (s *Server) mounted(path model.Path) bool {
	return s.cfg.Federation != nil && s.cfg.Federation.Mounted(path)
}

// readOnlyMount refuses writes under /peers: mirrors change only by
// following their provider, and /peers itself holds only mounts. It
// also refuses them under /alerts, which the node's alerts write (an
// operator acknowledges or silences an alert through its own routes).
func readOnlyMount(path model.Path) error {
	if path.Within(alerts.Root) {
		return apiError(http.StatusConflict, codeAlertsReadOnly,
			"%s: alerts are written by the node's rules; acknowledge or silence one with POST %s/{path}/ack or /silence", path, alertsPrefix)
	}
	if !path.Within(federation.PeersRoot) {
		return nil
	}
	segs := path.Segments()
	if len(segs) < 2 {
		return apiError(http.StatusConflict, codeMountedReadOnly, "%s holds the mirrors of federation peers; it is not written through the API", federation.PeersRoot)
	}
	return apiError(http.StatusConflict, codeMountedReadOnly,
		"%s: the subtree is a mirror of peer %s; change it on that node", path, segs[1])
}

// identity is who a request down the links is made for.
func identity(p *auth.Principal) federation.Identity {
	return federation.Identity{User: p.User, Tenant: p.Tenant, System: p.System}
}

// peerError gives errors of the links their own answers: the link is
// down (503 peer_unreachable) or the provider refused (403
// peer_forbidden). Other errors (not found, invalid...) keep theirs.
func peerError(path model.Path, err error) error {
	switch {
	case errors.Is(err, federation.ErrUnreachable):
		return apiError(http.StatusServiceUnavailable, codePeerUnreachable,
			"%s is served by a peer that cannot be reached now (%v); retry later, or see GET /api/v1/peers", path, err)
	case errors.Is(err, federation.ErrForbidden):
		return apiError(http.StatusForbidden, codePeerForbidden,
			"%s: the peer refused (%v); its grant to this node does not allow it", path, err)
	}
	return err
}

// remoteCallJSON answers a call routed down the links. Node is the path,
// seen from here, of the node that owns the job; the job is followed
// there, not in this node's /api/v1/jobs.
type remoteCallJSON struct {
	JobID    string          `json:"job"`
	ID       string          `json:"id,omitempty"`
	Node     model.Path      `json:"node"`
	Path     model.Path      `json:"path"`
	Function string          `json:"function"`
	State    string          `json:"state"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// callRemote routes a function call on a mounted path to its provider:
// 200 with the outcome once the job is final, else 202 with the job and
// the node that owns it.
func (s *Server) callRemote(w http.ResponseWriter, r *http.Request, p *auth.Principal, path model.Path, name string) error {
	fed, err := s.federation()
	if err != nil {
		return err
	}
	cl, err := s.decodeCall(w, r)
	if err != nil {
		return err
	}
	if cl.args, err = s.installArgs(p, name, cl.args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), cl.wait+remoteCallMargin)
	defer cancel()
	stop := context.AfterFunc(s.quit, cancel)
	defer stop()
	res, err := fed.Call(ctx, federation.CallRequest{
		Path: path, Function: name, Args: cl.args, Wait: cl.wait, Deadline: cl.deadline, Identity: identity(p),
	})
	if err != nil {
		return peerError(path, err)
	}
	out := remoteCallJSON{JobID: res.Job, ID: res.Job, Node: res.Node, Path: path, Function: name,
		State: res.State, Result: res.Result, Error: res.Error}
	status := http.StatusOK
	if !jobs.State(res.State).Final() {
		status = http.StatusAccepted
	}
	noteAudit(r, func(e *auditEntry) {
		e.rec.Job, e.rec.Node, e.outcome = res.Job, res.Node, remoteOutcome(res.State)
	})
	job, _, _, err := remoteJob(res, out)
	if err != nil {
		return err
	}
	writeJSON(w, status, job)
	return nil
}

// remoteJob is a job owned by a node below, as this node shows it: the
// whole job as its owner has it (fields this node does not know
// included), with its path as seen from here and the owning node's path
// and the job's id added as "node" and "job". An owner that sends only the
// summary is answered with base. It returns the job's tenant and path
// here for the caller's checks.
func remoteJob(res federation.CallResult, base remoteCallJSON) (job any, tenant string, path model.Path, err error) {
	path = mapPath(res.Node, res.Path)
	if res.Path == "" {
		path = base.Path
	}
	var doc map[string]json.RawMessage
	if len(res.JobJSON) == 0 || json.Unmarshal(res.JobJSON, &doc) != nil || doc == nil {
		base.Path = path
		return base, "", path, nil
	}
	var head struct {
		Path   model.Path `json:"path"`
		Tenant string     `json:"tenant"`
	}
	if err := json.Unmarshal(res.JobJSON, &head); err != nil {
		return nil, "", "", fmt.Errorf("federation: job %s from %s: %w", res.Job, res.Node, err)
	}
	if head.Path != "" {
		path = mapPath(res.Node, head.Path)
	}
	for k, v := range map[string]any{"path": path, "node": res.Node, "job": res.Job} {
		if doc[k], err = json.Marshal(v); err != nil {
			return nil, "", "", err
		}
	}
	return doc, head.Tenant, path, nil
}

// getRemoteJob follows a job owned by a node below (?node= of GET
// /api/v1/jobs/{id}, the "node" of a pending call's answer). The operator
// needs to be able to read that node's subtree here.
func (s *Server) getRemoteJob(w http.ResponseWriter, r *http.Request, p *auth.Principal, id, nodeParam string) error {
	node, err := model.ParsePath(nodeParam)
	if err != nil {
		return invalidf("node: %v", err)
	}
	if !p.Can(auth.RoleViewer, node) {
		return forbidden("reading jobs of", auth.RoleViewer, node)
	}
	fed, err := s.federation()
	if err != nil {
		return err
	}
	res, err := fed.Job(r.Context(), identity(p), node, id)
	if err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return jobNotFound(id)
		}
		return peerError(node, err)
	}
	job, tenant, path, err := remoteJob(res, remoteCallJSON{JobID: res.Job, ID: res.Job, Node: res.Node,
		State: res.State, Result: res.Result, Error: res.Error})
	if err != nil {
		return err
	}
	// The owner checked the tenant; check it here too, with the grants
	// on the job's path, as for a local job.
	if !p.SeesTenant(tenant) || !p.Can(auth.RoleViewer, path) {
		return jobNotFound(id)
	}
	writeJSON(w, http.StatusOK, job)
	return nil
}

// mapPath is p on the owning node seen from here, under node.
func mapPath(node, p model.Path) model.Path {
	if p == "" || p.IsRoot() {
		return node
	}
	return node + p
}

// getLive reads a mounted context from its provider rather than from the
// mirror here.
func (s *Server) getLive(w http.ResponseWriter, r *http.Request, p *auth.Principal, path model.Path) error {
	fed, err := s.federation()
	if err != nil {
		return err
	}
	c, err := fed.Get(r.Context(), identity(p), path)
	if err != nil {
		return peerError(path, err)
	}
	if !p.SeesTenant(c.Tenant) {
		return contextNotFound(path)
	}
	writeJSON(w, http.StatusOK, renderContext(c))
	return nil
}

// liveRead reports whether a GET asks for a live read (?live=true).
func liveRead(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("live"); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, invalidf("live %q: want true or false", v)
	}
}

// requireSystem refuses what only system administrators do: federation
// links the whole node, across tenants.
func requireSystem(p *auth.Principal, what string) error {
	if p.System {
		return nil
	}
	return fmt.Errorf("%w: %s is for system administrators (federation spans every tenant)", auth.ErrForbidden, what)
}
