package history

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/strata-dm/strata/model"
)

// Point is one point of an answer: unix milliseconds and a value.
type Point struct {
	T int64
	V float64
}

// Read answers q for the context at p (which the caller has already
// checked the reader may see). Raw reads (no step) return the samples
// held raw and, for the times only aggregates hold, one point per
// aggregate step with its average; more than the service's MaxPoints is
// ErrTooManyPoints. Reads with a step return one point per step that
// holds data, at the step's start (steps are aligned to multiples of the
// step since the Unix epoch).
func (s *Service) Read(ctx context.Context, p model.Path, q Query) ([]Point, error) {
	sid := seriesID(p, q.Var)
	s.mu.Lock()
	var rec seriesRec
	var mem []rawChunk
	sr := s.series[sid]
	known := sr != nil
	if known {
		rec, mem = sr.rec, sr.heads()
	}
	s.mu.Unlock()
	if !known {
		b, err := s.model.Record(KindSeries, sid)
		if errors.Is(err, model.ErrNotFound) {
			return []Point{}, nil
		}
		if err != nil {
			return nil, err
		}
		if err := unmarshal(b, &rec); err != nil {
			return nil, err
		}
	}
	if rec.Path != "" && (rec.Path != p || rec.Var != q.Var) {
		return nil, fmt.Errorf("history: series id collision between %s %s and %s %s", rec.Path, rec.Var, p, q.Var)
	}
	// The samples are the context's only while it has their tenant (it
	// may have been given to another tenant, or deleted and made again,
	// since), and only from Since on.
	c, err := s.model.Get(p)
	if errors.Is(err, model.ErrNotFound) || (err == nil && c.Tenant != rec.Tenant) {
		return []Point{}, nil
	}
	if err != nil {
		return nil, err
	}
	if rec.Since > q.From {
		q.From = rec.Since
		if q.From > q.To {
			return []Point{}, nil
		}
	}
	var rows []aggRow   // aggregates, from the 1h and 1m tiers
	var samples []Point // raw samples
	add := func(t int64, v float64) {
		if t >= q.From && t <= q.To {
			samples = append(samples, Point{t, v})
		}
	}
	// Aggregate tiers: point reads of the blocks the range covers.
	if rec.HasHour {
		for per := max(floorDiv(q.From, periodMs), rec.HourPeriod); per <= floorDiv(q.To, periodMs); per++ {
			if err := s.readRows(hourKind(sid), strconv.FormatInt(per, 10), q, &rows); err != nil {
				return nil, err
			}
		}
	}
	if rec.HasMin {
		for day := max(floorDiv(q.From, dayMs), rec.MinDay); day <= floorDiv(q.To, dayMs); day++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := s.readRows(minKind(sid), strconv.FormatInt(day, 10), q, &rows); err != nil {
				return nil, err
			}
		}
	}
	// Raw chunks, day by day, then the heads in memory (which supersede
	// a flushed record of the same chunk).
	var chunks []rawChunk
	inMem := map[string]bool{}
	for _, c := range mem {
		inMem[tsKey(c.First)] = true
	}
	if rec.RawDay != 0 {
		for day := max(floorDiv(q.From, dayMs), rec.RawDay); day <= min(floorDiv(q.To, dayMs), floorDiv(rec.Flushed, dayMs)); day++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			err := s.model.Records(rawKind(sid, day), func(key string, v []byte) error {
				if inMem[key] {
					return nil
				}
				var c rawChunk
				if err := unmarshal(v, &c); err != nil {
					return err
				}
				if c.Last < q.From || c.First > q.To {
					return nil
				}
				chunks = append(chunks, c)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	for _, c := range mem {
		if c.Last < q.From || c.First > q.To {
			continue
		}
		chunks = append(chunks, c)
	}
	n := 0
	for _, c := range chunks {
		n += c.N
	}
	samples = make([]Point, 0, n)
	for _, c := range chunks {
		if err := decodeChunk(c.Data, add); err != nil {
			return nil, err
		}
	}
	// Chunks are disjoint and read in time order: sorting is only a
	// safeguard.
	if !slices.IsSortedFunc(samples, func(a, b Point) int { return cmpInt(a.T, b.T) }) {
		slices.SortStableFunc(samples, func(a, b Point) int { return cmpInt(a.T, b.T) })
	}
	slices.SortFunc(rows, func(a, b aggRow) int { return cmpInt(a.T, b.T) })
	if q.Step == 0 {
		out := make([]Point, 0, len(rows)+len(samples))
		for _, r := range rows {
			out = append(out, Point{r.T, r.Sum / r.Count})
		}
		out = append(out, samples...)
		if len(out) > s.cfg.MaxPoints {
			return nil, fmt.Errorf("%w: %d points between %s and %s, more than %d: give a step (e.g. step=1m) or a shorter range",
				ErrTooManyPoints, len(out), fmtMs(q.From), fmtMs(q.To), s.cfg.MaxPoints)
		}
		slices.SortStableFunc(out, func(a, b Point) int { return cmpInt(a.T, b.T) })
		return out, nil
	}
	// Aggregate rows precede raw samples in time (a tier is compacted
	// into the next from its oldest end), but a step may hold both.
	steps := rollup(rows, q.Step)
	for _, p := range samples {
		t := floorDiv(p.T, q.Step) * q.Step
		if n := len(steps); n > 0 && steps[n-1].T == t {
			steps[n-1].add(sampleRow(t, p.V))
			continue
		}
		steps = append(steps, sampleRow(t, p.V))
	}
	if !slices.IsSortedFunc(steps, func(a, b aggRow) int { return cmpInt(a.T, b.T) }) {
		// A sample older than an aggregate row: merge by step.
		slices.SortStableFunc(steps, func(a, b aggRow) int { return cmpInt(a.T, b.T) })
		steps = rollup(steps, q.Step)
	}
	out := make([]Point, 0, len(steps))
	for _, r := range steps {
		out = append(out, Point{r.T, pick(r, q.Agg)})
	}
	return out, nil
}

func (s *Service) readRows(kind, key string, q Query, rows *[]aggRow) error {
	b, err := s.model.Record(kind, key)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rs, err := decodeRows(b)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.T >= q.From && r.T <= q.To && r.Count > 0 {
			*rows = append(*rows, r)
		}
	}
	return nil
}

func pick(r aggRow, agg string) float64 {
	switch agg {
	case AggMin:
		return r.Min
	case AggMax:
		return r.Max
	case AggLast:
		return r.Last
	case AggCount:
		return r.Count
	}
	if r.Count == 0 {
		return math.NaN()
	}
	return r.Sum / r.Count
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// AppendJSON appends points as a JSON array of [ms, value] pairs; a
// value JSON cannot hold (NaN, ±Inf) is written as null. Telemetry
// repeats itself: a value equal to the one before reuses its encoding.
func AppendJSON(b []byte, ps []Point) []byte {
	b = append(b, '[')
	var prev []byte
	var prevV float64
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.T, 10)
		b = append(b, ',')
		switch {
		case math.IsNaN(p.V) || math.IsInf(p.V, 0):
			b = append(b, "null"...)
		case prev != nil && p.V == prevV && !(p.V == 0 && math.Signbit(p.V) != math.Signbit(prevV)):
			b = append(b, prev...)
		default:
			start := len(b)
			b = strconv.AppendFloat(b, p.V, 'g', -1, 64)
			prev, prevV = append(prev[:0], b[start:]...), p.V
		}
		b = append(b, ']')
	}
	return append(b, ']')
}

// Footprint reports what the raw tier of a series holds in the store:
// chunk records, their bytes (keys and values, as stored), and samples.
// It does not count heads not yet flushed.
func (s *Service) Footprint(p model.Path, v string) (records, bytes, samples int, err error) {
	sid := seriesID(p, v)
	b, err := s.model.Record(KindSeries, sid)
	if errors.Is(err, model.ErrNotFound) {
		return 0, 0, 0, nil
	}
	if err != nil {
		return 0, 0, 0, err
	}
	var rec seriesRec
	if err := unmarshal(b, &rec); err != nil || rec.RawDay == 0 {
		return 0, 0, 0, err
	}
	for day := rec.RawDay; day <= floorDiv(rec.Flushed, dayMs); day++ {
		kind := rawKind(sid, day)
		err := s.model.Records(kind, func(key string, val []byte) error {
			var c rawChunk
			if err := unmarshal(val, &c); err != nil {
				return err
			}
			records++
			bytes += len(kind) + len(key) + len(val)
			samples += c.N
			return nil
		})
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return records, bytes, samples, nil
}

// RawRecords calls fn for every raw chunk record of a series (kind, key,
// value), for tools that measure the store beside them.
func (s *Service) RawRecords(p model.Path, v string, fn func(kind, key string, value []byte) error) error {
	sid := seriesID(p, v)
	b, err := s.model.Record(KindSeries, sid)
	if err != nil {
		return err
	}
	var rec seriesRec
	if err := unmarshal(b, &rec); err != nil {
		return err
	}
	for day := rec.RawDay; rec.RawDay != 0 && day <= floorDiv(rec.Flushed, dayMs); day++ {
		kind := rawKind(sid, day)
		if err := s.model.Records(kind, func(key string, val []byte) error { return fn(kind, key, val) }); err != nil {
			return err
		}
	}
	return nil
}
