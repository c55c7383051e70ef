package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/releases"
)

// FederationStateDir is the folder beside strata.yaml where the node keeps
// its federation state (node certificates obtained by joining consumers).
const FederationStateDir = "federation"

// Interface guards.
var (
	_ federation.Local   = (*fedLocal)(nil)
	_ federation.Auditor = (*fedLocal)(nil)
	_ api.Federation     = (*federation.Service)(nil)
)

// wireFederation builds the federation service. Every node with its CA
// (tls/ca.crt and tls/ca.key, as for devices) gets one, since any node
// can publish up; the CA signs the certificates of providers joining it.
// Without a CA a node may still publish to consumers (federation.upstreams)
// but not listen.
func (n *Node) wireFederation() error {
	cfg := &n.cfg
	ca, err := certs.LoadPair(cfg.Path(cfg.MQTT.CACert), cfg.Path(cfg.MQTT.CAKey))
	switch {
	case errors.Is(err, os.ErrNotExist) && cfg.Federation.Addr != "":
		return fmt.Errorf("federation.addr needs the node's CA (%s and %s): %w", cfg.MQTT.CACert, cfg.MQTT.CAKey, err)
	case errors.Is(err, os.ErrNotExist) && len(cfg.Federation.Upstreams) == 0:
		n.log.Info("federation is off: the node has no CA", "ca_cert", cfg.MQTT.CACert, "ca_key", cfg.MQTT.CAKey)
		return nil
	case errors.Is(err, os.ErrNotExist):
		ca = nil
	case err != nil:
		return fmt.Errorf("federation: the node's CA: %w", err)
	}
	fc := federation.Config{
		Name:         cfg.Name,
		Role:         cfg.Role,
		Model:        n.model,
		Logger:       n.log,
		ListenAddr:   cfg.Federation.Addr,
		CertValidity: cfg.Federation.CertValidity.D(),
		StateDir:     filepath.Join(cfg.Dir, FederationStateDir),
		Upstreams:    upstreams(cfg.Federation),
		Local:        &fedLocal{n: n},
		KeepAlive:    cfg.Federation.KeepAlive.D(),
		IdleTimeout:  cfg.Federation.IdleTimeout.D(),
		LogBudget:    cfg.Federation.LogBudget,
		Slots:        n.work,
		// A replica's links run only while it leads (leadFederation).
		Replicated: n.cluster != nil,
	}
	if ca != nil {
		fc.CA, fc.CAKey = ca.Cert, ca.Key
	}
	if n.fed, err = federation.New(fc); err != nil {
		return err
	}
	n.reg.MustRegister(n.fed.Collector())
	return nil
}

// leaderPoll is how often a replica checks whether it leads, to start or
// stop its upstream links.
const leaderPoll = 100 * time.Millisecond

// leadFederation runs the upstream links of a replica of a cluster while
// it leads (after its barrier: its model is at the head of the log), and
// stops them when it no longer does, until the node stops. The cursors
// and credentials the links resume from are replicated records, so a new
// leader resumes each link where the consumer acknowledged.
func (n *Node) leadFederation() {
	t := time.NewTicker(leaderPoll)
	defer t.Stop()
	leading := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		now := n.cluster.IsLeader()
		if now == leading {
			continue
		}
		if err := n.fed.SetLinksActive(now); err != nil {
			n.log.Warn("federation: switching the upstream links", "leading", now, "err", err)
			continue
		}
		leading = now
		n.log.Info("federation: upstream links follow the leadership", "running", now)
	}
}

// upstreams converts the config's upstreams (validated).
func upstreams(f config.Federation) []federation.Upstream {
	out := make([]federation.Upstream, 0, len(f.Upstreams))
	for _, u := range f.Upstreams {
		pub := u.PublishPaths()
		if len(pub) > 0 && !slices.Contains(pub, jobs.BulkRoot) {
			// The progress of bulk jobs flows up whatever else is
			// published (docs/jobs.md).
			pub = append(pub, jobs.BulkRoot)
		}
		if len(pub) > 0 && !slices.Contains(pub, alerts.Root) {
			// So do alerts (docs/alerts.md).
			pub = append(pub, alerts.Root)
		}
		bw, _ := u.BandwidthBytes()  // validated
		ws, _ := u.TransferWindows() // validated
		var windows []federation.Window
		for _, w := range ws {
			windows = append(windows, federation.Window{From: w.From, To: w.To})
		}
		out = append(out, federation.Upstream{Address: u.Address, Replicas: u.Replicas, Token: u.Token, Publish: pub,
			Bandwidth: bw, Windows: windows})
	}
	return out
}

// fedAPI is the federation as the API sees it: a nil interface when off.
func (n *Node) fedAPI() api.Federation {
	if n.fed == nil {
		return nil
	}
	return n.fed
}

// reloadFederation re-reads federation.upstreams from the node's config
// file and applies them to the running links.
func (n *Node) reloadFederation(ctx context.Context) ([]federation.Upstream, error) {
	if n.fed == nil {
		return nil, errors.New("federation is off")
	}
	if n.configFile == "" {
		return nil, fmt.Errorf("%w: the node was not started from a config file", model.ErrConflict)
	}
	cfg, err := config.Load(n.configFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	ups := upstreams(cfg.Federation)
	if err := n.fed.SetUpstreams(ups); err != nil {
		return nil, err
	}
	n.log.Info("federation upstreams reloaded", "config", n.configFile, "upstreams", len(ups))
	return ups, nil
}

// compactKeep is how many change-log entries maintain keeps: the
// retention's, or more while a consumer or history (historyKeep) still
// needs them, within the federation's log budget.
func (n *Node) compactKeep() uint64 {
	return n.historyKeep(n.fedKeep())
}

// fedKeep is what compaction keeps for the consumers' cursors.
func (n *Node) fedKeep() uint64 {
	keep := n.cfg.Retention.LogEntries
	if n.fed == nil {
		return keep
	}
	floor, ok := n.fed.CompactFloor()
	last := n.model.LastSeq()
	if !ok || last <= floor {
		return keep
	}
	return max(keep, min(last-floor, n.cfg.Federation.LogBudget))
}

// fedLocal serves calls and live reads that reach this node over a link,
// as the API serves its own operators: a request is made for the operator
// of the tier where it started (Identity), who sees only its tenant. The
// link has already checked the consumer's grant. Every request is audited.
type fedLocal struct {
	n *Node
}

// Audit operations (audit.Record.Op) of requests over a link.
const (
	auditCall = "call"
	auditGet  = "get"
	auditJob  = "job"
)

// Call serves a call; its audit record is keyed by the job it created, so
// that the job's end completes it (audit.Log.JobFinished).
func (l *fedLocal) Call(ctx context.Context, consumer string, req federation.CallRequest) (federation.CallResult, error) {
	res, err := l.call(ctx, consumer, req)
	rec := fedRecord(consumer, req.Identity, auditCall, req.Path, req.Function, err, audit.OK)
	if err == nil && res.Job != "" {
		if j, gerr := l.n.jobs.Get(res.Job); gerr == nil {
			rec.Job, rec.Outcome = j.ID, audit.Pending
			if j.State.Final() {
				rec.Outcome = string(j.State)
			}
			l.n.audit.WriteCall(rec, j.Created)
			return res, err
		}
	}
	l.n.audit.Write(rec)
	return res, err
}

func (l *fedLocal) Get(ctx context.Context, consumer string, id federation.Identity, p model.Path) (*model.Context, error) {
	c, err := l.context(id, p)
	l.n.audit.Write(fedRecord(consumer, id, auditGet, p, "", err, audit.OK))
	return c, err
}

// AuditForward records a request this node passed on to a node below it.
func (l *fedLocal) AuditForward(consumer string, id federation.Identity, op string, p model.Path, function string, err error) {
	l.n.audit.Write(fedRecord(consumer, id, op, p, function, err, audit.Forwarded))
}

// context returns the context at p if id may see it; a missing context and
// one of another tenant answer alike.
func (l *fedLocal) context(id federation.Identity, p model.Path) (*model.Context, error) {
	if p.Within(federation.PeersRoot) {
		// Mounted paths are routed by the federation package itself; one
		// that reaches here names no known provider.
		return nil, fmt.Errorf("%w: context %s", model.ErrNotFound, p)
	}
	c, err := l.n.model.Get(p)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return nil, fmt.Errorf("%w: context %s", model.ErrNotFound, p)
	case err != nil:
		return nil, err
	case !id.System && c.Tenant != id.Tenant:
		return nil, fmt.Errorf("%w: context %s", model.ErrNotFound, p)
	}
	return c, nil
}

// call creates the job through the same implementation as the API's
// function calls (package calls), for the operator the request carries,
// and waits up to req.Wait for it.
func (l *fedLocal) call(ctx context.Context, consumer string, req federation.CallRequest) (federation.CallResult, error) {
	n := l.n
	if req.Path.Within(federation.PeersRoot) {
		// Mounted paths are routed by the federation package itself; one
		// that reaches here names no known provider.
		return federation.CallResult{}, fmt.Errorf("%w: context %s", model.ErrNotFound, req.Path)
	}
	by := consumer
	if req.Identity.User != "" {
		by = req.Identity.User + "@" + consumer
	}
	if req.Function == releases.InstallFunction && n.releases != nil {
		id := req.Identity
		id.Via = append(slices.Clone(id.Via), consumer)
		if _, err := l.receiveInstall(ctx, id, req.Args); err != nil {
			return federation.CallResult{}, err
		}
	}
	p := calls.FederationPrincipal(req.Identity.User, req.Identity.Tenant, req.Identity.System)
	j, err := n.calls.Call(ctx, p, calls.Request{
		Path: req.Path, Function: req.Function, Args: req.Args, By: by, Deadline: req.Deadline,
	})
	if err != nil {
		return federation.CallResult{}, err
	}
	if req.Wait > 0 && !j.State.Final() {
		// ctx ends with the link, and links end first on Shutdown.
		wctx, cancel := context.WithTimeout(ctx, req.Wait)
		cur, err := n.jobs.Wait(wctx, j.ID)
		cancel()
		if err == nil {
			j = cur
		} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			n.log.Warn("federation: cannot wait for job", "job", j.ID, "err", err)
		}
	}
	return jobResult(j), nil
}

// Job returns a job this node owns to a consumer following it; a job of
// another tenant, or of a shared device for a tenant user, answers as
// missing.
func (l *fedLocal) Job(ctx context.Context, consumer string, id federation.Identity, jobID string) (federation.CallResult, error) {
	j, err := l.n.jobs.Get(jobID)
	if err == nil && !id.System && (j.Tenant == "" || j.Tenant != id.Tenant) {
		err = fmt.Errorf("%w: job %s", model.ErrNotFound, jobID)
	}
	if err != nil {
		// The record names only what was asked: the reader's tenant
		// lists it, and the job may be another tenant's.
		rec := fedRecord(consumer, id, auditJob, "", "", err, audit.OK)
		rec.Target = jobID
		l.n.audit.Write(rec)
		return federation.CallResult{}, err
	}
	rec := fedRecord(consumer, id, auditJob, j.Path, j.Function, nil, audit.OK)
	rec.Target = jobID
	l.n.audit.Write(rec)
	return jobResult(j), nil
}

// jobResult is job j as a consumer reads it: the summary fields and the
// whole job as this node's API shows it.
func jobResult(j jobs.Job) federation.CallResult {
	res := federation.CallResult{Job: j.ID, State: string(j.State), Result: j.Result, Error: j.Error, Path: j.Path}
	if b, err := json.Marshal(j); err == nil {
		res.JobJSON = b
	}
	return res
}

// fedRecord is the audit record of a request received over a link from
// consumer for id: ok when err is nil, else the error's code.
func fedRecord(consumer string, id federation.Identity, op string, p model.Path, function string, err error, ok string) audit.Record {
	r := audit.Record{
		Consumer: consumer, User: id.User, Tenant: id.Tenant, System: id.System, Via: id.Via,
		Op: op, Path: p, Function: function, Outcome: ok,
	}
	if err != nil {
		r.Outcome, r.Error = outcomeOf(err), err.Error()
	}
	return r
}

// outcomeOf is the audit outcome of a request over a link that failed:
// the code the API answers for the same error.
func outcomeOf(err error) string {
	switch {
	case errors.Is(err, model.ErrNotFound):
		return "not_found"
	case errors.Is(err, model.ErrInvalid), errors.Is(err, model.ErrInvalidPath):
		return "invalid"
	case errors.Is(err, federation.ErrForbidden), errors.Is(err, auth.ErrForbidden), errors.Is(err, model.ErrShared):
		return "forbidden"
	case errors.Is(err, model.ErrConflict):
		return "conflict"
	case errors.Is(err, federation.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	}
	return "internal"
}
