package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// Interface guards.
var (
	_ model.Replicated = (*PGStore)(nil)
	_ model.EventFeed  = (*PGStore)(nil)
)

// PGStore is the model.Store of a replica in PostgreSQL mode (pg.go).
// Reads go to the database through the replica's read-only store (those
// that tolerate staleness to the read replicas); Commit, on the leader
// only, writes through the fenced store and publishes the batch once it
// is committed; the batches other replicas committed are published by
// the replica's follower of the change log. LastSeq is what the model
// was last handed, so the model starts where its publishing does.
type PGStore struct{ p *pgMode }

// Attach implements model.Replicated.
func (s *PGStore) Attach(r model.Replica) {
	s.p.pubMu.Lock()
	s.p.replica = r
	s.p.pubMu.Unlock()
}

// Commit writes b to the database, fenced by the leader's term, and
// publishes it. It refuses with ErrNotLeader on a replica that is not
// the ready leader, ErrStale when b was not built on the last published
// entry, and store.ErrFenced (an ErrNotLeader) when a replica elected
// later claimed the database: nothing was written, and this replica
// stops writing.
func (s *PGStore) Commit(b *model.Batch) error {
	p := s.p
	c := p.c
	if !c.leaderReady() {
		return c.notLeader()
	}
	if len(b.Entries) == 0 {
		return nil
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	if first, last := b.Entries[0].Seq, p.published.Load(); first != last+1 {
		c.metrics.stale.Inc()
		return fmt.Errorf("%w: batch starts at %d, the log is at %d", ErrStale, first, last)
	}
	start := time.Now()
	p.committing.Add(1)
	err := p.writer.Commit(b)
	p.committing.Add(-1)
	if err != nil {
		if errors.Is(err, store.ErrFenced) {
			p.fenced(err)
			return fmt.Errorf("cluster: %w", err)
		}
		// The outcome may be unknown (the connection broke after the
		// commit was sent): publish whatever did commit, so the next
		// batch builds on it.
		if cerr := p.catchUpLocked(); cerr != nil {
			c.log.Warn("after a failed commit, reading the log", "err", cerr)
		}
		return err
	}
	p.reader.SyncReadReplicas()
	p.publishLocked(b, true)
	c.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// LastSeq is the sequence number of the last entry published to the
// model.
func (s *PGStore) LastSeq() (uint64, error) { return s.p.published.Load(), nil }

func (s *PGStore) Context(p model.Path) (*model.Context, error) { return s.p.reader.Context(p) }

func (s *PGStore) Children(p model.Path, after string, limit int) ([]model.Child, error) {
	return s.p.reader.Children(p, after, limit)
}

func (s *PGStore) Events(p model.Path, q model.EventQuery) ([]model.Event, error) {
	return s.p.reader.Events(p, q)
}

func (s *PGStore) ReadLog(after uint64, limit int) ([]model.Entry, error) {
	return s.p.reader.ReadLog(after, limit)
}

func (s *PGStore) Record(kind, key string) ([]byte, error) { return s.p.reader.Record(kind, key) }

func (s *PGStore) Records(kind string, fn func(key string, value []byte) error) error {
	return s.p.reader.Records(kind, fn)
}

func (s *PGStore) Snapshot(prefix model.Path, fn func(*model.Context) error) (uint64, error) {
	return s.p.reader.Snapshot(prefix, fn)
}

// Search searches the database (on a read replica when one fits).
func (s *PGStore) Search(ctx context.Context, q model.SearchQuery) (model.SearchPage, error) {
	return s.p.reader.Search(ctx, q)
}

// Feed implements model.EventFeed.
func (s *PGStore) Feed(ctx context.Context, q model.FeedQuery) (model.FeedPage, error) {
	return s.p.reader.Feed(ctx, q)
}

// PruneEvents prunes the shared event history, fenced: only the writer
// (the leader, where the node runs retention) gets through.
func (s *PGStore) PruneEvents(perContext int, olderThan time.Time) (int, error) {
	return s.p.writer.PruneEvents(perContext, olderThan)
}

// CompactLog compacts the shared change log, fenced like PruneEvents.
func (s *PGStore) CompactLog(keep uint64) (int, error) { return s.p.writer.CompactLog(keep) }

// ReplicaStatus reports the read replicas (metrics).
func (s *PGStore) ReplicaStatus() []store.ReplicaStatus { return s.p.reader.ReplicaStatus() }

// FenceStatus reports the writer's fence (metrics).
func (s *PGStore) FenceStatus() store.FenceStatus { return s.p.writer.FenceStatus() }

// Close is a no-op: the Cluster owns the stores and closes them.
func (s *PGStore) Close() error { return nil }
