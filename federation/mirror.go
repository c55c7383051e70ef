package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/model"
)

// progressEvery bounds how often a batch that carries no published entry
// (only a cursor move) is committed.
const progressEvery = time.Second

// foldEntries bounds the entries of queued batches folded into one commit.
const foldEntries = 8192

// syncFrame is a decoded frame of the sync stream.
type syncFrame struct {
	kind kind
	body []byte
}

// sync accepts the provider's sync stream and applies it to the mirror
// until the connection ends. Frames are read ahead while a batch is
// applied, so decoding overlaps the commit.
//
// Once the sync stream is accepted, the streams the provider opens after
// it are fetches (artifacts.go), answered until the connection ends, by
// goroutines counted in fetches.
func (m *mount) sync(conn *quic.Conn, provLogID string, fetches *sync.WaitGroup) error {
	s := m.s
	ctx, cancel := context.WithTimeout(conn.Context(), handshakeTimeout)
	st, err := conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("no sync stream: %w", err)
	}
	fetches.Add(1)
	go func() {
		defer fetches.Done()
		m.serveFetches(conn)
	}()
	defer st.CancelRead(streamCancelled)
	fr, fw := newFrameReader(st, s.cfg.MaxFrame), newFrameWriter(st)
	if k, _, err := fr.next(); err != nil || k != kindSyncOpen {
		return fmt.Errorf("sync stream: first frame %d: %v", k, err)
	}
	frames := make(chan syncFrame, 64)
	readErr := make(chan error, 1)
	// The reader ends with this function: its read is cancelled and it
	// stops handing frames over.
	quit, readDone := make(chan struct{}), make(chan struct{})
	defer func() {
		close(quit)
		st.CancelRead(streamCancelled)
		<-readDone
	}()
	go func() {
		defer close(readDone)
		defer close(frames)
		for {
			k, body, err := fr.next()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- syncFrame{k, body}:
			case <-quit:
				readErr <- errors.New("sync stream closed")
				return
			case <-conn.Context().Done():
				readErr <- conn.Context().Err()
				return
			}
		}
	}()
	var snap *snapshotState
	var pending *syncFrame
	for {
		var f syncFrame
		if pending != nil {
			f, pending = *pending, nil
		} else {
			var ok bool
			if f, ok = <-frames; !ok {
				break
			}
		}
		var ackSeq uint64
		switch f.kind {
		case kindBatch:
			if snap != nil {
				return errors.New("protocol: batch inside a snapshot")
			}
			next, seq, err := m.syncBatch(f, frames, provLogID)
			if err != nil {
				return err
			}
			pending, ackSeq = next, seq
		case kindSnapshotBegin:
			snap = &snapshotState{seen: map[model.Path]bool{}}
			s.log.Info("federation: receiving a snapshot", "peer", m.name)
		case kindSnapshotChunk:
			if snap == nil {
				return errors.New("protocol: snapshot chunk outside a snapshot")
			}
			if err := m.syncChunk(f, snap); err != nil {
				return err
			}
		case kindSnapshotEnd:
			var e snapshotEnd
			if err := decode(f.kind, f.body, &e); err != nil {
				return err
			}
			if snap == nil {
				return errors.New("protocol: snapshot end outside a snapshot")
			}
			if err := m.finishSnapshot(snap, e.Seq, provLogID); err != nil {
				return err
			}
			s.log.Info("federation: snapshot applied", "peer", m.name, "contexts", len(snap.seen), "seq", e.Seq)
			snap = nil
			ackSeq = e.Seq
		case kindGap:
			var g gap
			if err := decode(f.kind, f.body, &g); err != nil {
				return err
			}
			if err := m.recordGap(g); err != nil {
				return err
			}
		default:
			// Unknown messages from a newer provider are ignored.
			continue
		}
		if ackSeq > 0 {
			if err := fw.write(kindAck, ack{Seq: ackSeq}); err != nil {
				return err
			}
		}
	}
	err = <-readErr
	if errors.Is(err, io.EOF) || conn.Context().Err() != nil {
		return nil
	}
	return err
}

// syncBatch decodes batch frame f, folds into it the batches already
// waiting in frames (under load the mirror commits as often as its store
// can, not once per frame), and applies them; it returns the frame of
// another kind it read, if any, and the sequence to acknowledge (0:
// none). Decoding and translating the entries hold a device-work slot
// (Config.Slots); the commit does not.
func (m *mount) syncBatch(f syncFrame, frames <-chan syncFrame, provLogID string) (*syncFrame, uint64, error) {
	release := m.s.work()
	defer release()
	var b batch
	if err := decode(f.kind, f.body, &b); err != nil {
		return nil, 0, err
	}
	next, err := fold(&b, frames)
	if err != nil {
		return nil, 0, err
	}
	applied, err := m.applyBatch(b, provLogID, release)
	if err != nil || !applied {
		return next, 0, err
	}
	return next, b.Last, nil
}

// syncChunk decodes and applies snapshot chunk frame f, holding a
// device-work slot until its commit, like syncBatch.
func (m *mount) syncChunk(f syncFrame, snap *snapshotState) error {
	release := m.s.work()
	defer release()
	var c snapshotChunk
	if err := decode(f.kind, f.body, &c); err != nil {
		return err
	}
	return m.applyChunk(snap, c.Contexts, release)
}

// work takes a device-work slot (Config.Slots) for the CPU a mirror
// spends on what a provider sent, and returns the function that gives it
// back, which may be called more than once. A link whose slot is not
// free waits, and its stream is not read meanwhile (backpressure to the
// provider, whose log keeps what it has not sent).
func (s *Service) work() (release func()) {
	l := s.cfg.Slots
	if l == nil {
		return func() {}
	}
	s.metrics.applyWait.Observe(l.Acquire().Seconds())
	held := true
	return func() {
		if held {
			held = false
			l.Release()
		}
	}
}

// fold appends to b the batches already queued, up to foldEntries
// entries; a queued frame of another kind is returned, to be handled next.
func fold(b *batch, frames <-chan syncFrame) (*syncFrame, error) {
	for len(b.Entries) < foldEntries {
		select {
		case f, ok := <-frames:
			if !ok {
				return nil, nil
			}
			if f.kind != kindBatch {
				return &f, nil
			}
			var more batch
			if err := decode(f.kind, f.body, &more); err != nil {
				return nil, err
			}
			b.Entries = append(b.Entries, more.Entries...)
			b.Last, b.Head = more.Last, max(b.Head, more.Head)
		default:
			return nil, nil
		}
	}
	return nil, nil
}

// translate maps a provider's entry onto the mirror: its path moves under
// the mount (bounds.place decides whether it may), it is applied as a
// system write (the entry carries the resolved tenant), and variable
// times the provider filled in from the entry's time are made explicit,
// so both sides hold the same values. A refused entry comes back with
// the reason.
func (m *mount) translate(e model.Entry, b bounds) (model.Mutation, string) {
	mu := e.Mutation
	switch mu.Op {
	case model.OpPut, model.OpDelete, model.OpEvent:
	default:
		return model.Mutation{}, rejectOp
	}
	p, reason := b.place(mu.Path)
	if reason != "" {
		return model.Mutation{}, reason
	}
	mu.Path = p
	mu.Actor = ""
	mu.Record = nil
	// The entry was decoded for this mirror alone: its variables are
	// completed in place (with the time the provider applied them).
	for k, v := range mu.Variables {
		if v.Time.IsZero() {
			v.Time = e.Time
			mu.Variables[k] = v
		}
	}
	if mu.Event != nil {
		ev := *mu.Event
		ev.Path = mu.Path
		ev.Seq = 0
		mu.Event = &ev
	}
	return mu, ""
}

// applyBatch applies provider entries and the new cursor in one commit.
// It reports whether the cursor was committed (a batch without published
// entries is committed at most once per progressEvery). It calls
// translated once the entries are translated, before the commit.
func (m *mount) applyBatch(b batch, provLogID string, translated func()) (bool, error) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	rec, bnd := m.rec, m.bounds
	m.head = max(m.head, b.Head)
	m.mu.Unlock()
	if b.Last <= rec.Cursor && rec.LogID == provLogID {
		return false, nil // already applied (a resend after reconnect)
	}
	muts := make([]model.Mutation, 0, len(b.Entries)+1)
	var refused []rejection
	for _, e := range b.Entries {
		if e.Seq <= rec.Cursor && rec.LogID == provLogID {
			continue
		}
		mu, reason := m.translate(e, bnd)
		if reason != "" {
			refused = append(refused, rejection{reason: reason, seq: e.Seq, path: e.Mutation.Path})
			continue
		}
		muts = append(muts, mu)
	}
	m.reject(refused)
	translated()
	if len(muts) == 0 && time.Since(m.persisted) < progressEvery && b.Last < b.Head {
		return false, nil
	}
	rec.Cursor, rec.LogID = b.Last, provLogID
	start := time.Now()
	if err := m.commit(muts, rec); err != nil {
		return false, err
	}
	m.s.metrics.commit.WithLabelValues(m.name).Observe(time.Since(start).Seconds())
	m.mu.Lock()
	if rec.Cursor >= m.head {
		m.caughtUp = time.Now()
	}
	m.mu.Unlock()
	m.s.metrics.applied.WithLabelValues(m.name).Add(float64(len(muts)))
	return true, nil
}

// commit applies muts and the mount record atomically. A mutation the
// mirror refuses (it should not happen: the provider applied it) is
// skipped and counted, so one bad entry cannot stop the link; the
// digest check then shows the difference.
func (m *mount) commit(muts []model.Mutation, rec mountRecord) error {
	put, err := putRecord(recMount, m.name, rec)
	if err != nil {
		return err
	}
	// A proposal is bounded in size; the last one carries the cursor.
	if len(muts) > maxProposal {
		head := len(muts) - maxProposal
		if err := m.applyOrSkip(muts[:head]); err != nil {
			return err
		}
		muts = muts[head:]
	}
	// The record goes in muts' spare capacity (applyBatch leaves room):
	// muts itself, used again below, keeps its length.
	if _, err := m.s.model.Apply(m.s.ctx, append(muts, put)...); err != nil {
		if !refusal(err) {
			return err
		}
		if err := m.applyOrSkip(muts); err != nil {
			return err
		}
		if _, err := m.s.model.Apply(m.s.ctx, put); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.rec = rec
	m.persisted = time.Now()
	m.mu.Unlock()
	return nil
}

// maxProposal bounds the mutations of one mirror commit (the model takes
// up to 16,384).
const maxProposal = 8192

// applyOrSkip applies muts in commits of up to maxProposal or, when the
// state machine refuses one, that one's mutations one by one, skipping
// (and counting) what it refuses.
func (m *mount) applyOrSkip(muts []model.Mutation) error {
	for len(muts) > maxProposal {
		if err := m.applyOrSkip(muts[:maxProposal]); err != nil {
			return err
		}
		muts = muts[maxProposal:]
	}
	if len(muts) == 0 {
		return nil
	}
	if _, err := m.s.model.Apply(m.s.ctx, muts...); err == nil || !refusal(err) {
		return err
	}
	for _, mu := range muts {
		if _, err := m.s.model.Apply(m.s.ctx, mu); err != nil {
			if !refusal(err) {
				return err
			}
			m.s.metrics.dropped.WithLabelValues(m.name).Inc()
			m.s.log.Warn("federation: mirror refused an entry", "peer", m.name, "path", mu.Path, "op", mu.Op, "err", err)
		}
	}
	return nil
}

// refusal reports whether err is the state machine refusing a mutation
// (as opposed to the store failing).
func refusal(err error) bool {
	return errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrNotFound) ||
		errors.Is(err, model.ErrConflict) || errors.Is(err, model.ErrShared) || errors.Is(err, model.ErrInvalidPath)
}

// snapshotState tracks the mirrored paths a snapshot has confirmed.
type snapshotState struct {
	seen map[model.Path]bool
}

// applyChunk applies a snapshot chunk's contexts; it calls translated
// once they are translated, before the commit.
func (m *mount) applyChunk(snap *snapshotState, cs []*model.Context, translated func()) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	bnd := m.bounds
	m.mu.Unlock()
	muts := make([]model.Mutation, 0, len(cs))
	var refused []rejection
	for _, c := range cs {
		if c == nil {
			continue
		}
		p, reason := bnd.place(c.Path)
		if reason != "" {
			refused = append(refused, rejection{reason: reason, path: c.Path})
			continue
		}
		snap.seen[p] = true
		typ := c.Type
		if typ == "" {
			typ = model.FolderType
		}
		muts = append(muts, model.Mutation{
			Op: model.OpPut, Path: p, Type: typ, Tenant: c.Tenant, Replace: true,
			Labels: c.Labels, Variables: c.Variables, Functions: c.Functions, SetFunctions: true,
		})
	}
	m.reject(refused)
	translated()
	return m.applyOrSkip(muts)
}

// reject counts what the provider sent and the mirror refused, by
// reason, and flags the link: the latest refusal is its last error (a
// provider that sends paths outside its bounds is faulty or hostile; the
// link stays up, the rest of its data is applied).
func (m *mount) reject(rs []rejection) {
	if len(rs) == 0 {
		return
	}
	for _, r := range rs {
		m.s.metrics.rejected.WithLabelValues(m.name, r.reason).Inc()
		m.s.metrics.dropped.WithLabelValues(m.name).Inc()
	}
	last := rs[len(rs)-1]
	m.mu.Lock()
	m.rejected += uint64(len(rs))
	m.errs.set(last.String(), time.Now())
	m.mu.Unlock()
	m.s.log.Warn("federation: refused data from a provider outside its bounds", "peer", m.name,
		"count", len(rs), "reason", rs[0].reason, "path", rs[0].path, "seq", rs[0].seq)
}

// finishSnapshot deletes mirrored contexts the snapshot did not confirm
// and commits the cursor the snapshot reflects.
func (m *mount) finishSnapshot(snap *snapshotState, seq uint64, provLogID string) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	rec, subtrees := m.rec, m.subtrees
	m.mu.Unlock()
	var stale []model.Path
	_, err := m.s.model.Snapshot(m.path, func(c *model.Context) error {
		if c.Path == m.path || snap.seen[c.Path] {
			return nil
		}
		if within(unmapPath(m.path, c.Path), subtrees) {
			stale = append(stale, c.Path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Deepest first: a context is deleted only once it has no children.
	slices.SortFunc(stale, func(a, b model.Path) int { return b.Depth() - a.Depth() })
	muts := make([]model.Mutation, 0, len(stale))
	for _, p := range stale {
		muts = append(muts, model.Mutation{Op: model.OpDelete, Path: p})
	}
	if err := m.applyOrSkip(muts); err != nil {
		return err
	}
	rec.Cursor, rec.LogID, rec.Resync = seq, provLogID, false
	if err := m.commit(nil, rec); err != nil {
		return err
	}
	m.mu.Lock()
	if rec.Cursor >= m.head {
		m.caughtUp = time.Now()
	}
	m.mu.Unlock()
	return nil
}

// recordGap marks lost history visibly: an event on the mount and a count
// in its record.
func (m *mount) recordGap(g gap) error {
	payload, _ := json.Marshal(g)
	ev := model.Mutation{Op: model.OpEvent, Path: m.path, Event: &model.Event{
		Name: "federation.gap", Level: model.LevelWarning, Payload: payload,
	}}
	if err := m.updateRecord(func(r *mountRecord) { r.Gaps++ }, ev); err != nil {
		return err
	}
	m.s.log.Warn("federation: history lost on a link", "peer", m.name, "from", g.From, "to", g.To, "reason", g.Reason)
	return nil
}
