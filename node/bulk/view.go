package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/jobs"
)

// Reading a bulk job: this node's part, plus the parts of the nodes
// below as their contexts mirrored here show them (no request goes down).

// View is a bulk job as apitypes.BulkJob.
type View = apitypes.BulkJobOf[string]

// CanSee reports whether p may read part: its tenant's users and system
// users (a system user's job: system users only), with role on what its
// target selects.
func CanSee(p *auth.Principal, part *Part, role auth.Role) bool {
	if !p.System && (part.Tenant == "" || part.Tenant != p.Tenant) {
		return false
	}
	t, err := ParseTarget(part.Target)
	if err != nil {
		return p.System
	}
	return Authorize(p, t, role) == nil
}

// tier is one node's part as mirrored here: its node's path here and
// its context.
type tier struct {
	node model.Path
	ctx  *model.Context
}

// tiers lists the mirrored parts of bulk job id, by node path.
func (s *Service) tiers(ctx context.Context, id string) ([]tier, error) {
	q := model.SearchQuery{Prefix: federation.PeersRoot, Type: ContextType, Labels: map[string]string{JobLabel: id}, Limit: model.MaxSearchLimit}
	var out []tier
	suffix := string(jobs.BulkPath(id))
	for {
		pg, err := s.cfg.Search(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, c := range pg.Contexts {
			node, ok := strings.CutSuffix(string(c.Path), suffix)
			if !ok || node == "" {
				continue
			}
			out = append(out, tier{node: model.Path(node), ctx: c})
		}
		if pg.Next == "" {
			break
		}
		q.After = pg.Next
	}
	slices.SortFunc(out, func(a, b tier) int { return strings.Compare(string(a.node), string(b.node)) })
	return out, nil
}

// View returns bulk job id as this node sees it.
func (s *Service) View(ctx context.Context, id string) (View, error) {
	part, err := s.Get(id)
	if err != nil {
		return View{}, err
	}
	v := View{
		ID: part.ID, Bulk: true, Function: part.Function, Args: part.Args, Target: part.Target, Rollout: part.Rollout,
		Tenant: part.Tenant, CreatedBy: part.CreatedBy, Created: part.Created, Deadline: part.Deadline,
		Origin: part.Origin, Peers: map[string]apitypes.BulkPeer{},
	}
	own := Progress{State: apitypes.BulkRunning}
	if c, err := s.cfg.Tree.Get(jobs.BulkPath(id)); err == nil {
		if p, ok := progressOf(c); ok {
			own = p
		}
	}
	v.Local = apitypes.BulkPeer{BulkCounters: own.Counters, State: own.State, Reason: own.Reason, Attempt: own.Attempt}
	v.Counters = own.Counters
	v.Attempt = part.Attempt
	addWaves := func(ws []apitypes.BulkWave) {
		for i, w := range ws {
			if i == len(v.Waves) {
				v.Waves = append(v.Waves, apitypes.BulkWave{State: apitypes.BulkDone})
			}
			agg := &v.Waves[i]
			agg.Size += w.Size
			agg.Counters.Add(w.Counters)
			agg.State = worse(agg.State, w.State)
		}
	}
	addWaves(own.Waves)
	paused, reason := own.State == apitypes.BulkPaused, own.Reason
	errs := func(node model.Path, m map[string]string) {
		for mount, e := range m {
			at := string(mapPath(node, model.Path(mount)))
			if _, ok := v.Peers[at]; !ok {
				v.Peers[at] = apitypes.BulkPeer{State: apitypes.BulkDone, Error: e}
			}
		}
	}
	ts, err := s.tiers(ctx, id)
	if err != nil {
		return View{}, err
	}
	// Only the tiers below a link the job went down count: a provider it
	// was never sent to cannot add a part of its own making.
	ts = slices.DeleteFunc(ts, func(t tier) bool {
		for _, l := range part.Links {
			if t.node.Within(l.Mount) {
				return false
			}
		}
		return true
	})
	for _, t := range ts {
		p, ok := progressOf(t.ctx)
		if !ok {
			continue
		}
		v.Peers[string(t.node)] = apitypes.BulkPeer{BulkCounters: p.Counters, State: p.State, Reason: p.Reason, Attempt: p.Attempt}
		v.Counters.Add(p.Counters)
		addWaves(p.Waves)
		if p.State == apitypes.BulkPaused && !paused {
			paused, reason = true, string(t.node)+": "+p.Reason
		}
	}
	errs(model.Root, own.Errors)
	for _, t := range ts {
		if p, ok := progressOf(t.ctx); ok {
			errs(t.node, p.Errors)
		}
	}
	v.State = own.State
	switch {
	case part.Cancelled:
		v.State = apitypes.BulkCancelled
	case own.Attempt < part.Attempt || (part.Held() && own.State == apitypes.BulkRunning) ||
		(!part.Held() && own.State == apitypes.BulkPaused):
		// Retried, paused or tripped since its progress was last written.
		v.State, v.Reason = apitypes.BulkRunning, ""
		if part.Held() {
			v.State, v.Reason = apitypes.BulkPaused, part.Reason
			if v.Reason == "" {
				v.Reason = part.Tripped
			}
		}
	case v.State != apitypes.BulkDone && paused:
		v.State, v.Reason = apitypes.BulkPaused, reason
	}
	if len(v.Waves) == 0 {
		v.Waves = []apitypes.BulkWave{{Size: v.Counters.Total, State: v.State, Counters: v.Counters}}
	}
	return v, nil
}

// worse is the state of a wave across nodes whose waves are in a and b:
// cancelled, else paused, else running, else pending, else done.
func worse(a, b apitypes.BulkState) apitypes.BulkState {
	rank := func(s apitypes.BulkState) int {
		switch s {
		case apitypes.BulkCancelled:
			return 4
		case apitypes.BulkPaused:
			return 3
		case apitypes.BulkRunning:
			return 2
		case apitypes.BulkPending:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

func mapPath(node, p model.Path) model.Path {
	switch {
	case node.IsRoot():
		return p
	case p.IsRoot():
		return node
	}
	return node + p
}

// Failures returns a page of bulk job id's failed devices, on this node
// first, then on each node below in path order, newest first within a
// node. after is the Next of the previous page ("" for the first).
func (s *Service) Failures(ctx context.Context, id, after string, limit int) (apitypes.BulkFailurePage, error) {
	page := apitypes.BulkFailurePage{Failures: []apitypes.BulkFailure{}}
	if _, err := s.Get(id); err != nil {
		return page, err
	}
	startNode, before := model.Root, uint64(0)
	if after != "" {
		i := strings.LastIndexByte(after, '@')
		if i <= 0 {
			return page, fmt.Errorf("%w: after %q", model.ErrInvalid, after)
		}
		n, err := strconv.ParseUint(after[i+1:], 10, 64)
		if err != nil {
			return page, fmt.Errorf("%w: after %q", model.ErrInvalid, after)
		}
		startNode, before = model.Path(after[:i]), n
	}
	ts, err := s.tiers(ctx, id)
	if err != nil {
		return page, err
	}
	nodes := []model.Path{model.Root}
	for _, t := range ts {
		nodes = append(nodes, t.node)
	}
	i := slices.Index(nodes, startNode)
	if i < 0 {
		return page, fmt.Errorf("%w: after %q names no node of the job", model.ErrInvalid, after)
	}
	for ; i < len(nodes); i++ {
		node := nodes[i]
		at := mapPath(node, jobs.BulkPath(id))
		for {
			evs, err := s.cfg.Tree.Events(at, model.EventQuery{Before: before, Limit: limit + 1})
			if err != nil {
				break // a node whose part has no context yet lists nothing
			}
			for _, e := range evs {
				if e.Name != jobs.BulkFailureEventName {
					continue
				}
				var f jobs.BulkFailureEvent
				if json.Unmarshal(e.Payload, &f) != nil {
					continue
				}
				if len(page.Failures) == limit {
					page.Next = string(node) + "@" + strconv.FormatUint(before, 10)
					return page, nil
				}
				page.Failures = append(page.Failures, apitypes.BulkFailure{
					Node: string(node), Path: string(mapPath(node, f.Path)), Device: f.Device, Job: f.Job,
					State: f.State, Error: f.Error, Time: e.Time,
				})
				before = e.Seq
			}
			if len(evs) == 0 {
				break
			}
			before = evs[len(evs)-1].Seq
		}
		before = 0
	}
	return page, nil
}

// List calls fn with this node's part of each bulk job, finished or
// not, in no particular order, until fn returns false.
func (s *Service) List(fn func(*Part) bool) error {
	stop := errors.New("stop")
	err := s.cfg.Tree.Records(KindBulk, func(key string, value []byte) error {
		p := new(Part)
		if err := json.Unmarshal(value, p); err != nil {
			return fmt.Errorf("bulk: job %s: %w", key, err)
		}
		if !fn(p) {
			return stop
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}
