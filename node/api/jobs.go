package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/jobs"
)

// Function calls and jobs (docs/api.md, "Jobs and function calls"). A
// call on a device context creates a job (jobs.Service), which the node
// delivers to the device over MQTT; the caller may wait for its outcome.
//
// Who may call is decided by package calls, as for calls arriving over
// federation links. The job's tenant is its device's. A job is seen by
// system users and by the users of its tenant holding the viewer role on
// its path; the jobs of shared devices by system users only. A job the
// caller may not see answers exactly like a missing one. Cancelling
// needs the operator role on its path.

// Limits of function calls and job listings.
const (
	MaxCallWait     = 5 * time.Minute
	DefaultJobLimit = 100
	MaxJobLimit     = 1000
)

var (
	errNoJobs = apiError(http.StatusNotImplemented, codeNotImplemented, "function calls are not enabled on this node")
	errNotDev = apiError(http.StatusNotImplemented, codeNotImplemented, "functions run only on the contexts of enrolled devices")
	// errSharedDevice refuses operating a device of no tenant to anyone
	// but system users.
	errSharedDevice = calls.ErrShared
)

func (s *Server) jobService() (*jobs.Service, error) {
	if s.cfg.Jobs == nil {
		return nil, errNoJobs
	}
	return s.cfg.Jobs, nil
}

// callBody is the optional body of a function call.
type callBody struct {
	Args     json.RawMessage `json:"args"`
	Wait     string          `json:"wait"`
	Deadline string          `json:"deadline"`
	TTL      string          `json:"ttl"`
}

// call is a decoded callBody.
type call struct {
	args     json.RawMessage // nil: {}
	wait     time.Duration   // 0: answer at once
	deadline time.Time       // zero: the jobs service's default
}

// decodeCall reads the optional body of a function call: no body, or
// only whitespace, is a call without arguments that does not wait.
func (s *Server) decodeCall(w http.ResponseWriter, r *http.Request) (call, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return call{}, err
		}
		return call{}, invalidf("body: %v", err)
	}
	return parseCall(data, time.Now())
}

// parseCall decodes the body of a function call; now is the time a ttl
// counts from. Every error wraps model.ErrInvalid.
func parseCall(data []byte, now time.Time) (call, error) {
	var b callBody
	if len(bytes.TrimSpace(data)) > 0 {
		if err := decodeStrict(bytes.NewReader(data), &b); err != nil {
			return call{}, err
		}
	}
	var c call
	if len(b.Args) > 0 && string(b.Args) != "null" {
		c.args = b.Args
	}
	if b.Wait != "" {
		d, err := time.ParseDuration(b.Wait)
		if err != nil || d < 0 || d > MaxCallWait {
			return call{}, invalidf("wait %q: want a duration from 0 to %v, such as \"10s\"", b.Wait, MaxCallWait)
		}
		c.wait = d
	}
	switch {
	case b.Deadline != "" && b.TTL != "":
		return call{}, invalidf("give deadline or ttl, not both")
	case b.Deadline != "":
		t, err := time.Parse(time.RFC3339Nano, b.Deadline)
		if err != nil {
			return call{}, invalidf("deadline %q: want an RFC 3339 time", b.Deadline)
		}
		c.deadline = t
	case b.TTL != "":
		d, err := time.ParseDuration(b.TTL)
		if err != nil || d <= 0 {
			return call{}, invalidf("ttl %q: want a positive duration such as \"1h\"", b.TTL)
		}
		c.deadline = now.Add(d)
	}
	return c, nil
}

// callJSON answers a function call: the job, and its id again as "job".
type callJSON struct {
	JobID string `json:"job"`
	jobs.Job
}

// calls is the one implementation of device function calls, shared with
// calls arriving over federation links (package calls).
func (s *Server) calls() (*calls.Service, error) {
	js, err := s.jobService()
	if err != nil {
		return nil, err
	}
	if s.cfg.Devices == nil {
		return nil, errNoJobs
	}
	return &calls.Service{Tree: s.model, Devices: s.cfg.Devices, Jobs: js}, nil
}

// callError gives the refusals of package calls the API's answers.
func callError(err error) error {
	if errors.Is(err, calls.ErrNotDevice) {
		return errNotDev
	}
	return err
}

// callDeviceFunction runs function name of the device context c, which
// the caller may see and operate, and which declares the function (all
// checked again by package calls). It answers 200 with the job once
// final, else 202 with its current state.
func (s *Server) callDeviceFunction(w http.ResponseWriter, r *http.Request, p *auth.Principal, c *model.Context, name string) error {
	cs, err := s.calls()
	if err != nil {
		return err
	}
	js := cs.Jobs
	if _, err := cs.Check(p, c.Path, name); err != nil {
		return callError(err)
	}
	cl, err := s.decodeCall(w, r)
	if err != nil {
		return err
	}
	if cl.args, err = s.installArgs(p, name, cl.args); err != nil {
		return err
	}
	j, err := cs.Call(r.Context(), p, calls.Request{
		Path: c.Path, Function: name, Args: cl.args, By: p.User, Deadline: cl.deadline,
	})
	if err != nil {
		return callError(err)
	}
	if cl.wait > 0 && !j.State.Final() {
		ctx, cancel := context.WithTimeout(r.Context(), cl.wait)
		stop := context.AfterFunc(s.quit, cancel) // Shutdown ends waits
		cur, err := js.Wait(ctx, j.ID)
		stop()
		cancel()
		if err != nil {
			// The job exists: answer it as created rather than hide its id.
			s.log.Warn("cannot wait for job", "job", j.ID, "err", err, "request_id", requestID(r))
		} else {
			j = cur
		}
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Job, e.outcome, e.job = j.ID, jobOutcome(j.State), &j })
	status := http.StatusOK
	if !j.State.Final() {
		status = http.StatusAccepted
		w.Header().Set("Location", "/api/v1/jobs/"+url.PathEscape(j.ID))
	}
	writeJSON(w, status, callJSON{JobID: j.ID, Job: j})
	return nil
}

// jobNotFound is the one error for a missing job and one the caller may
// not see; its text is the jobs service's.
func jobNotFound(id string) error { return fmt.Errorf("%w: job %q", model.ErrNotFound, id) }

// canSeeJob reports whether p may see job j: its tenant's users (with the
// viewer role on its path) and system users. The jobs of shared devices
// (no tenant) are seen by system users only: their arguments may hold a
// system administrator's secrets.
func canSeeJob(p *auth.Principal, j *jobs.Job) bool {
	return (p.System || (j.Tenant != "" && j.Tenant == p.Tenant)) && p.Can(auth.RoleViewer, j.Path)
}

// visibleJob returns job id if p may see it.
func (s *Server) visibleJob(p *auth.Principal, id string) (*jobs.Service, jobs.Job, error) {
	return s.visibleJobAs(p, id, false)
}

// visibleJobAs is visibleJob; stored reads the job's record rather than
// the service's view, which on a cluster follower may lag what it
// applied (a consistent read).
func (s *Server) visibleJobAs(p *auth.Principal, id string, stored bool) (*jobs.Service, jobs.Job, error) {
	js, err := s.jobService()
	if err != nil {
		return nil, jobs.Job{}, err
	}
	get := js.Get
	if stored {
		get = js.Stored
	}
	j, err := get(id)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return nil, jobs.Job{}, jobNotFound(id)
	case err != nil:
		return nil, jobs.Job{}, err
	case !canSeeJob(p, &j):
		return nil, jobs.Job{}, jobNotFound(id)
	}
	return js, j, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if node := r.URL.Query().Get("node"); node != "" {
		return s.getRemoteJob(w, r, p, r.PathValue("id"), node)
	}
	if id := r.PathValue("id"); s.isBulk(id) {
		return s.getBulkJob(w, r, p, id)
	}
	_, j, err := s.visibleJobAs(p, r.PathValue("id"), consistentRequested(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// cancelJob cancels a job not yet final (409 once it is).
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := r.PathValue("id")
	if s.isBulk(id) {
		return s.cancelBulkJob(w, r, p, id)
	}
	js, j, err := s.visibleJob(p, id)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleOperator, j.Path) {
		return forbidden("cancelling jobs of", auth.RoleOperator, j.Path)
	}
	if !p.System && j.Tenant == "" {
		return errSharedDevice
	}
	j, err = js.Cancel(r.Context(), id, p.User)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// jobQuery selects jobs of a listing.
type jobQuery struct {
	path   model.Path
	device string
	state  jobs.State
	limit  int
	before string // only jobs with a smaller id (created earlier)
}

func parseJobQuery(v url.Values) (jobQuery, error) {
	q := jobQuery{path: model.Root, device: v.Get("device"), before: v.Get("before"), limit: DefaultJobLimit}
	if s := v.Get("path"); s != "" {
		p, err := model.ParsePath(s)
		if err != nil {
			return q, err
		}
		q.path = p
	}
	if s := v.Get("state"); s != "" {
		st := jobs.State(s)
		if !slices.Contains([]jobs.State{jobs.Queued, jobs.Delivered, jobs.Running, jobs.Succeeded,
			jobs.Failed, jobs.Expired, jobs.Cancelled}, st) {
			return q, invalidf("state %q: want queued, delivered, running, succeeded, failed, expired or cancelled", s)
		}
		q.state = st
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxJobLimit {
			return q, invalidf("limit %q: want 1 to %d", s, MaxJobLimit)
		}
		q.limit = n
	}
	return q, nil
}

func (q *jobQuery) match(p *auth.Principal, j *jobs.Job) bool {
	return j.Path.Within(q.path) && (q.device == "" || j.Device == q.device) &&
		(q.state == "" || j.State == q.state) && (q.before == "" || j.ID < q.before) && canSeeJob(p, j)
}

// jobPage is one page of a job listing, newest first; next, when set, is
// the "before" of the following page.
type jobPage = apitypes.JobPageOf[model.Path]

// listJobs lists the jobs the caller may see, newest first. Jobs it may
// not see are left out, never refused.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	switch b := r.URL.Query().Get("bulk"); b {
	case "", "false":
	case "true":
		return s.listBulkJobs(w, r, p)
	default:
		return invalidf("bulk %q: want true or false", b)
	}
	js, err := s.jobService()
	if err != nil {
		return err
	}
	q, err := parseJobQuery(r.URL.Query())
	if err != nil {
		return err
	}
	// The store yields jobs oldest first: keep the newest q.limit+1 seen.
	var kept []jobs.Job
	err = js.List(func(j jobs.Job) bool {
		if q.match(p, &j) {
			kept = append(kept, j)
			if len(kept) > 2*(q.limit+1) {
				kept = append(kept[:0], kept[len(kept)-(q.limit+1):]...)
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	more := len(kept) > q.limit
	if more {
		kept = kept[len(kept)-q.limit:]
	}
	slices.Reverse(kept)
	page := jobPage{Jobs: kept}
	if page.Jobs == nil {
		page.Jobs = []jobs.Job{}
	}
	if more {
		page.Next = kept[len(kept)-1].ID
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
