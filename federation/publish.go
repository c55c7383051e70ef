package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/model"
)

// Sync stream tuning.
const (
	batchEntries      = 4096        // log entries read per batch
	sendWindow        = 64 << 10    // published entries sent and not yet acknowledged
	snapshotChunkSize = 512         // contexts per snapshot frame
	cursorEvery       = time.Second // how often the acknowledged cursor is stored
	// A batch with no published entry is sent only after progressIdle or
	// progressEntries skipped entries.
	progressIdle    = 10 * time.Second
	progressEntries = 100_000
)

// cursorRecord is a consumer's acknowledged cursor, kept by the provider
// so that compaction keeps what the consumer still needs across restarts.
type cursorRecord struct {
	Acked   uint64    `json:"acked"`
	LogID   string    `json:"log_id"`
	Updated time.Time `json:"updated"`
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// inflight tracks batches sent and not yet acknowledged.
type inflight struct {
	mu      sync.Mutex
	batches []sentBatch
	n       int // published entries in batches
	wake    chan struct{}
}

type sentBatch struct {
	last uint64
	n    int
}

func (f *inflight) add(last uint64, n int) {
	f.mu.Lock()
	f.batches = append(f.batches, sentBatch{last, n})
	f.n += n
	f.mu.Unlock()
}

func (f *inflight) ack(seq uint64) {
	f.mu.Lock()
	i := 0
	for i < len(f.batches) && f.batches[i].last <= seq {
		f.n -= f.batches[i].n
		i++
	}
	f.batches = f.batches[i:]
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *inflight) full() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n >= sendWindow
}

// publish streams the change log to the consumer from its cursor.
func (u *upstream) publish(conn *quic.Conn, w welcome, subtrees []model.Path) error {
	s := u.s
	ctx := conn.Context()
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer st.CancelWrite(streamCancelled)
	fw := newFrameWriter(st)
	if err := fw.write(kindSyncOpen, syncOpen{}); err != nil {
		return err
	}
	fl := &inflight{wake: make(chan struct{}, 1)}
	// The ack reader ends with this function (its read is cancelled).
	acksDone := make(chan struct{})
	defer func() {
		st.CancelRead(streamCancelled)
		<-acksDone
	}()
	go func() {
		defer close(acksDone)
		fr := newFrameReader(st, s.cfg.MaxFrame)
		for {
			k, body, err := fr.next()
			if err != nil {
				return
			}
			if k != kindAck {
				continue
			}
			var a ack
			if decode(k, body, &a) != nil {
				conn.CloseWithError(closeProtocol, "bad ack")
				return
			}
			for {
				cur := u.acked.Load()
				if a.Seq <= cur || u.acked.CompareAndSwap(cur, a.Seq) {
					break
				}
			}
			fl.ack(a.Seq)
		}
	}()
	// The cursor is stored until this stream ends, and no longer: a
	// consumer removed afterwards must not get its record back.
	cursorCtx, stopCursor := context.WithCancel(ctx)
	cursorDone := make(chan struct{})
	go func() {
		defer close(cursorDone)
		u.storeCursor(cursorCtx, w.Node)
	}()
	defer func() {
		stopCursor()
		<-cursorDone
	}()

	cursor := w.Cursor
	lastSend, lastSent := time.Time{}, cursor
	u.sentLast.Store(cursor)
	u.scanned.Store(cursor)
	// resync sends a snapshot, announcing lost history from lostFrom (0:
	// none), and continues the tail from the snapshot's sequence, or from
	// keep when the log still has everything after keep (a resync the
	// consumer asked for: replaying entries over a newer snapshot
	// converges, and no event between keep and the snapshot is lost).
	resync := func(reason string, lostFrom, keep uint64) error {
		seq, err := u.sendSnapshot(fw, subtrees, func(seq uint64) (uint64, error) {
			if lostFrom > 0 {
				if err := fw.write(kindGap, gap{From: lostFrom, To: seq, Reason: reason}); err != nil {
					return 0, err
				}
			}
			return min(keep, seq), nil
		})
		if err != nil {
			return err
		}
		fl.add(seq, 0)
		cursor = seq
		u.sentLast.Store(seq)
		u.scanned.Store(seq)
		return nil
	}
	const noKeep = math.MaxUint64
	switch {
	case w.LogID != "" && w.LogID != s.getLogID():
		if err := resync("the provider's change log was replaced", max(cursor, 1), noKeep); err != nil {
			return err
		}
	case cursor > s.model.LastSeq():
		if err := resync("the consumer is ahead of the provider's change log", cursor+1, noKeep); err != nil {
			return err
		}
	case w.Resync:
		if err := resync("", 0, cursor); err != nil {
			return err
		}
	}
	for {
		for fl.full() {
			select {
			case <-fl.wake:
			case <-ctx.Done():
				return nil
			}
		}
		es, err := s.model.ReadLogRaw(ctx, cursor, batchEntries)
		if errors.Is(err, model.ErrCompacted) {
			lost := cursor + 1
			if cursor == 0 && w.LogID == "" {
				lost = 0 // a first sync: the consumer never had that history
			}
			if err := resync("compacted past the consumer's cursor", lost, noKeep); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(es) == 0 {
			continue
		}
		// Entries go out as the store holds them: a batch of raw entries
		// encodes exactly as a batch of decoded ones. Head is the log's
		// head while there is a backlog; at the tail it is the batch's
		// last: entries appended since are either published (a batch
		// follows) or node-local (nothing the consumer lags behind).
		b := rawBatch{Last: es[len(es)-1].Seq, Head: s.model.LastSeq()}
		if len(es) < batchEntries {
			b.Head = b.Last
		}
		for i := range es {
			if es[i].Local() || !within(es[i].Path, subtrees) {
				continue
			}
			b.Entries = append(b.Entries, es[i].Raw)
		}
		cursor = b.Last
		if len(b.Entries) == 0 && time.Since(lastSend) < progressIdle && b.Last-lastSent < progressEntries {
			// Nothing published: tell the consumer where the log is only
			// now and then, so idle links stay quiet. The lag shown here
			// does not count these entries.
			u.scanned.Store(b.Last)
			continue
		}
		if err := fw.write(kindBatch, b); err != nil {
			return err
		}
		fl.add(b.Last, len(b.Entries))
		u.s.metrics.sent.WithLabelValues(w.Node).Add(float64(len(b.Entries)))
		lastSend, lastSent = time.Now(), b.Last
		u.sentLast.Store(b.Last)
		u.scanned.Store(b.Last)
	}
}

// sendSnapshot sends the published subtrees as they are now. end runs
// once the sequence the snapshot reflects is known, before the end
// marker, and returns the sequence the tail resumes after (the end
// marker's); sendSnapshot returns that.
func (u *upstream) sendSnapshot(fw *frameWriter, subtrees []model.Path, end func(seq uint64) (uint64, error)) (uint64, error) {
	s := u.s
	if err := fw.write(kindSnapshotBegin, snapshotBegin{}); err != nil {
		return 0, err
	}
	root := model.Root
	if len(subtrees) == 1 {
		root = subtrees[0]
	}
	var chunk []*model.Context
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := fw.write(kindSnapshotChunk, snapshotChunk{Contexts: chunk})
		chunk = chunk[:0]
		return err
	}
	n := 0
	seq, err := s.model.Snapshot(root, func(c *model.Context) error {
		if c.Path.IsRoot() || !within(c.Path, subtrees) {
			return nil
		}
		chunk = append(chunk, c)
		n++
		if len(chunk) == snapshotChunkSize {
			return flush()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if err := flush(); err != nil {
		return 0, err
	}
	resume, err := end(seq)
	if err != nil {
		return 0, err
	}
	if err := fw.write(kindSnapshotEnd, snapshotEnd{Seq: resume}); err != nil {
		return 0, err
	}
	s.log.Info("federation: sent a snapshot", "consumer", u.consumerName(), "contexts", n, "seq", seq, "resume", resume)
	return resume, nil
}

func (u *upstream) consumerName() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.consumer
}

// storeCursor keeps the consumer's acknowledged cursor in the store, at
// most once per cursorEvery, until ctx ends.
func (u *upstream) storeCursor(ctx context.Context, consumer string) {
	t := time.NewTicker(cursorEvery)
	defer t.Stop()
	var stored uint64 = math.MaxUint64
	for {
		a := u.acked.Load()
		if a != stored {
			put, err := putRecord(recCursor, consumer, cursorRecord{Acked: a, LogID: u.s.getLogID(), Updated: time.Now().UTC()})
			if err == nil {
				if _, err = u.s.model.Apply(u.s.ctx, put); err == nil {
					stored = a
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
