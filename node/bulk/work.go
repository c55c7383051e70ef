package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
)

// The work loop. Every Tick (and at once when a part is created or
// cancelled) the loop takes each part not finished through its steps, in
// order, each repeated until it is done and durable:
//
//  1. expand: the local devices the target selects, in path order (the
//     part's members; or a refusal each), and the list of links to send
//     to; then Expanded.
//  2. cancel (when Cancelled): cancel the device jobs not final, send
//     the cancel to the links the job was sent to.
//  3. send: the job to each link not yet sent, until the provider takes
//     or refuses it; an unreachable one is tried again on the next round.
//     Then the part's latest Control to each link that has not taken it.
//  4. gate (health.go): the health gate of the device jobs that
//     succeeded and await it (held or cancelled parts included);
//     roll (roll.go): thresholds, waves, and the device jobs due in the
//     open waves within the rate and the concurrency.
//  5. count: the part's counters from its device jobs, its waves, its
//     state from them and from its links' progress (read from the
//     mirror), written to its context when they changed.
//  6. finish: a part done (or cancelled, with every cancel sent) leaves
//     the loop; a retry brings it back.

func (s *Service) loop() {
	defer close(s.done)
	// Work in progress ends when the service stops: the loop returns only
	// then, and the goroutine with it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	leading, adopted := false, time.Now()
	var last time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
			// A round reads every member of every part: kicks (each
			// device job that ends is one) start one at most every
			// minRound.
			if wait := minRound - time.Since(last); wait > 0 {
				select {
				case <-s.stop:
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		if s.cfg.Leading != nil {
			now := s.cfg.Leading()
			switch {
			case !now:
				leading = false
				continue
			case !leading:
				// Other replicas worked on the parts until now.
				if err := s.reload(); err != nil {
					s.log.Warn("bulk jobs: reload on leading", "err", err)
					continue
				}
				leading = true
			case time.Since(adopted) > adoptEvery:
				if err := s.adopt(); err != nil {
					s.log.Warn("bulk jobs: adopt parts made through other replicas", "err", err)
				}
				adopted = time.Now()
			}
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.parts))
		for id := range s.parts {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		slices.Sort(ids)
		for _, id := range ids {
			if ctx.Err() != nil {
				return
			}
			if err := s.work(ctx, id); err != nil && ctx.Err() == nil {
				s.log.Warn("bulk job: will try again", "bulk", id, "err", err)
			}
		}
	}
}

// minRound is the least time between two rounds started by kicks.
const minRound = 50 * time.Millisecond

// adoptEvery is how often a leading replica looks for parts created or
// received through other replicas.
const adoptEvery = time.Second

// snapshot returns part id as its record has it (on a cluster, another
// replica may have changed it: a cancel made through a follower), and
// brings memory up to date; nil when the part is finished or gone.
func (s *Service) snapshot(id string) *Part {
	p, err := s.Get(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		if mp, ok := s.parts[id]; ok && !errors.Is(err, model.ErrNotFound) {
			return clonePart(mp)
		}
		delete(s.parts, id)
		delete(s.devJob, id)
		return nil
	case p.Finished:
		delete(s.parts, id)
		delete(s.devJob, id)
		delete(s.last, id)
		delete(s.lastAt, id)
		delete(s.pace, id)
		delete(s.firstIDs, id)
		delete(s.okAt, id)
		return nil
	}
	if _, ok := s.parts[id]; !ok {
		return nil // left the loop meanwhile
	}
	s.parts[id] = p
	return clonePart(p)
}

// work takes part id one round through its steps.
func (s *Service) work(ctx context.Context, id string) error {
	part := s.snapshot(id)
	if part == nil {
		return nil
	}
	if !part.Expanded && !part.Cancelled {
		if err := s.expand(ctx, part); err != nil {
			return err
		}
		if part = s.snapshot(id); part == nil {
			return nil
		}
	}
	if part.Expanded {
		// Cancelled or held too: a device job that succeeded has its
		// gate decided all the same.
		decided, err := s.gate(ctx, part)
		if err != nil {
			return err
		}
		if decided {
			if part = s.snapshot(id); part == nil {
				return nil
			}
		}
	}
	if part.Cancelled {
		if err := s.cancelAll(ctx, part); err != nil {
			return err
		}
	} else {
		if err := s.sendAll(ctx, part); err != nil {
			return err
		}
		if part = s.snapshot(id); part == nil {
			return nil
		}
		if err := s.sendControl(ctx, part); err != nil {
			return err
		}
		if part.Expanded {
			if err := s.roll(ctx, part); err != nil {
				return err
			}
		}
	}
	if part = s.snapshot(id); part == nil {
		return nil
	}
	if err := s.giveUp(ctx, part); err != nil {
		return err
	}
	prog, finished := s.count(part)
	if err := s.writeProgress(ctx, part, prog); err != nil {
		return err
	}
	if finished {
		if _, err := s.update(ctx, id, change{Finish: true}); err != nil {
			return err
		}
		s.log.Info("bulk job finished here", "bulk", id, "state", prog.State, "total", prog.Counters.Total,
			"succeeded", prog.Counters.Succeeded, "failed", prog.Counters.Failed)
	}
	return nil
}

// principal is who part's devices are called for.
func principal(part *Part) *auth.Principal {
	return &auth.Principal{User: part.User, Tenant: part.Tenant, System: part.System, Grants: part.Grants}
}

// tenants are the tenants whose devices part may select: a tenant user's
// own only (shared devices are called by system users only), a system
// user's all or the one its target names.
func tenants(part *Part, t Target) []string {
	switch {
	case !part.System:
		return []string{part.Tenant}
	case t.Tenant != "":
		return []string{t.Tenant}
	}
	return nil
}

// inScope reports whether p lies in scope (nil: everywhere).
func inScope(scope []model.Path, p model.Path) bool {
	return scope == nil || slices.ContainsFunc(scope, p.Within)
}

// searchPrefixes are the subtrees to search for t's devices within
// scope, none inside another.
func searchPrefixes(t Target, scope []model.Path) []model.Path {
	if scope == nil {
		return []model.Path{t.Prefix}
	}
	var out []model.Path
	for _, sc := range scope {
		switch {
		case sc.Within(t.Prefix):
			out = append(out, sc)
		case t.Prefix.Within(sc):
			out = append(out, t.Prefix)
		}
	}
	return model.NormalizeSubtrees(out)
}

// expand makes the device jobs of part's local devices and lists its
// links, then marks it expanded. Run again after a restart, it makes no
// job twice.
func (s *Service) expand(ctx context.Context, part *Part) error {
	t, err := ParseTarget(part.Target)
	if err != nil {
		// Checked when the part was made: a record that no longer parses
		// runs nowhere.
		s.log.Warn("bulk job: target does not parse", "bulk", part.ID, "err", err)
		none := map[string]*Link{}
		_, err = s.update(ctx, part.ID, change{Expanded: &none})
		return err
	}
	pr := principal(part)
	q := model.SearchQuery{Type: t.Type, Labels: t.Labels, Vars: t.Vars, Tenants: tenants(part, t), Limit: searchPage}
	if q.Type == "" {
		q.Type = devices.DeviceType
	}
	local := func(p model.Path) bool { return !p.Within(federation.PeersRoot) && inScope(part.Scope, p) }
	var members []Member
	seen := map[string]bool{}
	add := func(m Member) {
		if !seen[m.Device] {
			seen[m.Device] = true
			members = append(members, m)
		}
	}
	if t.Paths != nil {
		filtered := t.Type != "" || len(t.Labels) > 0 || len(t.Vars) > 0
		for _, p := range t.Paths {
			if !local(p) || !p.Within(t.Prefix) {
				continue
			}
			if filtered {
				q1 := q
				q1.Prefix, q1.Limit = p, 1
				pg, err := s.cfg.Search(ctx, q1)
				if err != nil {
					return err
				}
				if len(pg.Contexts) == 0 || pg.Contexts[0].Path != p {
					continue
				}
			}
			if err := s.select1(ctx, part, pr, p, true, add); err != nil {
				return err
			}
		}
	} else {
		prefixes, err := s.localPrefixes(searchPrefixes(t, part.Scope))
		if err != nil {
			return err
		}
		for _, prefix := range prefixes {
			q1 := q
			q1.Prefix = prefix
			for {
				pg, err := s.cfg.Search(ctx, q1)
				if err != nil {
					return err
				}
				for _, c := range pg.Contexts {
					if !local(c.Path) {
						continue
					}
					if err := s.select1(ctx, part, pr, c.Path, false, add); err != nil {
						return err
					}
				}
				if pg.Next == "" {
					break
				}
				q1.After = pg.Next
			}
		}
	}
	links := map[string]*Link{}
	if s.cfg.Links != nil {
		for _, prov := range s.cfg.Links.Providers() {
			mt, ok := t.Map(prov.Mount)
			if !ok {
				continue
			}
			sc, ok := MapScope(part.Scope, prov.Mount)
			if !ok {
				continue
			}
			links[prov.Name] = &Link{Mount: prov.Mount, Target: mt.Wire(), Scope: sc}
		}
	}
	_, err = s.update(ctx, part.ID, change{Expanded: &links, Members: members})
	return err
}

// select1 checks the device at path for part: add is given it, or its
// refusal is recorded. A context of type device that is no device's own
// is skipped when a search found it, refused when the target named it.
func (s *Service) select1(ctx context.Context, part *Part, pr *auth.Principal, path model.Path, named bool, add func(Member)) error {
	d, err := s.cfg.Calls.Check(pr, path, part.Function)
	if err != nil {
		if !named && errors.Is(err, calls.ErrNotDevice) {
			return nil
		}
		if !refusal(err) {
			return err
		}
		return s.refuse(ctx, part.ID, path, err)
	}
	add(Member{Path: d.Path, Device: d.ID})
	return nil
}

// localPrefixes replaces in prefixes the subtrees that hold the mounts
// (/ and /peers) by the subtrees beside the mounts: the devices below are
// the providers' to expand, and searching their mirrors here would only
// skip them one by one.
func (s *Service) localPrefixes(prefixes []model.Path) ([]model.Path, error) {
	var out []model.Path
	for _, p := range prefixes {
		switch {
		case !federation.PeersRoot.Within(p):
			out = append(out, p)
		case p.IsRoot():
			after := ""
			for {
				cs, err := s.cfg.Tree.Children(model.Root, after, 1000)
				if err != nil {
					return nil, err
				}
				for _, c := range cs {
					if cp, err := model.Root.Child(c.Name); err == nil && cp != federation.PeersRoot {
						out = append(out, cp)
					}
				}
				if len(cs) < 1000 {
					break
				}
				after = cs[len(cs)-1].Name
			}
		}
	}
	return out, nil
}

// dispatchMany makes the device jobs of members ms, for attempts (one
// each), in one commit, or records their refusals (each device is
// checked again: it may have been revoked since its part was expanded).
func (s *Service) dispatchMany(ctx context.Context, part *Part, pr *auth.Principal, ms []Member, attempts []int) error {
	var specs []jobs.Spec
	for i, m := range ms {
		d, err := s.cfg.Calls.Check(pr, m.Path, part.Function)
		if err != nil {
			if !refusal(err) && !errors.Is(err, calls.ErrNotDevice) {
				return err
			}
			if err := s.refuse(ctx, part.ID, m.Path, err); err != nil {
				return err
			}
			continue
		}
		jid := AttemptJobID(part.ID, d.ID, attempts[i])
		s.mu.Lock()
		_, known := s.devJob[part.ID][jid]
		s.mu.Unlock()
		if known {
			continue
		}
		specs = append(specs, jobs.Spec{
			ID: jid, Bulk: part.ID, Path: d.Path, Device: d.ID, Tenant: d.Tenant,
			Function: part.Function, Args: part.Args, By: part.CreatedBy, Deadline: part.Deadline,
		})
	}
	if len(specs) == 0 {
		return nil
	}
	made, errs, err := s.cfg.Jobs.CreateMany(ctx, specs)
	if err != nil {
		return err
	}
	states := make(map[string]apitypes.JobState, len(specs))
	for i, sp := range specs {
		switch err := errs[i]; {
		case err == nil:
			states[sp.ID] = made[i].State
			s.dispatched.Inc()
		case errors.Is(err, model.ErrConflict):
			// Made before a restart: counted from its record.
			st := jobs.Queued
			if j, err := s.cfg.Jobs.Get(sp.ID); err == nil {
				st = j.State
			}
			states[sp.ID] = st
		case errors.Is(err, model.ErrInvalid):
			if err := s.refuse(ctx, part.ID, sp.Path, err); err != nil {
				return err
			}
		default:
			return err
		}
	}
	s.mu.Lock()
	if m := s.devJob[part.ID]; m != nil {
		for id, st := range states {
			// A job may have moved on already (its answer counted by
			// the job's own update): keep the later state.
			if _, ok := m[id]; !ok {
				m[id] = st
			}
		}
	}
	s.mu.Unlock()
	return nil
}

// refusal reports whether err refuses one device for good (rather than
// failing the expansion, to be tried again).
func refusal(err error) bool {
	return errors.Is(err, model.ErrNotFound) || errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrConflict) ||
		errors.Is(err, auth.ErrForbidden) || errors.Is(err, model.ErrInvalidPath)
}

// refuse records that path gets no job, with its bulk.failure event.
func (s *Service) refuse(ctx context.Context, id string, path model.Path, cause error) error {
	s.mu.Lock()
	part := s.parts[id]
	seen := part == nil || len(part.Refused) >= maxRefused ||
		slices.ContainsFunc(part.Refused, func(r Refusal) bool { return r.Path == path })
	s.mu.Unlock()
	if seen {
		return nil
	}
	msg := cause.Error()
	payload, _ := json.Marshal(jobs.BulkFailureEvent{Path: path, State: jobs.Failed, Error: msg})
	ev := model.Mutation{Op: model.OpEvent, Path: jobs.BulkPath(id),
		Event: &model.Event{Name: jobs.BulkFailureEventName, Level: model.LevelWarning, Payload: payload}}
	_, err := s.update(ctx, id, change{Refuse: &Refusal{Path: path, Error: msg}}, ev)
	if errors.Is(err, model.ErrConflict) {
		return nil // refused already (its event with it)
	}
	return err
}

// JobFinished takes note of device job j's final state (the jobs
// service's Finished): counting the part need not read it back.
func (s *Service) JobFinished(j jobs.Job) {
	if j.Bulk == "" {
		return
	}
	s.mu.Lock()
	m := s.devJob[j.Bulk]
	if m != nil {
		if _, ok := m[j.ID]; ok {
			m[j.ID] = j.State
		}
	}
	s.mu.Unlock()
	if m != nil {
		// A place in the part's window is free: the next round need not
		// wait for the tick.
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// reportGrace is how long after a job's deadline a node waits for a
// link that took its part to report that part done (its device jobs
// expire at the deadline, so a node that can reach it reports by then).
// Past it, the link is given up: the part finishes here without it, and
// the link shows the error. Counters that arrive later still show.
const reportGrace = time.Minute

// giveUp gives up, past the deadline and reportGrace, the links that
// took part but have not reported it done.
func (s *Service) giveUp(ctx context.Context, part *Part) error {
	at := part.Deadline.Add(reportGrace)
	if part.Cancelled || s.clock().Before(at) {
		return nil
	}
	for _, name := range sortedKeys(part.Links) {
		l := part.Links[name]
		if !l.Sent || l.Error != "" {
			continue
		}
		pp, ok := s.peerProgress(l.Mount, part.ID)
		if ok && pp.Attempt >= part.Attempt && (pp.State == apitypes.BulkDone || pp.State == apitypes.BulkCancelled) {
			continue
		}
		msg := fmt.Sprintf("given up: no final report by %s (the deadline and %s)", at.UTC().Format(time.RFC3339), reportGrace)
		if _, err := s.update(ctx, part.ID, change{Link: name, Error: msg, GiveUp: true}); err != nil {
			return err
		}
		s.giveUps.Inc()
		s.log.Warn("bulk job: link given up", "bulk", part.ID, "provider", name, "deadline", part.Deadline)
	}
	return nil
}

// identity is who part is sent down for.
func identity(part *Part) Identity {
	return Identity{User: part.User, Tenant: part.Tenant, System: part.System}
}

// sendAll sends part to every link it has not reached yet.
func (s *Service) sendAll(ctx context.Context, part *Part) error {
	if s.cfg.Links == nil {
		return nil
	}
	for _, name := range sortedKeys(part.Links) {
		l := part.Links[name]
		if l.Sent || l.Error != "" {
			continue
		}
		if !s.clock().Before(part.Deadline) {
			if _, err := s.update(ctx, part.ID, change{Link: name, Error: "not sent before the deadline"}); err != nil {
				return err
			}
			continue
		}
		spec := part.Spec
		spec.Target, spec.Scope = l.Target, l.Scope
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		err := s.cfg.Links.Send(sctx, name, identity(part), Request{Action: ActionCreate, Spec: spec})
		cancel()
		switch {
		case err == nil:
			_, err = s.update(ctx, part.ID, change{Link: name, Sent: true})
			if err != nil {
				return err
			}
			s.log.Info("bulk job sent", "bulk", part.ID, "provider", name)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
			s.log.Debug("bulk job: provider unreachable, will try again", "bulk", part.ID, "provider", name, "err", err)
		default:
			msg := err.Error()
			if _, err := s.update(ctx, part.ID, change{Link: name, Error: msg}); err != nil {
				return err
			}
			s.log.Warn("bulk job refused by provider", "bulk", part.ID, "provider", name, "err", msg)
		}
	}
	return nil
}

// cancelAll cancels part's device jobs not final and sends the cancel
// to the links the job was sent to.
func (s *Service) cancelAll(ctx context.Context, part *Part) error {
	s.mu.Lock()
	var open []string
	for jid, st := range s.devJob[part.ID] {
		if !st.Final() {
			open = append(open, jid)
		}
	}
	s.mu.Unlock()
	slices.Sort(open)
	for _, jid := range open {
		j, err := s.cfg.Jobs.Cancel(ctx, jid, "bulk job "+part.ID)
		switch {
		case err == nil, errors.Is(err, model.ErrConflict), errors.Is(err, model.ErrNotFound):
		default:
			return err
		}
		if err == nil {
			s.mu.Lock()
			if m := s.devJob[part.ID]; m != nil {
				m[jid] = j.State
			}
			s.mu.Unlock()
		}
	}
	if s.cfg.Links == nil {
		return nil
	}
	for _, name := range sortedKeys(part.Links) {
		l := part.Links[name]
		if l.CancelSent || l.Error != "" {
			continue
		}
		if l.Sent {
			sctx, cancel := context.WithTimeout(ctx, sendTimeout)
			err := s.cfg.Links.Send(sctx, name, identity(part), Request{Action: ActionCancel, Spec: Spec{ID: part.ID}})
			cancel()
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
				continue
			default:
				s.log.Warn("bulk job: provider refused the cancel", "bulk", part.ID, "provider", name, "err", err)
			}
		}
		if _, err := s.update(ctx, part.ID, change{Link: name, CancelSent: true}); err != nil {
			return err
		}
	}
	return nil
}

// count returns part's progress and whether the part has nothing left
// to do here.
func (s *Service) count(part *Part) (Progress, bool) {
	s.mu.Lock()
	m := s.devJob[part.ID]
	ids := make([]string, 0, len(m))
	for jid, st := range m {
		if !st.Final() {
			ids = append(ids, jid)
		}
	}
	s.mu.Unlock()
	fresh := map[string]apitypes.JobState{}
	for _, jid := range ids {
		if st, ok := s.cfg.Jobs.State(jid); ok {
			fresh[jid] = st // not final: from memory
		} else if j, err := s.cfg.Jobs.Get(jid); err == nil {
			fresh[jid] = j.State // final (JobFinished tells of most)
		}
	}
	s.mu.Lock()
	m = s.devJob[part.ID]
	for jid, st := range fresh {
		if m != nil {
			m[jid] = st
		}
	}
	s.mu.Unlock()
	ms := s.memberStates(part)
	c := countMembers(ms, 0, len(ms))
	for range part.Refused {
		c.Count(jobs.Failed)
	}
	prog := Progress{Expanded: part.Expanded, Counters: c, Attempt: part.Attempt, Reason: part.Reason}
	if part.Expanded {
		prog.Waves = waves(part, ms)
	}
	if prog.Reason == "" {
		prog.Reason = part.Tripped
	}
	linksDone, cancelsSent := true, true
	for _, l := range part.Links {
		if l.Error != "" {
			if prog.Errors == nil {
				prog.Errors = map[string]string{}
			}
			prog.Errors[string(l.Mount)] = l.Error
			continue
		}
		if !l.CancelSent && l.Sent {
			cancelsSent = false
		}
		if !l.Sent || l.Ctl < part.Gen {
			linksDone = false
			continue
		}
		pp, ok := s.peerProgress(l.Mount, part.ID)
		if !ok || pp.Attempt < part.Attempt || (pp.State != apitypes.BulkDone && pp.State != apitypes.BulkCancelled) {
			linksDone = false
		}
	}
	r, _ := ParseRollout(part.Rollout)
	allOpen := part.Wave >= len(r.Bounds(len(ms)))-1
	retryDue := part.Rebase || slices.ContainsFunc(ms, func(m memberState) bool { return retryOf(part, m) })
	localDone := part.Expanded && allOpen && !retryDue && c.Pending == 0 && c.Finished() == c.Total
	switch {
	case part.Cancelled:
		prog.State = apitypes.BulkCancelled
		return prog, c.Finished()+c.Pending == c.Total && cancelsSent
	case localDone && linksDone:
		prog.State = apitypes.BulkDone
		return prog, true
	case part.Held():
		prog.State = apitypes.BulkPaused
		return prog, false
	}
	prog.State = apitypes.BulkRunning
	return prog, false
}

// peerProgress reads the progress of bulk job id at the node mounted at
// mount (a mounted path here) from the mirror.
func (s *Service) peerProgress(mount model.Path, id string) (Progress, bool) {
	c, err := s.cfg.Tree.Get(mount + jobs.BulkPath(id))
	if err != nil {
		return Progress{}, false
	}
	return progressOf(c)
}

func progressOf(c *model.Context) (Progress, bool) {
	v, ok := c.Variables[ProgressVar]
	if !ok {
		return Progress{}, false
	}
	var p Progress
	if json.Unmarshal(v.Value, &p) != nil {
		return Progress{}, false
	}
	return p, true
}

// writeProgress writes prog to part's context if it changed.
func (s *Service) writeProgress(ctx context.Context, part *Part, prog Progress) error {
	b, _ := json.Marshal(prog)
	s.mu.Lock()
	same := s.last[part.ID] == string(b)
	// A running part's counters are written at most every
	// progressEvery, however often its rounds run (each device job that
	// ends starts one): a change of state, always.
	soon := prog.State == apitypes.BulkRunning && s.cfg.Now().Sub(s.lastAt[part.ID]) < progressEvery
	s.mu.Unlock()
	if same || soon {
		return nil
	}
	mut, err := s.progressMutation(part, prog)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Tree.Apply(ctx, mut); err != nil {
		return fmt.Errorf("bulk: progress of %s: %w", part.ID, err)
	}
	s.mu.Lock()
	if _, ok := s.parts[part.ID]; ok {
		s.last[part.ID] = string(b)
		s.lastAt[part.ID] = s.cfg.Now()
	}
	s.mu.Unlock()
	return nil
}

// progressEvery is how often at most a running part's progress is
// written (and so sent up each link).
const progressEvery = 250 * time.Millisecond

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
