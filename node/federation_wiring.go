package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
)

// FederationStateDir is the folder beside strata.yaml where the node keeps
// its federation state (node certificates obtained by joining consumers).
const FederationStateDir = "federation"

// auditTimeout bounds writing one audit record; it is written even when
// the request it records was cancelled.
const auditTimeout = 10 * time.Second

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

// upstreams converts the config's upstreams (validated).
func upstreams(f config.Federation) []federation.Upstream {
	out := make([]federation.Upstream, 0, len(f.Upstreams))
	for _, u := range f.Upstreams {
		out = append(out, federation.Upstream{Address: u.Address, Token: u.Token, Publish: u.PublishPaths()})
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
// retention's, or more while a consumer still needs them, within the
// federation's log budget.
func (n *Node) compactKeep() uint64 {
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

// pruneAudit drops audit records older than cutoff (keys are in time
// order) and reports how many went.
func (n *Node) pruneAudit(ctx context.Context, cutoff time.Time) (int, error) {
	limit := auditKey(cutoff, 0)
	var old []string
	err := n.model.Records(api.AuditKind, func(key string, _ []byte) error {
		if key >= limit {
			return errStopRecords
		}
		old = append(old, key)
		return nil
	})
	if err != nil && !errors.Is(err, errStopRecords) {
		return 0, err
	}
	for chunk := range slices.Chunk(old, 500) {
		muts := make([]model.Mutation, len(chunk))
		for i, k := range chunk {
			muts[i] = model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: api.AuditKind, Key: k}}
		}
		if _, err := n.model.Apply(ctx, muts...); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}

var errStopRecords = errors.New("stop")

// auditKey orders audit records by time, then by seq within a process.
func auditKey(t time.Time, seq uint64) string {
	return fmt.Sprintf("%020d-%010d", t.UnixNano(), seq)
}

// fedLocal serves calls and live reads that reach this node over a link,
// as the API serves its own operators: a request is made for the operator
// of the tier where it started (Identity), who sees only its tenant. The
// link has already checked the consumer's grant. Every request is audited.
type fedLocal struct {
	n   *Node
	seq atomic.Uint64
}

// Audit operations (AuditRecord.Op).
const (
	auditCall = "call"
	auditGet  = "get"
	auditJob  = "job"
)

func (l *fedLocal) Call(ctx context.Context, consumer string, req federation.CallRequest) (federation.CallResult, error) {
	res, err := l.call(ctx, consumer, req)
	l.audit(consumer, req.Identity, auditCall, req.Path, req.Function, outcome(err, "ok"))
	return res, err
}

func (l *fedLocal) Get(ctx context.Context, consumer string, id federation.Identity, p model.Path) (*model.Context, error) {
	c, err := l.context(id, p)
	l.audit(consumer, id, auditGet, p, "", outcome(err, "ok"))
	return c, err
}

// AuditForward records a request this node passed on to a node below it.
func (l *fedLocal) AuditForward(consumer string, id federation.Identity, op string, p model.Path, function string, err error) {
	l.audit(consumer, id, op, p, function, outcome(err, "forwarded"))
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
	return federation.CallResult{Job: j.ID, State: string(j.State), Result: j.Result, Error: j.Error}, nil
}

// Job returns a job this node owns to a consumer following it; a job of
// another tenant, or of a shared device for a tenant user, answers as
// missing.
func (l *fedLocal) Job(ctx context.Context, consumer string, id federation.Identity, jobID string) (federation.CallResult, error) {
	j, err := l.n.jobs.Get(jobID)
	if err == nil && !id.System && (j.Tenant == "" || j.Tenant != id.Tenant) {
		err = fmt.Errorf("%w: job %s", model.ErrNotFound, jobID)
	}
	l.audit(consumer, id, auditJob, j.Path, j.Function, outcome(err, "ok"))
	if err != nil {
		return federation.CallResult{}, err
	}
	return federation.CallResult{Job: j.ID, State: string(j.State), Result: j.Result, Error: j.Error, Path: j.Path}, nil
}

func outcome(err error, ok string) string {
	if err == nil {
		return ok
	}
	return err.Error()
}

// audit records one request received over a link. A failure to record is
// logged, never answered: the request itself was served.
func (l *fedLocal) audit(consumer string, id federation.Identity, op string, p model.Path, function, outcome string) {
	now := time.Now().UTC()
	rec := api.AuditRecord{
		Time: now, Consumer: consumer, User: id.User, Tenant: id.Tenant, Via: id.Via,
		Op: op, Path: p, Function: function, Outcome: outcome,
	}
	data, err := json.Marshal(rec)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
		err = l.n.model.PutRecord(ctx, api.AuditKind, auditKey(now, l.seq.Add(1)), data)
		cancel()
	}
	if err != nil {
		l.n.log.Warn("federation: audit record not written", "consumer", consumer, "op", op, "path", p, "err", err)
	}
}
