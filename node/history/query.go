package history

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/model"
)

// Aggregations a query with a step may ask for.
const (
	AggAvg   = "avg"
	AggMin   = "min"
	AggMax   = "max"
	AggLast  = "last"
	AggCount = "count"
)

// Query bounds of ParseQuery.
const (
	// DefaultRange is the span read when from is not given.
	DefaultRange = time.Hour
	// MinStep is the smallest step.
	MinStep = time.Second
	// DefaultMaxPoints bounds the points of one answer.
	DefaultMaxPoints = 100_000
	maxVarLen        = 256
)

// ErrTooManyPoints refuses a raw read whose range holds more points than
// an answer may carry; the caller gives a step (or a shorter range).
var ErrTooManyPoints = fmt.Errorf("%w: too many points", model.ErrInvalid)

// Query is one history read: variable Var of a context between From and
// To (unix milliseconds, both included), raw when Step is 0, else one
// point per step of Agg.
type Query struct {
	Var      string
	From, To int64
	Step     int64 // ms; 0: raw points
	Agg      string
}

// ParseQuery reads a query from URL parameters (var, from, to, step,
// agg) as of now. from and to are RFC 3339 times or unix milliseconds;
// to defaults to now and from to DefaultRange before to. step is a Go
// duration ("1m") or milliseconds, at least MinStep; agg is one of avg
// (the default with a step), min, max, last, count, and needs a step.
// A range of more than maxPoints steps is refused. Every error wraps
// model.ErrInvalid and names the parameter.
func ParseQuery(v url.Values, now time.Time, maxPoints int) (Query, error) {
	if maxPoints <= 0 {
		maxPoints = DefaultMaxPoints
	}
	for k, vs := range v {
		switch k {
		case "var", "from", "to", "step", "agg":
			if len(vs) != 1 {
				return Query{}, fmt.Errorf("%w: parameter %s given %d times", model.ErrInvalid, k, len(vs))
			}
		default:
			return Query{}, fmt.Errorf("%w: unknown parameter %q (want var, from, to, step, agg)", model.ErrInvalid, k)
		}
	}
	q := Query{Var: v.Get("var")}
	switch {
	case q.Var == "":
		return Query{}, fmt.Errorf("%w: var is required (the variable's name)", model.ErrInvalid)
	case len(q.Var) > maxVarLen:
		return Query{}, fmt.Errorf("%w: var is longer than %d bytes", model.ErrInvalid, maxVarLen)
	}
	if err := model.ValidateName(q.Var); err != nil {
		return Query{}, fmt.Errorf("%w: var: %v", model.ErrInvalid, err)
	}
	var err error
	q.To = now.UnixMilli()
	if s := v.Get("to"); s != "" {
		if q.To, err = parseTime(s); err != nil {
			return Query{}, fmt.Errorf("%w: to: %v", model.ErrInvalid, err)
		}
	}
	q.From = q.To - DefaultRange.Milliseconds()
	if s := v.Get("from"); s != "" {
		if q.From, err = parseTime(s); err != nil {
			return Query{}, fmt.Errorf("%w: from: %v", model.ErrInvalid, err)
		}
	}
	if q.From < minTime {
		return Query{}, fmt.Errorf("%w: from: before year 1", model.ErrInvalid)
	}
	if q.From > q.To {
		return Query{}, fmt.Errorf("%w: from (%s) is after to (%s)", model.ErrInvalid, fmtMs(q.From), fmtMs(q.To))
	}
	if s := v.Get("step"); s != "" {
		d, err := parseStep(s)
		if err != nil {
			return Query{}, fmt.Errorf("%w: step: %v", model.ErrInvalid, err)
		}
		q.Step = d
		if n := (q.To-q.From)/q.Step + 1; n > int64(maxPoints) {
			return Query{}, fmt.Errorf("%w: step %s over %s..%s makes %d points, more than %d: give a larger step or a shorter range",
				model.ErrInvalid, time.Duration(q.Step)*time.Millisecond, fmtMs(q.From), fmtMs(q.To), n, maxPoints)
		}
	}
	q.Agg = v.Get("agg")
	switch q.Agg {
	case "":
		if q.Step > 0 {
			q.Agg = AggAvg
		}
	case AggAvg, AggMin, AggMax, AggLast, AggCount:
		if q.Step == 0 {
			return Query{}, fmt.Errorf("%w: agg %s needs a step", model.ErrInvalid, q.Agg)
		}
	default:
		return Query{}, fmt.Errorf("%w: agg %q is not one of avg, min, max, last, count", model.ErrInvalid, q.Agg)
	}
	return q, nil
}

// Values encodes q as URL parameters with absolute times, for a read
// routed to another node (ParseQuery reads them back unchanged).
func (q Query) Values() url.Values {
	v := url.Values{"var": {q.Var}, "from": {strconv.FormatInt(q.From, 10)}, "to": {strconv.FormatInt(q.To, 10)}}
	if q.Step > 0 {
		v.Set("step", strconv.FormatInt(q.Step, 10))
		v.Set("agg", q.Agg)
	}
	return v
}

// Limits of times: years 0001..9999, as RFC 3339 has them.
const (
	minTime = -62135596800000
	maxTime = 253402300799999
)

func parseTime(s string) (int64, error) {
	if isDigits(strings.TrimPrefix(s, "-")) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < minTime || ms > maxTime {
			return 0, fmt.Errorf("%q is out of range (unix milliseconds of years 1..9999)", s)
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-07T10:00:00Z) nor unix milliseconds", s)
	}
	if ms := t.UnixMilli(); ms >= minTime && ms <= maxTime {
		return ms, nil
	}
	return 0, fmt.Errorf("%q is out of range (years 1..9999)", s)
}

func parseStep(s string) (int64, error) {
	var ms int64
	if isDigits(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is out of range", s)
		}
		ms = n
	} else {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is neither a duration (30s, 1m, 1h) nor milliseconds", s)
		}
		if d%time.Millisecond != 0 {
			return 0, fmt.Errorf("%q is not a whole number of milliseconds", s)
		}
		ms = d.Milliseconds()
	}
	if ms < MinStep.Milliseconds() {
		return 0, fmt.Errorf("%q is shorter than %s", s, MinStep)
	}
	if ms > maxTime-minTime {
		return 0, errors.New("step is longer than any range")
	}
	return ms, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func fmtMs(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
