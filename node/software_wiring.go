package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/releases"
)

// Software across tiers (docs/software.md): a release goes down a link
// with an install (a rollout's bulk job, or a call routed to a device
// below) or a staging. Each node that sends one notes it (releases.
// MarkSent) so the provider may fetch the artifacts from it; each node
// that receives one verifies and keeps it (releases.Receive) with the
// consumer it came from, and fetches the artifacts from there.

// Interface guards.
var (
	_ federation.ArtifactServer  = (*fedLocal)(nil)
	_ federation.ReleaseReceiver = (*fedLocal)(nil)
	_ federation.CallForwarder   = (*fedLocal)(nil)
	_ federation.Informer        = (*fedLocal)(nil)
)

// Audit operation of a release sent over a link.
const auditRelease = "release"

// infoCache is the report (federation.Informer) of a node's cache tiers.
const infoCache = "software.cache"

// cacheInfoTimeout bounds the wait for the tiers below in a cache report.
const cacheInfoTimeout = 5 * time.Second

// OpenArtifact serves a provider's fetch (federation.ArtifactServer).
func (l *fedLocal) OpenArtifact(ctx context.Context, provider, sum string, offset int64) (io.ReadCloser, int64, error) {
	if l.n.releases == nil {
		return nil, 0, fmt.Errorf("%w: this node keeps no releases", model.ErrNotFound)
	}
	return l.n.releases.OpenForPeer(ctx, provider, sum, offset)
}

// Release takes a release sent by consumer (a staging), keeps it and
// sends it on to the nodes below it names.
func (l *fedLocal) Release(ctx context.Context, consumer string, id federation.Identity, body []byte) error {
	err := l.release(ctx, consumer, id, body)
	l.n.audit.Write(fedRecord(consumer, id, auditRelease, "", "", err, audit.OK))
	return err
}

func (l *fedLocal) release(ctx context.Context, consumer string, id federation.Identity, body []byte) error {
	n := l.n
	if n.releases == nil {
		return fmt.Errorf("%w: this node keeps no releases", model.ErrNotFound)
	}
	var in releases.Incoming
	if err := json.Unmarshal(body, &in); err != nil {
		return fmt.Errorf("%w: release request: %v", model.ErrInvalid, err)
	}
	ins := releases.Install{Release: in.Signed, Tenant: in.Tenant}
	if err := releases.MaySend(&ins, id.Tenant, id.System); err != nil {
		return err
	}
	m, err := n.releases.Receive(ctx, consumer, byOf(consumer, id), in)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range n.stageBelow(ctx, id, in.Tenant, m, in, in.Forward) {
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", r.Peer, r.Error))
		}
	}
	return errors.Join(errs...)
}

func byOf(consumer string, id federation.Identity) string {
	if id.User != "" {
		return id.User + "@" + consumer
	}
	return consumer
}

// stageBelow sends release m (in) to each of peers (mount paths here),
// grouped by the provider they are reached through, and answers for
// each.
func (n *Node) stageBelow(ctx context.Context, id federation.Identity, tenant string, m *apitypes.Manifest, in releases.Incoming, peers []model.Path) []apitypes.StageResult {
	type hop struct {
		paths   []model.Path // as asked
		forward []model.Path // relative to the provider
	}
	hops := map[string]*hop{}
	var order []string
	var out []apitypes.StageResult
	for _, p := range peers {
		name, rest, ok := splitPeer(p)
		if !ok {
			out = append(out, apitypes.StageResult{Peer: string(p), Error: "not a mounted node's path (/peers/<name>...)"})
			continue
		}
		h := hops[name]
		if h == nil {
			h = &hop{}
			hops[name] = h
			order = append(order, name)
		}
		h.paths = append(h.paths, p)
		if rest != "" {
			h.forward = append(h.forward, rest)
		}
	}
	if n.fed == nil && len(order) > 0 {
		for _, name := range order {
			for _, p := range hops[name].paths {
				out = append(out, apitypes.StageResult{Peer: string(p), Error: "federation is off on this node"})
			}
		}
		return out
	}
	for _, name := range order {
		h := hops[name]
		err := n.releases.MarkSent(ctx, name, tenant, m.Name, m.Version)
		if err == nil {
			next := releases.Incoming{Tenant: tenant, Signed: in.Signed, Stage: true, Forward: h.forward}
			var b []byte
			if b, err = json.Marshal(next); err == nil {
				err = n.fed.Release(ctx, name, id, b)
			}
		}
		for _, p := range h.paths {
			r := apitypes.StageResult{Peer: string(p)}
			if err != nil {
				r.Error = err.Error()
			}
			out = append(out, r)
		}
	}
	return out
}

// splitPeer splits /peers/<name>[/peers/...] into the provider's name and
// the rest ("" when the path is the provider itself).
func splitPeer(p model.Path) (string, model.Path, bool) {
	rest, ok := strings.CutPrefix(string(p), string(federation.PeersRoot)+"/")
	if !ok || rest == "" {
		return "", "", false
	}
	name, tail, _ := strings.Cut(rest, "/")
	if model.ValidateName(name) != nil {
		return "", "", false
	}
	if tail == "" {
		return name, "", true
	}
	sub := model.Path("/" + tail)
	if !sub.Within(federation.PeersRoot) || sub == federation.PeersRoot {
		return "", "", false
	}
	return name, sub, true
}

// Stage sends release ref, which p may read, to the nodes at peers
// (POST /api/v1/releases/{name}/{version}/stage): each keeps it and
// fetches its artifacts now, whatever its cache budget.
func (n *Node) Stage(ctx context.Context, p *auth.Principal, ref releases.Ref, peers []model.Path) ([]apitypes.StageResult, error) {
	if !p.System || !p.Can(auth.RoleOperator, federation.PeersRoot) {
		// Staging fills the caches of the tiers below, which all tenants
		// share: it is the system operators'.
		return nil, fmt.Errorf("%w: staging releases is for system users with the operator role on %s", auth.ErrForbidden, federation.PeersRoot)
	}
	tenant, signed, m, err := n.releases.Lookup(p, ref)
	if err != nil {
		return nil, err
	}
	if !m.ExpiresTime().After(time.Now()) {
		return nil, fmt.Errorf("%w: release %s %s expired at %s", model.ErrInvalid, m.Name, m.Version, m.Expires)
	}
	if len(peers) == 0 || len(peers) > 256 {
		return nil, fmt.Errorf("%w: peers: 1 to 256 mounted nodes", model.ErrInvalid)
	}
	for _, path := range peers {
		if !p.Can(auth.RoleOperator, path) {
			return nil, fmt.Errorf("%w: staging to %s needs the operator role there", auth.ErrForbidden, path)
		}
	}
	id := federation.Identity{User: p.User, Tenant: p.Tenant, System: p.System}
	return n.stageBelow(ctx, id, tenant, m, releases.Incoming{Tenant: tenant, Signed: signed}, peers), nil
}

// ForwardCall notes an install's release as sent to the provider a call
// is routed to, after keeping it here when it came from above
// (federation.CallForwarder).
func (l *fedLocal) ForwardCall(ctx context.Context, provider string, call federation.CallRequest) error {
	if call.Function != releases.InstallFunction || l.n.releases == nil {
		return nil
	}
	ins, err := l.receiveInstall(ctx, call.Identity, call.Args)
	if err != nil {
		return err
	}
	m, err := releases.InstallManifest(ins)
	if err != nil {
		return err
	}
	return l.n.releases.MarkSent(ctx, provider, ins.Tenant, m.Name, m.Version)
}

// receiveInstall checks an install's args that reach or pass this node
// and, when they came from a consumer (id.Via), keeps their release.
func (l *fedLocal) receiveInstall(ctx context.Context, id federation.Identity, args json.RawMessage) (*releases.Install, error) {
	ins, err := releases.ParseInstall(args)
	if err != nil {
		return nil, err
	}
	if err := releases.MaySend(ins, id.Tenant, id.System); err != nil {
		return nil, err
	}
	if len(id.Via) > 0 {
		consumer := id.Via[len(id.Via)-1]
		in := releases.Incoming{Tenant: ins.Tenant, Signed: ins.Release}
		if _, err := l.n.releases.Receive(ctx, consumer, byOf(consumer, id), in); err != nil {
			return nil, err
		}
	}
	return ins, nil
}

// receiveBulkInstall keeps the release of a rollout that came from
// consumer, before its part is made here.
func (l *fedLocal) receiveBulkInstall(ctx context.Context, consumer string, id federation.Identity, req bulk.Request) error {
	if req.Action != bulk.ActionCreate || req.Spec.Function != releases.InstallFunction || l.n.releases == nil {
		return nil
	}
	id.Via = append(slices.Clone(id.Via), consumer)
	_, err := l.receiveInstall(ctx, id, req.Spec.Args)
	return err
}

// sentInstall notes the release of a rollout sent to provider.
func (n *Node) sentInstall(ctx context.Context, provider string, req bulk.Request) error {
	if req.Action != bulk.ActionCreate || req.Spec.Function != releases.InstallFunction || n.releases == nil {
		return nil
	}
	ins, err := releases.ParseInstall(req.Spec.Args)
	if err != nil {
		return err
	}
	m, err := releases.InstallManifest(ins)
	if err != nil {
		return err
	}
	return n.releases.MarkSent(ctx, provider, ins.Tenant, m.Name, m.Version)
}

// pinnedArtifacts are the artifacts of the releases of this node's
// rollouts that have not finished (the cache keeps them).
func (n *Node) pinnedArtifacts() map[string]bool {
	pins := map[string]bool{}
	bs := n.bulkService()
	if bs == nil {
		return pins
	}
	bs.List(func(p *bulk.Part) bool {
		if p.Function != releases.InstallFunction || p.Finished || p.Cancelled {
			return true
		}
		ins, err := releases.ParseInstall(p.Args)
		if err != nil {
			return true
		}
		if m, err := releases.InstallManifest(ins); err == nil {
			for _, a := range m.Artifacts {
				pins[a.SHA256] = true
			}
		}
		return true
	})
	return pins
}

// Info reports on this node to a consumer (federation.Informer): its
// cache tiers, for system operators.
func (l *fedLocal) Info(ctx context.Context, consumer string, id federation.Identity, what string) ([]byte, error) {
	if what != infoCache {
		return nil, fmt.Errorf("%w: report %q", model.ErrNotFound, what)
	}
	if !id.System {
		// The links carry their own sentinel (auth's would reach the
		// consumer as an internal error).
		return nil, fmt.Errorf("%w: cache reports are for system operators", federation.ErrForbidden)
	}
	tiers, err := l.n.cacheTiers(ctx, id)
	if err != nil {
		return nil, err
	}
	return json.Marshal(tiers)
}

// CacheTiers answers GET /api/v1/software/cache: this node's cache and
// every node's below, for a system user with the viewer role on /.
func (n *Node) CacheTiers(ctx context.Context, p *auth.Principal) ([]apitypes.CacheTier, error) {
	if !p.System || !p.Can(auth.RoleViewer, model.Root) {
		return nil, fmt.Errorf("%w: the cache of each tier is shown to system users with the viewer role on /", auth.ErrForbidden)
	}
	return n.cacheTiers(ctx, federation.Identity{User: p.User, System: true})
}

func (n *Node) cacheTiers(ctx context.Context, id federation.Identity) ([]apitypes.CacheTier, error) {
	st, err := n.releases.Cache(ctx)
	if err != nil {
		return nil, err
	}
	out := []apitypes.CacheTier{{
		Node: n.cfg.Name, Path: "/", Role: n.cfg.Role,
		BudgetBytes: st.Budget, UsedBytes: st.Used, Objects: st.Objects, Pinned: st.Pinned, Fetching: st.Fetching,
		FetchedBytes: st.Fetched, ServedBytes: st.Served, OriginObjects: st.OriginObjects, OriginBytes: st.OriginBytes,
		Updated: time.Now().UTC(),
	}}
	if n.fed == nil {
		return out, nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, peer := range n.fed.Peers() {
		if peer.Direction != "provider" || peer.Name == "" || peer.State == "revoked" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := string(peer.Mount)
			cctx, cancel := context.WithTimeout(ctx, cacheInfoTimeout)
			b, err := n.fed.Info(cctx, peer.Name, id, infoCache)
			cancel()
			var below []apitypes.CacheTier
			if err == nil {
				err = json.Unmarshal(b, &below)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out = append(out, apitypes.CacheTier{Node: peer.Name, Path: base, Role: peer.Role, Error: err.Error()})
				return
			}
			for _, t := range below {
				if t.Path == "/" {
					t.Path = base
				} else {
					t.Path = base + t.Path
				}
				out = append(out, t)
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out[1:], func(a, b apitypes.CacheTier) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}
