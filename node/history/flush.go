package history

import (
	"context"
	"time"

	"github.com/strata-dm/strata/model"
)

// Flushing: heads become raw chunk records; a flush of every head also
// writes the cursor record (docs/history.md, "From the change log").

// finalFlush is the flush of a clean stop (skipped by a simulated crash).
func (s *Service) finalFlush() {
	if !s.crash {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.flushAll(ctx)
	}
}

// flushAll writes every dirty head and then the cursor.
func (s *Service) flushAll(ctx context.Context) {
	s.mu.Lock()
	if !s.loaded {
		s.mu.Unlock()
		return
	}
	list := make([]*series, 0, len(s.dirty))
	for _, sr := range s.dirty {
		list = append(list, sr)
	}
	// Heads already written but open are closed once idle.
	idle := s.cfg.Now().Add(-s.cfg.ChunkSpan).UnixMilli()
	for _, sr := range s.series {
		if h := sr.head; h != nil && h.written && h.last < idle {
			list = append(list, sr)
		}
	}
	s.mu.Unlock()
	s.flush(ctx, list, true)
}

// flush writes the heads of list (and, when all, the cursor with the
// last proposal: then every sample read is in a record). Full heads are
// closed: the series starts a new chunk with its next sample.
func (s *Service) flush(ctx context.Context, list []*series, all bool) {
	s.mu.Lock()
	cursor := s.cursor
	s.mu.Unlock()
	// Heads change only on this goroutine, so they are read without mu.
	var muts []model.Mutation
	var done []*series
	var bytes int
	commit := func(last bool) bool {
		if last && all {
			var grow int64
			for _, sr := range done {
				grow += sr.pendingBytes()
			}
			s.mu.Lock()
			total := s.bytes + grow
			s.mu.Unlock()
			muts = append(muts, model.Mutation{Op: model.OpPutRecord,
				Record: &model.Record{Kind: KindCursor, Key: cursorKey, Value: marshal(&cursorRec{Seq: cursor, Bytes: total})}})
		}
		if len(muts) == 0 {
			return true
		}
		if !s.cfg.Leader() {
			// A replica that lost the lead writes nothing more: the new
			// leader replays from the cursor record.
			return false
		}
		if _, err := s.model.Apply(ctx, muts...); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("history: flush failed; the samples stay in memory and in the log", "err", err)
			}
			return false
		}
		s.mu.Lock()
		for _, sr := range done {
			s.bytes += sr.flushed()
			if sr.head == nil || sr.head.written {
				delete(s.dirty, sr.id)
			}
		}
		s.metrics.stored.Set(float64(s.bytes))
		s.mu.Unlock()
		s.metrics.chunks.Add(float64(len(done)))
		s.metrics.bytes.Add(float64(bytes))
		muts, done, bytes = muts[:0], done[:0], 0
		return true
	}
	idle := s.cfg.Now().Add(-s.cfg.ChunkSpan).UnixMilli()
	for _, sr := range list {
		ms, b := sr.flushMutations(idle)
		if len(ms) == 0 {
			continue
		}
		muts = append(muts, ms...)
		done = append(done, sr)
		bytes += b
		if len(muts) >= maxFlushMutations {
			if !commit(false) {
				return
			}
		}
	}
	if !commit(true) {
		return
	}
	if all {
		s.mu.Lock()
		s.stored = cursor
		s.mu.Unlock()
	}
}
