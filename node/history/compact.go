package history

import (
	"context"
	"errors"
	"slices"
	"strconv"

	"github.com/strata-dm/strata/model"
)

// compactState is where the round-robin of compaction rounds is.
type compactState struct {
	ids  []string
	next int
}

// compactRound visits series in turn, reading at most CompactBudget
// records, and turns what is past each tier's retention into the next
// tier's aggregates (or deletes it past the last). Raw chunks and
// 1-minute blocks are compacted by whole UTC days, 1-hour blocks expire
// by 30-day periods. Each series' changes are one atomic proposal: the
// aggregates written and the records they replace deleted together.
func (s *Service) compactRound(ctx context.Context) {
	s.mu.Lock()
	if !s.loaded {
		s.mu.Unlock()
		return
	}
	st := &s.compact
	if st.next >= len(st.ids) {
		st.ids = st.ids[:0]
		for id := range s.series {
			st.ids = append(st.ids, id)
		}
		slices.Sort(st.ids)
		st.next = 0
	}
	// Heads in memory as old as the days about to be compacted (series
	// gone quiet) are written and closed first: a chunk compacted must
	// never be written again from memory. Samples that old are no longer
	// taken, so only idle heads qualify, and the others stay for the
	// regular flush.
	rawCut := s.cfg.Now().Add(-s.cfg.RawRetention).UnixMilli()
	var old []*series
	for _, sr := range s.series {
		if h := sr.head; (h != nil && h.first < rawCut+dayMs) || len(sr.closed) > 0 {
			old = append(old, sr)
		}
	}
	s.mu.Unlock()
	if len(old) > 0 {
		s.flush(ctx, old, false)
	}
	s.metrics.compacts.Inc()
	budget := s.cfg.CompactBudget
	for budget > 0 && st.next < len(st.ids) {
		if ctx.Err() != nil {
			return
		}
		id := st.ids[st.next]
		s.mu.Lock()
		sr := s.series[id]
		s.mu.Unlock()
		if sr != nil && !sr.fresh {
			if err := s.compactSeries(ctx, sr, &budget); err != nil {
				if ctx.Err() != nil {
					return
				}
				// Logged, and the next series is visited: one damaged
				// record does not stop compaction.
				s.log.Warn("history: compaction of a series failed; it is tried again next time round", "path", sr.rec.Path, "var", sr.rec.Var, "err", err)
			}
			if budget <= 0 {
				return // this series may have more: it is visited first next round
			}
		}
		st.next++
	}
}

// compactSeries compacts one series within budget (records read).
func (s *Service) compactSeries(ctx context.Context, sr *series, budget *int) error {
	now := s.cfg.Now().UnixMilli()
	rawCut := now - s.cfg.RawRetention.Milliseconds()
	minCut := now - s.cfg.MinuteRetention.Milliseconds()
	hourCut := now - s.cfg.HourRetention.Milliseconds()
	rec := sr.rec
	var muts []model.Mutation
	var aggregated, deleted int
	var delta int64              // bytes stored
	mins := map[int64][]aggRow{} // day → new 1m rows
	// Raw days wholly past the raw retention become 1-minute rows.
	if rec.RawDay != 0 {
		lastDay := floorDiv(rec.Flushed, dayMs)
		for day := rec.RawDay; (day+1)*dayMs <= rawCut && day <= lastDay && *budget > 0; day++ {
			var samples []aggRow
			err := s.model.Records(rawKind(sr.id, day), func(key string, v []byte) error {
				*budget--
				var c rawChunk
				if err := unmarshal(v, &c); err != nil {
					s.log.Warn("history: dropping a damaged raw chunk", "path", rec.Path, "var", rec.Var, "chunk", key, "err", err)
				} else if err := decodeChunk(c.Data, func(t int64, v float64) { samples = append(samples, sampleRow(t, v)) }); err != nil {
					s.log.Warn("history: dropping a damaged raw chunk", "path", rec.Path, "var", rec.Var, "chunk", key, "err", err)
				}
				muts = append(muts, model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: rawKind(sr.id, day), Key: key}})
				delta -= recordSize(rawKind(sr.id, day), key, v)
				aggregated++
				return nil
			})
			if err != nil {
				return err
			}
			if len(samples) > 0 {
				slices.SortStableFunc(samples, func(a, b aggRow) int { return cmpInt(a.T, b.T) })
				mins[day] = rollup(samples, minuteMs)
			}
			rec.RawDay = day + 1
		}
	}
	for day, rows := range mins {
		*budget--
		key := strconv.FormatInt(day, 10)
		old, oldSize, err := s.rows(minKind(sr.id), key)
		if err != nil {
			return err
		}
		val := encodeRows(minuteMs, mergeRows(old, rows))
		delta += recordSize(minKind(sr.id), key, val) - oldSize
		muts = append(muts, model.Mutation{Op: model.OpPutRecord,
			Record: &model.Record{Kind: minKind(sr.id), Key: key, Value: val}})
		if !rec.HasMin || day < rec.MinDay {
			rec.MinDay = day
		}
		rec.HasMin = true
	}
	// 1-minute days past their retention become 1-hour rows.
	hours := map[int64][]aggRow{} // period → new 1h rows
	if rec.HasMin {
		for day := rec.MinDay; (day+1)*dayMs <= minCut && *budget > 0; day++ {
			*budget--
			key := strconv.FormatInt(day, 10)
			rows, size, err := s.rows(minKind(sr.id), key)
			if err != nil {
				return err
			}
			delta -= size
			if rows != nil {
				per := floorDiv(day*dayMs, periodMs)
				hours[per] = mergeRows(hours[per], rollup(rows, hourMs))
				muts = append(muts, model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: minKind(sr.id), Key: key}})
				aggregated++
			}
			rec.MinDay = day + 1
			if day >= rec.RawDay {
				break // no 1-minute data beyond the raw tier's start
			}
		}
	}
	for per, rows := range hours {
		*budget--
		key := strconv.FormatInt(per, 10)
		old, oldSize, err := s.rows(hourKind(sr.id), key)
		if err != nil {
			return err
		}
		val := encodeRows(hourMs, mergeRows(old, rows))
		delta += recordSize(hourKind(sr.id), key, val) - oldSize
		muts = append(muts, model.Mutation{Op: model.OpPutRecord,
			Record: &model.Record{Kind: hourKind(sr.id), Key: key, Value: val}})
		if !rec.HasHour || per < rec.HourPeriod {
			rec.HourPeriod = per
		}
		rec.HasHour = true
	}
	// 1-hour periods past the last retention go.
	if rec.HasHour {
		for per := rec.HourPeriod; (per+1)*periodMs <= hourCut && *budget > 0; per++ {
			*budget--
			key := strconv.FormatInt(per, 10)
			if b, err := s.model.Record(hourKind(sr.id), key); err == nil {
				delta -= recordSize(hourKind(sr.id), key, b)
				muts = append(muts, model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: hourKind(sr.id), Key: key}})
				deleted++
			} else if !errors.Is(err, model.ErrNotFound) {
				return err
			}
			rec.HourPeriod = per + 1
			if per*periodMs > rec.MinDay*dayMs {
				break
			}
		}
	}
	if len(muts) == 0 && rec == sr.rec {
		return nil
	}
	muts = append(muts, model.Mutation{Op: model.OpPutRecord,
		Record: &model.Record{Kind: KindSeries, Key: sr.id, Value: marshal(&rec)}})
	if _, err := s.model.Apply(ctx, muts...); err != nil {
		return err
	}
	s.mu.Lock()
	sr.rec = rec
	s.bytes += delta
	s.metrics.stored.Set(float64(s.bytes))
	s.mu.Unlock()
	s.metrics.aggregated.Add(float64(aggregated))
	s.metrics.deleted.Add(float64(deleted))
	return nil
}

// rows reads an aggregate block and its size as stored; nil when there
// is none.
func (s *Service) rows(kind, key string) ([]aggRow, int64, error) {
	b, err := s.model.Record(kind, key)
	if errors.Is(err, model.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	rows, err := decodeRows(b)
	return rows, recordSize(kind, key, b), err
}
