package node

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/history"
)

// wireHistory builds the history service (history.enabled); it starts
// with the node.
func (n *Node) wireHistory() error {
	h := n.cfg.History
	if !h.Enabled {
		return nil
	}
	sel := history.Selector{Labels: h.Labels}
	if !h.AllTypes() {
		sel.Types = h.Types
	}
	hc := history.Config{
		Model: n.model, Logger: n.log, Registry: n.reg, Select: sel,
		FlushInterval: h.FlushInterval.D(), ChunkSamples: h.ChunkSamples, ChunkSpan: h.ChunkSpan.D(),
		RawRetention: h.RawRetention.D(), MinuteRetention: h.MinuteRetention.D(), HourRetention: h.HourRetention.D(),
		CompactInterval: h.CompactInterval.D(), CompactBudget: h.CompactBudget, MaxPoints: h.MaxPoints,
	}
	if n.cluster != nil {
		// Singleton work: the leader follows the log and writes the
		// records every replica applies.
		hc.Leader = n.cluster.IsLeader
	}
	var err error
	if n.history, err = history.New(hc); err != nil {
		return err
	}
	return nil
}

// History exposes the history service (nil when off), for in-process
// harnesses.
func (n *Node) History() *history.Service { return n.history }

// historyKeep is how many log entries compaction keeps so that history
// can still read them: those after its cursor, within the federation log
// budget (past it, history records a gap).
func (n *Node) historyKeep(keep uint64) uint64 {
	if n.history == nil {
		return keep
	}
	cur, ok := n.history.Cursor()
	last := n.model.LastSeq()
	if !ok || last <= cur {
		return keep
	}
	return max(keep, min(last-cur, n.cfg.Federation.LogBudget))
}

// History answers a history read that reached this node over a link
// (GET /api/v1/history on a mounted path at a tier above), for the
// operator the request carries: the context must be one id may see, as
// for a live read (fedLocal.context). query is the read's parameters
// (history.Query.Values); the answer is the JSON the API sends.
func (l *fedLocal) History(ctx context.Context, consumer string, id federation.Identity, p model.Path, query []byte) ([]byte, error) {
	out, err := l.history(ctx, id, p, query)
	l.n.audit.Write(fedRecord(consumer, id, auditHistory, p, "", err, audit.OK))
	return out, err
}

const auditHistory = "history"

func (l *fedLocal) history(ctx context.Context, id federation.Identity, p model.Path, query []byte) ([]byte, error) {
	if l.n.history == nil {
		return nil, fmt.Errorf("%w: history is not enabled on this node", model.ErrNotFound)
	}
	v, err := url.ParseQuery(string(query))
	if err != nil {
		return nil, fmt.Errorf("%w: history query: %v", model.ErrInvalid, err)
	}
	q, err := history.ParseQuery(v, time.Now(), l.n.history.MaxPoints())
	if err != nil {
		return nil, err
	}
	if _, err := l.context(id, p); err != nil {
		return nil, err
	}
	ps, err := l.n.history.Read(ctx, p, q)
	if err != nil {
		return nil, err
	}
	return history.AppendJSON(nil, ps), nil
}

// historyAPI is the history service for the API (a nil interface when
// history is off).
func (n *Node) historyAPI() api.History {
	if n.history == nil {
		return nil
	}
	return n.history
}
