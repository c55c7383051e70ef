package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// HistoryQuery is a history read (GET /api/v1/history/{path}); empty
// fields take the server's defaults. From and To are RFC 3339 times or
// unix milliseconds, Step a duration ("1m") or milliseconds.
type HistoryQuery struct {
	Var      string
	From, To string
	Step     string
	Agg      string // avg, min, max, last, count
}

// History is a variable's time series: Points are [unix ms, value]
// pairs on the wire.
type History struct {
	Path   string         `json:"path"`
	Var    string         `json:"var"`
	From   int64          `json:"from"`
	To     int64          `json:"to"`
	Step   int64          `json:"step,omitempty"`
	Agg    string         `json:"agg,omitempty"`
	Points []HistoryPoint `json:"points"`
}

// HistoryPoint is one point: T in unix milliseconds; V nil where the
// value is not a finite number.
type HistoryPoint struct {
	T int64
	V *float64
}

// UnmarshalJSON reads a [ms, value] pair.
func (p *HistoryPoint) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if len(pair) != 2 {
		return fmt.Errorf("history point %s: want [ms, value]", b)
	}
	if err := json.Unmarshal(pair[0], &p.T); err != nil {
		return fmt.Errorf("history point %s: %w", b, err)
	}
	return json.Unmarshal(pair[1], &p.V)
}

// MarshalJSON writes a [ms, value] pair.
func (p HistoryPoint) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]any{p.T, p.V})
}

// History reads the time series of a variable of the context at path.
func (c *Client) History(ctx context.Context, path string, q HistoryQuery) (*History, error) {
	v := url.Values{"var": {q.Var}}
	for k, s := range map[string]string{"from": q.From, "to": q.To, "step": q.Step, "agg": q.Agg} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var h History
	if err := c.do(ctx, http.MethodGet, "/api/v1/history"+contextPath(path), v, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
