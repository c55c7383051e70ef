package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/jobs"
)

// The audit trail of the API (docs/api.md, "Audit trail"). Every
// authenticated request on a state-changing route (auditOps) is recorded
// once it is answered: who (user, tenant), what (operation, path, target)
// and the outcome ("ok", or the error code answered, so refusals are
// recorded too). Handlers add what only they know (the name of a user
// created, a call's job) with noteAudit. A call's record is keyed by its
// job and completed with the job's final state when it ends (package
// audit). Requests that fail authentication name nobody and are not
// recorded (strata_api_requests_total counts them).

// auditOps names the operation of every state-changing authenticated
// route, by ServeMux pattern. A test holds that no such route is missing.
var auditOps = map[string]string{
	"PUT /api/v1/contexts/{path...}":                           "context.put",
	"DELETE /api/v1/contexts/{path...}":                        "context.delete",
	"POST /api/v1/contexts/{path...}":                          "call",
	"POST /api/v1/events/{path...}":                            "event.post",
	"POST /api/v1/users":                                       "user.create",
	"PATCH /api/v1/users/{name}":                               "user.update",
	"DELETE /api/v1/users/{name}":                              "user.delete",
	"POST /api/v1/tokens":                                      "token.create",
	"DELETE /api/v1/tokens/{id}":                               "token.revoke",
	"POST /api/v1/enrollment-tokens":                           "enrollment_token.create",
	"DELETE /api/v1/enrollment-tokens/{id}":                    "enrollment_token.revoke",
	"POST /api/v1/devices/{id}/revoke":                         "device.revoke",
	"POST /api/v1/devices/{id}/allow-enroll":                   "device.allow_enroll",
	"POST /api/v1/jobs":                                        "bulk.create",
	"POST /api/v1/jobs/{id}/cancel":                            "job.cancel",
	"POST /api/v1/jobs/{id}/pause":                             "bulk.pause",
	"POST /api/v1/jobs/{id}/resume":                            "bulk.resume",
	"POST /api/v1/jobs/{id}/retry":                             "bulk.retry",
	"POST /api/v1/peer-tokens":                                 "peer_token.create",
	"POST /api/v1/peers/{name}/revoke":                         "peer.revoke",
	"POST /api/v1/federation/verify":                           "federation.verify",
	"POST /api/v1/federation/reload":                           "federation.reload",
	"POST /api/v1/cluster/transfer-leader":                     "cluster.transfer_leader",
	"DELETE /api/v1/cluster/members/{id}":                      "cluster.remove",
	"PUT /api/v1/releases/{name}/{version}":                    "release.put",
	"DELETE /api/v1/releases/{name}/{version}":                 "release.delete",
	"PUT /api/v1/releases/{name}/{version}/artifacts/{sha256}": "artifact.upload",
	"POST /api/v1/releases/{name}/{version}/stage":             "release.stage",
	"POST /api/v1/backup":                                      "backup",
	"POST /api/v1/alert-rules":                                 "alert_rule.create",
	"DELETE /api/v1/alert-rules/{id}":                          "alert_rule.delete",
	"POST /api/v1/alerts/{path...}":                            "alert.action",
}

// opLogin records a successful login (a new session token). Failed
// logins name nobody reliably and are limited and counted instead.
const opLogin = "login"

// auditEntry is the record of one request being built.
type auditEntry struct {
	rec audit.Record
	// outcome replaces "ok" for a request that succeeded (a call's job
	// state, "forwarded").
	outcome string
	// job is set for a call that created a job on this node: the record
	// is keyed by it.
	job *jobs.Job
}

type auditKey struct{}

// noteAudit lets a handler add to its request's audit record; a no-op on
// routes that are not audited.
func noteAudit(r *http.Request, fn func(*auditEntry)) {
	if e, ok := r.Context().Value(auditKey{}).(*auditEntry); ok {
		fn(e)
	}
}

// startAudit prepares the record of r if its route is audited.
func (s *Server) startAudit(r *http.Request, p *auth.Principal) (*http.Request, *auditEntry) {
	op, ok := auditOps[r.Pattern]
	if !ok {
		return r, nil
	}
	e := &auditEntry{rec: audit.Record{
		Op: op, User: p.User, Tenant: p.Tenant, System: p.System, RequestID: requestID(r),
	}}
	e.rec.Path, e.rec.Function = auditPath(r)
	for _, k := range []string{"name", "id"} {
		if v := r.PathValue(k); v != "" {
			e.rec.Target = clip(v, 256)
		}
	}
	return r.WithContext(context.WithValue(r.Context(), auditKey{}, e)), e
}

// auditPath is the context path (and function) a request names, as far
// as it parses.
func auditPath(r *http.Request) (model.Path, string) {
	esc := r.URL.EscapedPath()
	prefix := contextsPrefix
	if strings.HasPrefix(esc, eventsPrefix+"/") {
		prefix = eventsPrefix
	} else if !strings.HasPrefix(esc, contextsPrefix+"/") {
		return "", ""
	}
	segs, err := pathSegments(esc, prefix)
	if err != nil {
		return "", ""
	}
	var function string
	if n := len(segs); r.Method == http.MethodPost && prefix == contextsPrefix && n >= 2 && segs[n-2] == "functions" {
		function, segs = segs[n-1], segs[:n-2]
	}
	p, err := joinPath(segs)
	if err != nil {
		return "", function
	}
	return p, function
}

// finishAudit writes the record of a request answered with err (nil: a
// success).
func (s *Server) finishAudit(r *http.Request, e *auditEntry, err error) {
	switch {
	case err != nil:
		status, code := errorStatus(err)
		e.rec.Outcome = code
		e.rec.Error = err.Error()
		if status == http.StatusInternalServerError {
			e.rec.Error = "internal error, request id " + requestID(r)
		}
		e.rec.Error = clip(e.rec.Error, 512)
	case e.outcome != "":
		e.rec.Outcome = e.outcome
	default:
		e.rec.Outcome = audit.OK
	}
	if e.job != nil && err == nil {
		s.audit.WriteCall(e.rec, e.job.Created)
		return
	}
	s.audit.Write(e.rec)
}

// jobOutcome is a call's outcome from its job's state.
func jobOutcome(st jobs.State) string {
	if st.Final() {
		return string(st)
	}
	return audit.Pending
}

// remoteOutcome is the outcome of a call passed on to the node below:
// the job's state when it was final within the wait, else "forwarded"
// (the owning node's trail follows the job to its end).
func remoteOutcome(state string) string {
	if jobs.State(state).Final() {
		return state
	}
	return audit.Forwarded
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Limits of the audit listing.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 10000
)

// listAudit answers the newest audit records first: all of them to
// system administrators, those of its tenant to a tenant administrator
// (admin on /), and 403 to anyone else.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var keep func(*audit.Record) bool
	switch {
	case p.System:
	case p.Tenant != "" && p.Can(auth.RoleAdmin, model.Root):
		keep = func(a *audit.Record) bool { return !a.System && a.Tenant == p.Tenant }
	default:
		return forbidden("reading the audit trail of", auth.RoleAdmin, model.Root)
	}
	limit := DefaultAuditLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return invalidf("limit %q: want 1 to %d", v, MaxAuditLimit)
		}
		limit = n
	}
	recs, err := s.audit.List(r.Context(), limit, keep)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Records []audit.Record `json:"records"`
	}{recs})
	return nil
}

// auditLogin records a successful login.
func (s *Server) auditLogin(r *http.Request, u auth.User, tokenID string) {
	s.audit.Write(audit.Record{
		Time: time.Now().UTC(), Op: opLogin, User: u.Name, Tenant: u.Tenant, System: u.System,
		Target: tokenID, Outcome: audit.OK, RequestID: requestID(r),
	})
}
