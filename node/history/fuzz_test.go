package history

import (
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// FuzzParseQuery: any query string either parses into a query within the
// bounds (var valid, from <= to, step at least MinStep and at most
// max points of it, agg known and only with a step), which Values encodes
// back to the same query, or fails with model.ErrInvalid.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"var=temp", "var=temp&from=2026-12-07T10:00:00Z&to=2026-12-07T11:00:00Z",
		"var=temp&from=0&to=86400000&step=1m&agg=max", "var=t&step=1s", "var=t&agg=avg",
		"var=t&from=-62135596800000&to=253402300799999&step=1000", "var=a%2Fb", "var=t&step=1.5s",
		"var=t&from=x", "var=t&var=u", "x=1", "var=t&step=9223372036854775807",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v, now, 1000)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("%q: error %v does not wrap ErrInvalid", raw, err)
			}
			return
		}
		if q.Var == "" || q.From > q.To || (q.Step != 0 && (q.Step < 1000 || (q.To-q.From)/q.Step+1 > 1000)) {
			t.Fatalf("%q: out of bounds: %+v", raw, q)
		}
		if (q.Step == 0) != (q.Agg == "") {
			t.Fatalf("%q: step %d with agg %q", raw, q.Step, q.Agg)
		}
		back, err := ParseQuery(q.Values(), now.Add(time.Hour), 1000)
		if err != nil || back != q {
			t.Fatalf("%q: %+v encodes to %v, read back as %+v, %v", raw, q, q.Values().Encode(), back, err)
		}
	})
}

// FuzzAppendJSON: the answer's points are valid JSON that reads back as
// the points (NaN and infinities as null).
func FuzzAppendJSON(f *testing.F) {
	f.Add(int64(0), 1.5, 1.5, -0.0, 0.0)
	f.Fuzz(func(t *testing.T, t0 int64, a, b, c, d float64) {
		ps := []Point{{t0, a}, {t0 + 1, b}, {t0 + 2, c}, {t0 + 3, d}, {t0 + 4, d}}
		out := AppendJSON(nil, ps)
		var back [][2]*float64
		if err := json.Unmarshal(out, &back); err != nil || len(back) != len(ps) {
			t.Fatalf("%s: %v", out, err)
		}
		for i, p := range ps {
			got := back[i][1]
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				if got != nil {
					t.Fatalf("%v encoded as %v", p.V, *got)
				}
				continue
			}
			if got == nil || *got != p.V || math.Signbit(*got) != math.Signbit(p.V) {
				t.Fatalf("point %d: %v read back as %v (%s)", i, p.V, got, out)
			}
		}
	})
}
