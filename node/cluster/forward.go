package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/strata-dm/strata/model"
)

// Write forwarding. A follower's model offers every proposal to the
// cluster first (model.Forwarder): it goes to the leader over the
// replicas' channel, where the leader's model applies it as if a local
// caller had; the follower's Apply then returns once its own model has
// the entries, so a caller reads its own writes where it wrote. A
// proposal is forwarded once: the leader applies a forwarded proposal
// itself or fails it (ErrNotLeader when it no longer leads), and the
// caller retries. With no leader to forward to, or one not heard from for
// longer than the heartbeat timeout (leaderloss.go), a proposal fails
// with ErrNotLeader at once: only a leader's state machine decides, and
// a caller does better to retry than to wait on a leader that is gone.
// Errors keep their class (model.ErrNotFound and the others) across the
// hop.

var _ model.Forwarder = (*Cluster)(nil)

type forwardedKey struct{}

// Forward implements model.Forwarder.
func (c *Cluster) Forward(ctx context.Context, muts []model.Mutation) ([]model.Entry, bool, error) {
	if ctx.Value(forwardedKey{}) != nil || c.leaderReady() {
		return nil, false, nil
	}
	id, addr := c.Leader()
	if id == "" || id == c.cfg.ID {
		// No leader known, or leading but not yet caught up: the write
		// fails here, before this replica's state machine, which may be
		// behind the log, decides anything about it (a record update
		// refused on a stale record would be a wrong answer).
		return nil, true, c.notLeader()
	}
	if err := c.leaderSilent(); err != nil {
		c.metrics.forwarded.WithLabelValues("unreachable").Inc()
		return nil, true, err // leaderloss.go
	}
	data, err := model.Marshal(muts)
	if err != nil {
		return nil, true, fmt.Errorf("cluster: forward: %w", err)
	}
	resp, err := c.call(ctx, addr, rpcRequest{Op: "apply", Mutations: data})
	if err != nil {
		c.metrics.forwarded.WithLabelValues("unreachable").Inc()
		return nil, true, fmt.Errorf("%w: forward to %s at %s: %v", ErrNotLeader, id, addr, err)
	}
	if resp.Error != "" {
		c.metrics.forwarded.WithLabelValues("refused").Inc()
		return nil, true, codeError(resp.Code, resp.Error)
	}
	var es []model.Entry
	if err := model.Unmarshal(resp.Entries, &es); err != nil {
		return nil, true, fmt.Errorf("cluster: forward: bad entries from %s: %w", id, err)
	}
	c.metrics.forwarded.WithLabelValues("ok").Inc()
	return es, true, nil
}

// applier is the model a leader applies forwarded proposals with.
type applier interface {
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
}

// serveApply applies a forwarded proposal with the local model.
func (c *Cluster) serveApply(req rpcRequest) rpcResponse {
	m := c.model.Load()
	if m == nil || !c.leaderReady() {
		_, leader := c.Leader()
		return rpcResponse{Error: c.notLeader().Error(), Code: "not_leader", Leader: leader}
	}
	var muts []model.Mutation
	if err := model.Unmarshal(req.Mutations, &muts); err != nil || len(muts) == 0 {
		return rpcResponse{Error: fmt.Sprintf("cluster: bad mutations: %v", err), Code: "invalid"}
	}
	ctx, cancel := c.untilClosed(context.WithValue(context.Background(), forwardedKey{}, true))
	defer cancel()
	es, err := (*m).Apply(ctx, muts...)
	if err != nil {
		return rpcResponse{Error: err.Error(), Code: errorCode(err)}
	}
	data, err := model.Marshal(es)
	if err != nil {
		return rpcResponse{Error: err.Error()}
	}
	return rpcResponse{Entries: data}
}

// errorClasses are the sentinel errors that keep their class across a
// forwarded proposal.
var errorClasses = []struct {
	code string
	err  error
}{
	{"not_leader", ErrNotLeader},
	{"stale", ErrStale},
	{"not_found", model.ErrNotFound},
	{"invalid", model.ErrInvalid},
	{"invalid_path", model.ErrInvalidPath},
	{"conflict", model.ErrConflict},
	{"shared", model.ErrShared},
	{"closed", model.ErrClosed},
}

func errorCode(err error) string {
	for _, c := range errorClasses {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// remoteError is an error the leader returned, of the class code names.
type remoteError struct {
	msg   string
	class error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

func codeError(code, msg string) error {
	for _, c := range errorClasses {
		if c.code == code {
			return &remoteError{msg: msg, class: c.err}
		}
	}
	return errors.New(msg)
}

// modelRef holds the model Start was given.
type modelRef = atomic.Pointer[applier]
