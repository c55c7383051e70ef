package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/strata-dm/strata/model"
)

// series is one variable's history in memory: its durable record and
// the chunks not yet flushed. Only the service's loop changes it, under
// the service's mu (readers copy the heads under mu).
type series struct {
	id    string
	rec   seriesRec
	fresh bool // no record yet
	// head takes new samples; closed are full heads not yet flushed.
	head   *head
	closed []*head
	// next is rec as the flush in progress writes it.
	next seriesRec
	// queued: in the list of a flush of full chunks.
	queued bool
	// recDirty: rec changed (Since) and is to be written even without
	// new samples.
	recDirty bool
}

type head struct {
	key         string // tsKey(first)
	day         int64  // of first
	first, last int64
	n           int
	chunk       *chunkenc.XORChunk
	app         chunkenc.Appender
	// written: every sample of the head is in a flushed record.
	written bool
	// size is the size of its record as stored (0: none yet); next, as
	// the flush in progress writes it.
	size, next int64
}

func newHead(t int64) *head {
	c := chunkenc.NewXORChunk()
	app, _ := c.Appender()
	return &head{key: tsKey(t), day: floorDiv(t, dayMs), first: t, last: t, chunk: c, app: app}
}

type appendResult int

const (
	appended appendResult = iota
	stale                 // at or before the newest sample held: out of order, or replayed
)

// append adds sample (t, v); a head that is full or spans more than
// span ms is closed first.
func (sr *series) append(t int64, v float64, full int, span int64) appendResult {
	newest := sr.rec.Flushed
	if sr.head != nil && sr.head.n > 0 {
		newest = max(newest, sr.head.last)
	}
	for _, h := range sr.closed {
		newest = max(newest, h.last)
	}
	if (newest != 0 || sr.head != nil) && t <= newest {
		return stale
	}
	if h := sr.head; h != nil && (h.n >= full || t-h.first > span || floorDiv(t, dayMs) != h.day) {
		sr.closed = append(sr.closed, h)
		sr.head = nil
	}
	if sr.head == nil {
		sr.head = newHead(t)
	}
	h := sr.head
	h.app.Append(0, t, v)
	h.last = t
	h.n++
	h.written = false
	if h.n >= full {
		sr.closed = append(sr.closed, h)
		sr.head = nil
	}
	return appended
}

// flushMutations returns the records that make the series' samples
// durable (closed heads, the head when it has unwritten samples, the
// series record) and their chunk bytes. A head whose newest sample is
// older than idle is closed by it.
func (sr *series) flushMutations(idle int64) ([]model.Mutation, int) {
	h := sr.head
	if len(sr.closed) == 0 && (h == nil || (h.written && h.last >= idle)) && !sr.recDirty {
		return nil, 0
	}
	next := sr.rec
	var muts []model.Mutation
	n := 0
	put := func(h *head) {
		val := marshal(&rawChunk{First: h.first, Last: h.last, N: h.n, Data: h.chunk.Bytes()})
		n += len(val)
		kind := rawKind(sr.id, h.day)
		h.next = recordSize(kind, h.key, val)
		muts = append(muts, model.Mutation{Op: model.OpPutRecord,
			Record: &model.Record{Kind: kind, Key: h.key, Value: val}})
		next.Flushed = max(next.Flushed, h.last)
		if next.RawDay == 0 || h.day < next.RawDay {
			next.RawDay = h.day
		}
	}
	for _, c := range sr.closed {
		put(c)
	}
	next.Open, next.OpenDay = "", 0
	if h != nil && h.n > 0 {
		if !h.written {
			put(h)
		}
		if h.last >= idle {
			next.Open, next.OpenDay = h.key, h.day
		}
	}
	sr.next = next
	muts = append(muts, model.Mutation{Op: model.OpPutRecord,
		Record: &model.Record{Kind: KindSeries, Key: sr.id, Value: marshal(&next)}})
	return muts, n
}

// pendingBytes is the change of the bytes stored that the mutations of
// flushMutations make (what flushed will return).
func (sr *series) pendingBytes() (delta int64) {
	for _, h := range sr.closed {
		delta += h.next - h.size
	}
	if h := sr.head; h != nil && !h.written && h.next > 0 {
		delta += h.next - h.size
	}
	return delta
}

// flushed records that the mutations of flushMutations are durable, and
// returns the change of the bytes stored.
func (sr *series) flushed() (delta int64) {
	for _, h := range sr.closed {
		delta += h.next - h.size
	}
	if h := sr.head; h != nil && !h.written && h.next > 0 {
		delta += h.next - h.size
		h.size = h.next
	}
	sr.rec, sr.fresh, sr.closed, sr.queued, sr.recDirty = sr.next, false, nil, false, false
	if sr.head != nil {
		sr.head.written = true
		if sr.rec.Open == "" {
			sr.head = nil // idle: closed
		}
	}
	return delta
}

// reopen continues the series' open chunk (a head flushed before a
// restart or a change of leader) when sample t may still go in it.
func (s *Service) reopen(sr *series, t int64) {
	key, day := sr.rec.Open, sr.rec.OpenDay
	b, err := s.model.Record(rawKind(sr.id, day), key)
	if err != nil {
		return
	}
	var rc rawChunk
	if unmarshal(b, &rc) != nil || rc.N >= s.cfg.ChunkSamples || t-rc.First > s.cfg.ChunkSpan.Milliseconds() ||
		floorDiv(t, dayMs) != day || t <= rc.Last {
		return
	}
	// A chunk read back cannot take appends as it is (its bit stream
	// does not say where its last byte ends): its samples are encoded
	// again into a new chunk, which then continues.
	h := newHead(rc.First)
	h.key, h.day, h.n = key, day, 0
	if err := decodeChunk(rc.Data, func(t int64, v float64) {
		h.app.Append(0, t, v)
		h.last = t
		h.n++
	}); err != nil || h.n != rc.N {
		return
	}
	h.written = true
	h.size = recordSize(rawKind(sr.id, day), key, b)
	s.mu.Lock()
	sr.head = h
	s.mu.Unlock()
}

// heads returns copies of the in-memory chunks of a series, for a read.
func (sr *series) heads() []rawChunk {
	var out []rawChunk
	for _, h := range append(append([]*head(nil), sr.closed...), sr.head) {
		if h == nil || h.n == 0 {
			continue
		}
		out = append(out, rawChunk{First: h.first, Last: h.last, N: h.n, Data: bytes.Clone(h.chunk.Bytes())})
	}
	return out
}

var (
	jsonTrue  = []byte("true")
	jsonFalse = []byte("false")
)

// numeric returns a numeric or boolean JSON value as a float (true 1,
// false 0).
func numeric(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, false
	}
	switch {
	case bytes.Equal(raw, jsonTrue):
		return 1, true
	case bytes.Equal(raw, jsonFalse):
		return 0, true
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		return f, err == nil
	}
	return 0, false
}
