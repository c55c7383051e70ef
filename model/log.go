package model

import (
	"context"
	"fmt"
)

// ring keeps the most recent log entries in memory so that followers close
// behind the head never touch the store. It holds them encoded, as the
// applier encoded them for the store: followers that forward entries
// (federation) send those bytes as they are, and a ring of byte slices
// costs the garbage collector almost nothing to scan, where decoded
// entries with their maps would cost it a sizeable share of the CPU.
type ring struct {
	buf   []RawEntry
	start int    // index of the oldest entry
	n     int    // entries held
	first uint64 // sequence number of the oldest entry held (when n > 0)
}

func newRing(size int, last uint64) *ring {
	return &ring{buf: make([]RawEntry, size), first: last + 1}
}

// append adds es, with their encodings where enc has them (the others are
// encoded here).
func (r *ring) append(es []Entry, enc [][]byte) {
	for i := range es {
		e := &es[i]
		var raw []byte
		if i < len(enc) {
			raw = enc[i]
		}
		if raw == nil {
			var err error
			if raw, err = Marshal(e); err != nil {
				// Cannot happen to an entry the store has just committed
				// (it was encoded for the store). Should it, the ring
				// restarts after e so that it stays contiguous, and older
				// cursors read from the store.
				r.start, r.n, r.first = 0, 0, e.Seq+1
				continue
			}
		}
		if r.n == len(r.buf) {
			r.start = (r.start + 1) % len(r.buf)
			r.n--
			r.first++
		}
		if r.n == 0 {
			r.first = e.Seq
		}
		r.buf[(r.start+r.n)%len(r.buf)] = RawEntry{Seq: e.Seq, Op: e.Mutation.Op, Path: e.Mutation.Path, Raw: raw}
		r.n++
	}
}

// after copies up to limit entries with Seq > after; ok is false when the
// ring does not reach back that far.
func (r *ring) after(after uint64, limit int) ([]RawEntry, bool) {
	if r.n == 0 || after+1 < r.first {
		return nil, false
	}
	i := int(after + 1 - r.first)
	if i >= r.n {
		return nil, true
	}
	k := min(r.n-i, limit)
	out := make([]RawEntry, k)
	for j := range k {
		out[j] = r.buf[(r.start+i+j)%len(r.buf)]
	}
	return out, true
}

// ReadLog returns up to limit entries with Seq > after, in order, waiting
// until at least one exists or ctx ends. Recent entries come from memory,
// older ones from the store; ErrCompacted means the cursor is older than
// the store keeps, and the reader must start again from a Snapshot.
func (m *Model) ReadLog(ctx context.Context, after uint64, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = 1024
	}
	raw, inMem, err := m.readTail(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	if !inMem {
		return m.store.ReadLog(after, limit)
	}
	es := make([]Entry, len(raw))
	for i := range raw {
		if err := Unmarshal(raw[i].Raw, &es[i]); err != nil {
			return nil, fmt.Errorf("model: decode log entry %d: %w", raw[i].Seq, err)
		}
	}
	return es, nil
}

// readTail waits until the log holds an entry after the cursor (or ctx
// ends, or the model closes), then copies up to limit entries after it
// from the in-memory tail; inMem is false when the tail does not reach
// back to the cursor, and the reader must go to the store.
func (m *Model) readTail(ctx context.Context, after uint64, limit int) (raw []RawEntry, inMem bool, err error) {
	for {
		m.mu.Lock()
		last, ch, closed := m.last, m.changed, m.closed
		if after < last {
			raw, inMem = m.tail.after(after, limit)
			m.mu.Unlock()
			return raw, inMem, nil
		}
		m.mu.Unlock()
		if after > last {
			return nil, false, fmt.Errorf("%w: cursor %d is ahead of the log (last %d)", ErrInvalid, after, last)
		}
		if closed {
			return nil, false, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// Changed returns a channel closed at the next commit; with LastSeq it lets
// a reader wait for new entries without polling.
func (m *Model) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// RawEntry is a log entry as it is stored: its encoding (Marshal of the
// Entry), with the fields a reader filters on decoded beside it.
type RawEntry struct {
	Seq  uint64
	Op   Op
	Path Path
	Raw  []byte
}

// Local reports whether the entry changes a node-local record.
func (r *RawEntry) Local() bool { return r.Op == OpPutRecord || r.Op == OpDeleteRecord }

// RawLogReader is a Store that can return stored log entries without
// decoding them whole. A follower that only forwards entries (federation)
// then neither decodes nor encodes them again.
type RawLogReader interface {
	ReadLogRaw(after uint64, limit int) ([]RawEntry, error)
}

// EntryHead decodes the sequence number, operation and path of an encoded
// entry and returns the rest of data after it.
func EntryHead(data []byte) (RawEntry, []byte, error) {
	var h struct {
		Seq      uint64 `cbor:"1,keyasint"`
		Mutation struct {
			Op   Op   `cbor:"1,keyasint"`
			Path Path `cbor:"2,keyasint"`
		} `cbor:"3,keyasint"`
	}
	rest, err := decMode.UnmarshalFirst(data, &h)
	if err != nil {
		return RawEntry{}, nil, err
	}
	return RawEntry{Seq: h.Seq, Op: h.Mutation.Op, Path: h.Mutation.Path, Raw: data[:len(data)-len(rest)]}, rest, nil
}

// ReadLogRaw is ReadLog returning encoded entries: recent ones from
// memory as the applier encoded them, older ones from the store as stored
// when it is a RawLogReader (else decoded there and encoded here).
func (m *Model) ReadLogRaw(ctx context.Context, after uint64, limit int) ([]RawEntry, error) {
	if limit <= 0 {
		limit = 1024
	}
	out, inMem, err := m.readTail(ctx, after, limit)
	if err != nil || inMem {
		return out, err
	}
	if rr, ok := m.store.(RawLogReader); ok {
		return rr.ReadLogRaw(after, limit)
	}
	es, err := m.store.ReadLog(after, limit)
	if err != nil {
		return nil, err
	}
	out = make([]RawEntry, len(es))
	for i := range es {
		if out[i], err = encodeRaw(&es[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// encodeRaw encodes e as a RawEntry.
func encodeRaw(e *Entry) (RawEntry, error) {
	raw, err := Marshal(e)
	if err != nil {
		return RawEntry{}, fmt.Errorf("model: encode entry %d: %w", e.Seq, err)
	}
	return RawEntry{Seq: e.Seq, Op: e.Mutation.Op, Path: e.Mutation.Path, Raw: raw}, nil
}
