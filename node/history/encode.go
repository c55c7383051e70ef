package history

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"

	"github.com/fxamacker/cbor/v2"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/strata-dm/strata/model"
)

// Record kinds. Every durable byte of history is a node-local model
// record (docs/history.md, "Storage"):
//
//	hist.series          <sid>      seriesRec: the series' path, variable and progress
//	hist.cursor          log        cursorRec: every sample up to this log sequence is flushed
//	hist.raw.<sid>.<day> <first ts> rawChunk: one XOR chunk of raw samples
//	hist.1m.<sid>        <day>      aggBlock: a day of 1-minute aggregates
//	hist.1h.<sid>        <period>   aggBlock: 30 days of 1-hour aggregates
//
// Raw chunks have one kind per series and UTC day (of their first
// sample), so that reading a day lists only that day's chunks.
const (
	KindSeries = "hist.series"
	KindCursor = "hist.cursor"
	cursorKey  = "log"
)

const (
	dayMs    = int64(24 * 60 * 60 * 1000)
	periodMs = 30 * dayMs // an hour-tier block
	minuteMs = int64(60 * 1000)
	hourMs   = 60 * minuteMs
)

// seriesID names the series of variable v of the context at p: 24 hex
// digits of a SHA-256, short enough for record kinds, and checked against
// the series record's path and name when read.
func seriesID(p model.Path, v string) string {
	h := sha256.New()
	h.Write([]byte(p))
	h.Write([]byte{0})
	h.Write([]byte(v))
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func rawKind(sid string, day int64) string {
	return "hist.raw." + sid + "." + strconv.FormatInt(day, 10)
}
func minKind(sid string) string  { return "hist.1m." + sid }
func hourKind(sid string) string { return "hist.1h." + sid }

// tsKey is a timestamp as a record key: fixed-width hex of the offset
// value, so that key order is time order (negative times included).
func tsKey(t int64) string {
	return fmt.Sprintf("%016x", uint64(t)^(1<<63))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// seriesRec is a series' durable state (KindSeries).
type seriesRec struct {
	Path model.Path `cbor:"1,keyasint"`
	Var  string     `cbor:"2,keyasint"`
	// Flushed is the time (unix ms) of the newest sample in a flushed raw
	// chunk: a sample replayed from the log at or before it is already
	// stored.
	Flushed int64 `cbor:"3,keyasint,omitempty"`
	// OpenDay and Open name the newest raw chunk when it may take more
	// samples (not full); empty when it is closed.
	OpenDay int64  `cbor:"4,keyasint,omitempty"`
	Open    string `cbor:"5,keyasint,omitempty"`
	// RawDay is the oldest day that may hold raw chunks; MinDay the
	// oldest day of a 1-minute block; HourPeriod the oldest 1-hour block.
	RawDay     int64 `cbor:"6,keyasint,omitempty"`
	MinDay     int64 `cbor:"7,keyasint,omitempty"`
	HourPeriod int64 `cbor:"8,keyasint,omitempty"`
	// HasMin, HasHour: the aggregate tiers hold blocks.
	HasMin  bool `cbor:"9,keyasint,omitempty"`
	HasHour bool `cbor:"10,keyasint,omitempty"`
	// Tenant is the tenant of the context when its samples were taken;
	// a read of a context of another tenant shows none. Since (unix ms)
	// hides the samples before it: those of a context deleted since, or
	// of its previous tenant.
	Tenant string `cbor:"11,keyasint,omitempty"`
	Since  int64  `cbor:"12,keyasint,omitempty"`
}

type cursorRec struct {
	Seq uint64 `cbor:"1,keyasint"`
	// Bytes is the size of the chunk and aggregate records as of the
	// cursor (keys and values), for strata_history_stored_bytes.
	Bytes int64 `cbor:"2,keyasint,omitempty"`
}

// recordSize is what a record costs the store, as counted in
// strata_history_stored_bytes: kind, key and value.
func recordSize(kind, key string, value []byte) int64 {
	return int64(len(kind) + len(key) + len(value))
}

// rawChunk is one XOR chunk (chunkenc) of raw samples.
type rawChunk struct {
	First int64  `cbor:"1,keyasint"`
	Last  int64  `cbor:"2,keyasint"`
	N     int    `cbor:"3,keyasint"`
	Data  []byte `cbor:"4,keyasint"`
}

// aggRow is one step of an aggregate tier.
type aggRow struct {
	T                   int64
	Min, Max, Sum, Last float64
	Count               float64
}

func (r *aggRow) add(o aggRow) {
	r.Min = math.Min(r.Min, o.Min)
	r.Max = math.Max(r.Max, o.Max)
	r.Sum += o.Sum
	r.Count += o.Count
	r.Last = o.Last
}

func sampleRow(t int64, v float64) aggRow {
	return aggRow{T: t, Min: v, Max: v, Sum: v, Last: v, Count: 1}
}

// aggBlock holds rows of one tier as five XOR chunks sharing timestamps
// (min, max, sum, count, last).
type aggBlock struct {
	Step int64    `cbor:"1,keyasint"`
	N    int      `cbor:"2,keyasint"`
	Cols [][]byte `cbor:"3,keyasint"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = (cbor.EncOptions{Sort: cbor.SortNone}).EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{MaxNestedLevels: 8, MaxArrayElements: 16}).DecMode(); err != nil {
		panic(err)
	}
}

func marshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("history: encode %T: %v", v, err)) // plain structs: cannot fail
	}
	return b
}

func unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("history: decode %T: %w", v, err)
	}
	return nil
}

func encodeRows(step int64, rows []aggRow) []byte {
	cols := make([]*chunkenc.XORChunk, 5)
	apps := make([]chunkenc.Appender, 5)
	for i := range cols {
		cols[i] = chunkenc.NewXORChunk()
		apps[i], _ = cols[i].Appender()
	}
	for _, r := range rows {
		for i, v := range [5]float64{r.Min, r.Max, r.Sum, r.Count, r.Last} {
			apps[i].Append(0, r.T, v)
		}
	}
	b := aggBlock{Step: step, N: len(rows), Cols: make([][]byte, 5)}
	for i, c := range cols {
		b.Cols[i] = c.Bytes()
	}
	return marshal(&b)
}

func decodeRows(data []byte) ([]aggRow, error) {
	var b aggBlock
	if err := unmarshal(data, &b); err != nil {
		return nil, err
	}
	if len(b.Cols) != 5 || b.N < 0 || b.N > 1<<16 {
		return nil, fmt.Errorf("history: malformed aggregate block (%d columns, %d rows)", len(b.Cols), b.N)
	}
	rows := make([]aggRow, b.N)
	for i, col := range b.Cols {
		it := chunkenc.NewXORChunk()
		it.Reset(col)
		iter := it.Iterator(nil)
		k := 0
		for iter.Next() == chunkenc.ValFloat && k < b.N {
			t, v := iter.At()
			r := &rows[k]
			r.T = t
			switch i {
			case 0:
				r.Min = v
			case 1:
				r.Max = v
			case 2:
				r.Sum = v
			case 3:
				r.Count = v
			case 4:
				r.Last = v
			}
			k++
		}
		if err := iter.Err(); err != nil {
			return nil, fmt.Errorf("history: aggregate column %d: %w", i, err)
		}
		if k != b.N {
			return nil, fmt.Errorf("history: aggregate column %d holds %d rows, want %d", i, k, b.N)
		}
	}
	return rows, nil
}

// mergeRows merges sorted rows b into sorted rows a, combining rows of
// one step; b is the newer data (its last wins).
func mergeRows(a, b []aggRow) []aggRow {
	out := make([]aggRow, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].T < b[j].T):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].T < a[i].T:
			out = append(out, b[j])
			j++
		default:
			r := a[i]
			r.add(b[j])
			out = append(out, r)
			i++
			j++
		}
	}
	return out
}

// rollup groups sorted rows (or samples as rows) into steps of step ms.
func rollup(rows []aggRow, step int64) []aggRow {
	var out []aggRow
	for _, r := range rows {
		t := floorDiv(r.T, step) * step
		if n := len(out); n > 0 && out[n-1].T == t {
			out[n-1].add(r)
			continue
		}
		r.T = t
		out = append(out, r)
	}
	return out
}

// decodeChunk calls fn for every sample of a raw chunk.
func decodeChunk(data []byte, fn func(t int64, v float64)) error {
	c := chunkenc.NewXORChunk()
	c.Reset(data)
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		fn(it.At())
	}
	return it.Err()
}
