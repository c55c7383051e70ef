package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/bulk"
)

// Bulk jobs (docs/jobs.md, docs/api.md "Bulk jobs"): POST /api/v1/jobs
// issues one; GET /api/v1/jobs/{id}, POST /api/v1/jobs/{id}/cancel and
// GET /api/v1/jobs/{id}/failures take a bulk job's id as well as a
// device job's.
//
// Creating needs the operator role on what the target selects (its
// subtree or filter path, or each of its paths); reading the viewer
// role there. A bulk job is seen by system users and by its tenant's
// users; a system user's by system users only. The devices it runs on
// are chosen, and checked one by one, by package bulk and package calls:
// a tenant user's job selects only its tenant's devices.

// Bounds of a failure listing.
const (
	defaultFailureLimit = 100
	maxFailureLimit     = 1000
)

var errNoBulk = apiError(http.StatusNotImplemented, codeNotImplemented, "bulk jobs are not enabled on this node")

func (s *Server) bulkService() (*bulk.Service, error) {
	if s.cfg.Bulk == nil {
		return nil, errNoBulk
	}
	return s.cfg.Bulk, nil
}

// createBulkJob issues a bulk job: 202 with the job as it starts.
func (s *Server) createBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	bs, err := s.bulkService()
	if err != nil {
		return err
	}
	var nb apitypes.NewBulkJob
	if err := decodeStrict(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), &nb); err != nil {
		return err
	}
	deadline, err := checkBulkJob(&nb, time.Now())
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Function = nb.Function })
	if nb.Args, err = s.installArgs(p, nb.Function, nb.Args); err != nil {
		return err
	}
	part, err := bs.Create(r.Context(), p, nb, deadline)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = part.ID })
	v, err := bs.View(r.Context(), part.ID)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/jobs/"+part.ID)
	writeJSON(w, http.StatusAccepted, v)
	return nil
}

// checkBulkJob checks the body of POST /api/v1/jobs and returns its
// deadline (zero: the default); now is the time a ttl counts from.
// Every error wraps model.ErrInvalid.
func checkBulkJob(nb *apitypes.NewBulkJob, now time.Time) (time.Time, error) {
	if nb.Function == "" {
		return time.Time{}, invalidf("function is required")
	}
	if _, err := bulk.ParseTarget(nb.Target); err != nil {
		return time.Time{}, err
	}
	if _, err := bulk.ParseRollout(nb.Rollout); err != nil {
		return time.Time{}, err
	}
	var deadline time.Time
	switch {
	case nb.Deadline != "" && nb.TTL != "":
		return time.Time{}, invalidf("give deadline or ttl, not both")
	case nb.Deadline != "":
		t, err := time.Parse(time.RFC3339Nano, nb.Deadline)
		if err != nil {
			return time.Time{}, invalidf("deadline %q: want an RFC 3339 time", nb.Deadline)
		}
		deadline = t
	case nb.TTL != "":
		d, err := time.ParseDuration(nb.TTL)
		if err != nil || d <= 0 {
			return time.Time{}, invalidf("ttl %q: want a positive duration such as \"1h\"", nb.TTL)
		}
		deadline = now.Add(d)
	}
	return deadline, nil
}

// visibleBulk returns bulk job id's part here if p holds role on it; a
// job p may not see answers exactly like a missing one, one it may see
// but not operate is forbidden.
func (s *Server) visibleBulk(p *auth.Principal, id string, role auth.Role) (*bulk.Service, *bulk.Part, error) {
	bs, err := s.bulkService()
	if err != nil {
		return nil, nil, err
	}
	part, err := bs.Get(id)
	if err != nil {
		return nil, nil, jobNotFound(id)
	}
	if !bulk.CanSee(p, part, auth.RoleViewer) {
		return nil, nil, jobNotFound(id)
	}
	if role != auth.RoleViewer && !bulk.CanSee(p, part, role) {
		return nil, nil, forbidden("operating the bulk job on", role, model.Root)
	}
	return bs, part, nil
}

// isBulk reports whether id names a bulk job here (rather than a
// device's job).
func (s *Server) isBulk(id string) bool {
	if s.cfg.Bulk == nil || !bulk.IsID(id) {
		return false
	}
	_, err := s.cfg.Bulk.Get(id)
	return err == nil
}

func (s *Server) getBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal, id string) error {
	bs, _, err := s.visibleBulk(p, id, auth.RoleViewer)
	if err != nil {
		return err
	}
	v, err := bs.View(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) cancelBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal, id string) error {
	bs, _, err := s.visibleBulk(p, id, auth.RoleOperator)
	if err != nil {
		return err
	}
	if _, err := bs.Cancel(r.Context(), id, p.User); err != nil {
		return err
	}
	v, err := bs.View(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// bulkFailures lists a bulk job's failed devices, page by page.
func (s *Server) bulkFailures(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := r.PathValue("id")
	bs, _, err := s.visibleBulk(p, id, auth.RoleViewer)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit := defaultFailureLimit
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxFailureLimit {
			return invalidf("limit must be 1 to %d", maxFailureLimit)
		}
	}
	page, err := bs.Failures(r.Context(), id, q.Get("after"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// pauseBulkJob, resumeBulkJob and retryBulkJob control a bulk job here
// and below (docs/jobs.md "Rollouts"): the operator role on its target.
func (s *Server) pauseBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return s.controlBulkJob(w, r, p, (*bulk.Service).Pause)
}

func (s *Server) resumeBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return s.controlBulkJob(w, r, p, (*bulk.Service).Resume)
}

func (s *Server) retryBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return s.controlBulkJob(w, r, p, (*bulk.Service).Retry)
}

func (s *Server) controlBulkJob(w http.ResponseWriter, r *http.Request, p *auth.Principal,
	do func(*bulk.Service, context.Context, string, string) (*bulk.Part, error)) error {
	id := r.PathValue("id")
	if !s.isBulk(id) {
		return jobNotFound(id)
	}
	bs, _, err := s.visibleBulk(p, id, auth.RoleOperator)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = id })
	if _, err := do(bs, r.Context(), id, p.User); err != nil {
		return err
	}
	v, err := bs.View(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// listBulkJobs answers GET /api/v1/jobs?bulk=true: the bulk jobs with a
// part on this node that the caller may see (bulk.CanSee with the viewer
// role), newest first, paged by "before" like the device job listing.
// Others are left out, never refused.
func (s *Server) listBulkJobs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	bs, err := s.bulkService()
	if err != nil {
		return err
	}
	v := r.URL.Query()
	for key := range v {
		if key != "bulk" && key != "before" && key != "limit" && key != "consistent" {
			return invalidf("%s: bulk job listings take only before and limit", key)
		}
	}
	before, limit := v.Get("before"), DefaultJobLimit
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxJobLimit {
			return invalidf("limit %q: want 1 to %d", l, MaxJobLimit)
		}
		limit = n
	}
	var kept []*bulk.Part
	err = bs.List(func(part *bulk.Part) bool {
		if (before == "" || part.ID < before) && bulk.CanSee(p, part, auth.RoleViewer) {
			kept = append(kept, part)
		}
		return true
	})
	if err != nil {
		return err
	}
	// Ids are xids: their order is their creation's.
	slices.SortFunc(kept, func(a, b *bulk.Part) int { return strings.Compare(b.ID, a.ID) })
	page := apitypes.BulkJobPage{Jobs: []apitypes.BulkJobSummary{}}
	if len(kept) > limit {
		kept = kept[:limit]
		page.Next = kept[limit-1].ID
	}
	for _, part := range kept {
		bv, err := bs.View(r.Context(), part.ID)
		if err != nil {
			return err
		}
		page.Jobs = append(page.Jobs, apitypes.BulkJobSummary{
			ID: bv.ID, Bulk: true, Function: bv.Function, Tenant: bv.Tenant, State: bv.State, Reason: bv.Reason,
			Counters: bv.Counters, Created: bv.Created, CreatedBy: bv.CreatedBy, Origin: bv.Origin,
		})
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
