package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// Retention as replicated operations. Pruning the event history and
// compacting the change log change what a replica holds, so they go
// through the Raft log like any write, decided by the leader (node's
// retention runs there only) and applied by every replica to the same
// state at the same place in the log, so all hold the same events and the
// same change log:
//
//   - event pruning: the leader finds, in its own store and off the log's
//     path, the events beyond the count or older than the cutoff (its
//     clock's), and proposes them by name, pruneChunk to an entry; every
//     replica deletes exactly those it holds, so a replica's clock or
//     the moment it applies changes nothing, and the scan never holds up
//     the log;
//   - compaction: the leader proposes the sequence number the change log
//     is compacted to.
//
// Each entry's index is stored with what it deleted, as a batch's is; a
// snapshot carries the result like any other key.

const (
	// pruneChunk bounds the events named in one prune entry.
	pruneChunk = 2048
	// prunePerPass bounds the events one retention pass prunes (a pass
	// runs every minute; a larger backlog goes over several).
	prunePerPass = 64 * pruneChunk
)

// wirePrune is the body of an entryPrune log entry: the events to delete,
// and the rule the leader chose them by (for the record).
type wirePrune struct {
	PerContext int            `cbor:"1,keyasint"`
	OlderThan  int64          `cbor:"2,keyasint"` // Unix nanoseconds
	Events     []wireEventRef `cbor:"3,keyasint"`
}

type wireEventRef struct {
	Path model.Path `cbor:"1,keyasint"`
	Seq  uint64     `cbor:"2,keyasint"`
}

// wireCompact is the body of an entryCompact log entry.
type wireCompact struct {
	UpTo uint64 `cbor:"1,keyasint"` // the last sequence number dropped
}

func encodePrune(perContext int, olderThan time.Time, refs []store.EventRef) ([]byte, error) {
	w := wirePrune{PerContext: perContext, OlderThan: olderThan.UnixNano(), Events: make([]wireEventRef, len(refs))}
	for i, r := range refs {
		w.Events[i] = wireEventRef{Path: r.Path, Seq: r.Seq}
	}
	body, err := model.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode prune: %w", err)
	}
	return append([]byte{entryPrune}, body...), nil
}

// decodePrune decodes the body of an entryPrune entry and checks that it
// names at most pruneChunk events, each by a valid path and a sequence
// number.
func decodePrune(body []byte) ([]store.EventRef, error) {
	var w wirePrune
	if err := model.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: prune: %v", ErrBadEntry, err)
	}
	if len(w.Events) > pruneChunk {
		return nil, fmt.Errorf("%w: prune of %d events, more than %d", ErrBadEntry, len(w.Events), pruneChunk)
	}
	refs := make([]store.EventRef, len(w.Events))
	for i, e := range w.Events {
		if p, err := model.ParsePath(string(e.Path)); err != nil || p != e.Path || e.Seq == 0 {
			return nil, fmt.Errorf("%w: prune of event %q %d", ErrBadEntry, e.Path, e.Seq)
		}
		refs[i] = store.EventRef{Path: e.Path, Seq: e.Seq}
	}
	return refs, nil
}

func encodeCompact(upTo uint64) ([]byte, error) {
	body, err := model.Marshal(&wireCompact{UpTo: upTo})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode compaction: %w", err)
	}
	return append([]byte{entryCompact}, body...), nil
}

func decodeCompact(body []byte) (wireCompact, error) {
	var w wireCompact
	if err := model.Unmarshal(body, &w); err != nil {
		return w, fmt.Errorf("%w: compaction: %v", ErrBadEntry, err)
	}
	return w, nil
}

// retentionResult is what the state machine returns for a retention
// entry it applied (how many events or entries went; an entry it could
// not apply returns the error): the leader's proposal reads it from the
// entry's future.
type retentionResult struct{ n int }

// PruneEvents drops the events beyond perContext per context or older
// than olderThan, on every replica: on the leader it finds them in its
// store (at most prunePerPass) and proposes them, pruneChunk to an entry,
// returning once each is committed by a quorum and applied here, with how
// many events went. Elsewhere it is ErrNotLeader.
func (s *Store) PruneEvents(perContext int, olderThan time.Time) (int, error) {
	if !s.c.leaderReady() {
		return 0, s.c.notLeader()
	}
	s.mu.RLock()
	refs, err := s.db.EventsToPrune(perContext, olderThan, prunePerPass)
	s.mu.RUnlock()
	if err != nil {
		return 0, err
	}
	total := 0
	for len(refs) > 0 {
		chunk := refs[:min(pruneChunk, len(refs))]
		refs = refs[len(chunk):]
		data, err := encodePrune(perContext, olderThan, chunk)
		if err != nil {
			return total, err
		}
		n, err := s.proposeRetention(data)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// CompactLog drops change-log entries so that at most keep remain, on
// every replica: the leader decides the sequence number the log is
// compacted to, proposes it and returns once it is applied here, with how
// many entries went. Elsewhere it is ErrNotLeader.
func (s *Store) CompactLog(keep uint64) (int, error) {
	if !s.c.leaderReady() {
		return 0, s.c.notLeader()
	}
	last, err := s.LastSeq()
	if err != nil || last <= keep {
		return 0, err
	}
	data, err := encodeCompact(last - keep)
	if err != nil {
		return 0, err
	}
	return s.proposeRetention(data)
}

func (s *Store) proposeRetention(data []byte) (int, error) {
	r := s.c.raft()
	if r == nil || !s.c.leaderReady() {
		return 0, s.c.notLeader()
	}
	f := r.Apply(data, s.c.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrRaftShutdown) {
			// A new leader may still commit the entry; every replica
			// then applies it. Retention runs again on its next pass.
			return 0, fmt.Errorf("%w: %v", s.c.notLeader(), err)
		}
		return 0, fmt.Errorf("cluster: retention: %w", err)
	}
	switch res := f.Response().(type) {
	case retentionResult:
		return res.n, nil
	case error:
		return 0, res
	}
	return 0, nil
}

// applyRetention applies a log entry that is not a batch: a retention
// operation, or a kind this binary does not know (which stops the
// replica, as an undecodable entry does: skipping it would fork the
// replica from the others).
func (f *fsm) applyRetention(l *raft.Log) any {
	if f.broken != nil {
		return f.broken
	}
	var n int
	var err error
	switch l.Data[0] {
	case entryPrune:
		var refs []store.EventRef
		if refs, err = decodePrune(l.Data[1:]); err != nil {
			f.c.log.Error("log entry does not decode", "index", l.Index, "err", err)
			return f.fail(err)
		}
		n, err = f.s.db.DeleteEventsApplied(refs, l.Index)
	case entryCompact:
		var w wireCompact
		if w, err = decodeCompact(l.Data[1:]); err != nil {
			f.c.log.Error("log entry does not decode", "index", l.Index, "err", err)
			return f.fail(err)
		}
		n, err = f.s.db.CompactLogApplied(w.UpTo, l.Index)
	default:
		f.c.log.Error("log entry of an unknown kind: this replica runs an older binary than the leader", "index", l.Index, "kind", l.Data[0])
		return f.fail(fmt.Errorf("%w %d at index %d", ErrUnknownEntry, l.Data[0], l.Index))
	}
	if err != nil {
		f.c.log.Error("the local store failed to apply a committed retention entry; the replica stops applying", "index", l.Index, "err", err)
		return f.fail(err)
	}
	f.applied = l.Index
	f.c.setApplied(l.Index)
	return retentionResult{n: n}
}
