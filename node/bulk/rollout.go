package bulk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Rollout control (docs/jobs.md "Rollouts"). Every node applies a job's
// rollout to its own part: its waves are shares of its own devices, its
// thresholds count its own devices, its rate and concurrency bound its
// own dispatch. A node cut off from the one above keeps running within
// them.

// Bounds of a rollout.
const (
	MaxWaves      = 100
	MaxRate       = 100000 // device jobs a second
	MaxRateFactor = 100
)

// Quantity is a count of devices or a percentage of some number of
// devices: on the wire a whole number (a count) or a string "N%" (a
// percentage, 0 to 100, decimals allowed).
type Quantity struct {
	N       float64
	Percent bool
}

// Of is q of n devices, rounded up.
func (q Quantity) Of(n int) int {
	if !q.Percent {
		return int(q.N)
	}
	return int(math.Ceil(float64(n)*q.N/100 - 1e-9))
}

func (q Quantity) String() string {
	if q.Percent {
		return strconv.FormatFloat(q.N, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(int(q.N))
}

// MarshalJSON writes q as it is read.
func (q Quantity) MarshalJSON() ([]byte, error) {
	if q.Percent {
		return json.Marshal(q.String())
	}
	return []byte(strconv.Itoa(int(q.N))), nil
}

func parseQuantity(what string, raw json.RawMessage) (Quantity, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Quantity{}, invalidf("rollout %s: %v", what, err)
		}
		num, ok := strings.CutSuffix(s, "%")
		if !ok {
			return Quantity{}, invalidf("rollout %s %q: a percentage ends with %%; a count is a number", what, s)
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 100 || strings.TrimSpace(num) != num {
			return Quantity{}, invalidf("rollout %s %q: want a percentage from 0%% to 100%%", what, s)
		}
		return Quantity{N: f, Percent: true}, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > math.MaxInt32 {
		return Quantity{}, invalidf("rollout %s %s: want a count (a whole number, 0 or more) or a percentage such as \"5%%\"", what, raw)
	}
	return Quantity{N: float64(n)}, nil
}

// Rate paces a node's dispatch: PerSecond device jobs a second,
// multiplied by Factor each time Every more devices succeeded, up to Max.
type Rate struct {
	PerSecond float64 `json:"per_second"`
	Factor    float64 `json:"factor,omitempty"`
	Every     int     `json:"every,omitempty"`
	Max       float64 `json:"max_per_second,omitempty"`
}

// At is the rate once succeeded devices succeeded.
func (r Rate) At(succeeded int) float64 {
	v := r.PerSecond
	if r.Factor > 1 && r.Every > 0 {
		v *= math.Pow(r.Factor, float64(succeeded/r.Every))
	}
	limit := r.Max
	if limit <= 0 {
		limit = MaxRate
	}
	return math.Min(v, limit)
}

// Rollout is a parsed rollout object. The zero Rollout is one wave of
// every device, dispatched at once.
type Rollout struct {
	Waves            []Quantity `json:"waves,omitempty"`
	SuccessThreshold *Quantity  `json:"success_threshold,omitempty"`
	Approval         bool       `json:"approval,omitempty"`
	MaxFailures      *Quantity  `json:"max_failures,omitempty"`
	MinFinished      int        `json:"min_finished,omitempty"`
	Rate             *Rate      `json:"rate,omitempty"`
	MaxConcurrency   int        `json:"max_concurrency,omitempty"`
	Health           *Health    `json:"health,omitempty"`
}

type rolloutWire struct {
	Waves            []json.RawMessage `json:"waves"`
	SuccessThreshold json.RawMessage   `json:"success_threshold"`
	Approval         bool              `json:"approval"`
	MaxFailures      json.RawMessage   `json:"max_failures"`
	MinFinished      *int64            `json:"min_finished"`
	Rate             *Rate             `json:"rate"`
	MaxConcurrency   *int64            `json:"max_concurrency"`
	Health           json.RawMessage   `json:"health"`
}

// ParseRollout checks a rollout object (empty or null: none). Every
// error wraps model.ErrInvalid.
func ParseRollout(raw json.RawMessage) (Rollout, error) {
	var r Rollout
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return r, nil
	}
	var w rolloutWire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return r, invalidf("rollout: %v (fields: waves, success_threshold, approval, max_failures, min_finished, rate, max_concurrency, health)", err)
	}
	if dec.More() {
		return r, invalidf("rollout: one JSON object expected")
	}
	if len(w.Waves) > MaxWaves {
		return r, invalidf("rollout: more than %d waves", MaxWaves)
	}
	sum := 0.0
	for i, raw := range w.Waves {
		q, err := parseQuantity(fmt.Sprintf("wave %d", i+1), raw)
		if err != nil {
			return r, err
		}
		if q.N == 0 {
			return r, invalidf("rollout wave %d is empty", i+1)
		}
		if q.Percent {
			sum += q.N
			if sum > 100+1e-9 {
				return r, invalidf("rollout waves: the percentages add up to more than 100%%")
			}
		}
		r.Waves = append(r.Waves, q)
	}
	if w.SuccessThreshold != nil {
		q, err := parseQuantity("success_threshold", w.SuccessThreshold)
		if err != nil {
			return r, err
		}
		r.SuccessThreshold = &q
	}
	r.Approval = w.Approval
	if w.MaxFailures != nil {
		q, err := parseQuantity("max_failures", w.MaxFailures)
		if err != nil {
			return r, err
		}
		r.MaxFailures = &q
	}
	if w.MinFinished != nil {
		if *w.MinFinished < 0 || *w.MinFinished > math.MaxInt32 {
			return r, invalidf("rollout min_finished: want a count, 0 or more")
		}
		if r.MaxFailures == nil {
			return r, invalidf("rollout min_finished applies to max_failures, which is not given")
		}
		r.MinFinished = int(*w.MinFinished)
	}
	if w.Rate != nil {
		rt := *w.Rate
		switch {
		case !(rt.PerSecond > 0) || rt.PerSecond > MaxRate:
			return r, invalidf("rollout rate per_second: want more than 0, at most %d", MaxRate)
		case rt.Factor != 0 && (!(rt.Factor >= 1) || rt.Factor > MaxRateFactor):
			return r, invalidf("rollout rate factor: want 1 to %d", MaxRateFactor)
		case rt.Factor > 1 && rt.Every < 1:
			return r, invalidf("rollout rate: a factor needs every (the devices that succeed between two increases), 1 or more")
		case rt.Every < 0 || (rt.Every > 0 && rt.Factor <= 1):
			return r, invalidf("rollout rate every: needs a factor above 1")
		case rt.Max != 0 && (!(rt.Max >= rt.PerSecond) || rt.Max > MaxRate):
			return r, invalidf("rollout rate max_per_second: want per_second to %d", MaxRate)
		}
		r.Rate = &rt
	}
	if w.MaxConcurrency != nil {
		if *w.MaxConcurrency < 1 || *w.MaxConcurrency > math.MaxInt32 {
			return r, invalidf("rollout max_concurrency: want 1 or more")
		}
		r.MaxConcurrency = int(*w.MaxConcurrency)
	}
	if w.Health != nil {
		h, err := parseHealth(w.Health)
		if err != nil {
			return r, err
		}
		r.Health = h
	}
	return r, nil
}

// Bounds are the ends of r's waves over n devices: wave i is devices
// [Bounds[i-1], Bounds[i]) in the part's order. Devices the waves given do
// not cover form a last wave; every wave has an end, empty waves
// included, so that waves keep their numbers across nodes.
func (r Rollout) Bounds(n int) []int {
	var out []int
	end, pct := 0, 0.0
	for _, q := range r.Waves {
		if q.Percent {
			pct += q.N
			end = max(end, Quantity{N: pct, Percent: true}.Of(n))
		} else {
			end += int(q.N)
		}
		end = min(end, n)
		out = append(out, end)
	}
	if len(out) == 0 || end < n {
		out = append(out, n)
	}
	return out
}

// tripped tells whether failed failures out of finished devices exceed
// r's max_failures: "" if not, else why.
func (r Rollout) tripped(failed, finished int) string {
	if r.MaxFailures == nil || finished < r.MinFinished || finished == 0 {
		return ""
	}
	q := *r.MaxFailures
	if q.Percent {
		if float64(failed)*100 > q.N*float64(finished)+1e-9 {
			return fmt.Sprintf("%d of %d finished devices failed, more than max_failures %s", failed, finished, q)
		}
		return ""
	}
	if failed > int(q.N) {
		return fmt.Sprintf("%d devices failed, more than max_failures %s", failed, q)
	}
	return ""
}
