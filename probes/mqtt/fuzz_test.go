package mqtt

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// Every decoder of device payloads either fails with errPayload or yields
// mutations the model accepts: it never panics and never produces input
// the state machine would have to reject for shape reasons.

var fuzzSeeds = []string{
	`{"temp": 21.5, "ts": "2026-11-23T10:00:00Z"}`,
	`[{"a": 1, "ts": 1764000000000}, {"b": "x"}]`,
	`{"hostname": "h", "os": "linux", "functions": [{"name": "ping", "args": {"type": "object"}}]}`,
	`{"name": "door", "level": "alert", "payload": {"d": 2}}`,
	`{"status": "succeeded", "result": {"pong": true}}`,
	`{"": 1}`, `{"a/b": 1}`, `[]`, `[1]`, `null`, `{"ts": -1}`, `{"ts": "yesterday"}`,
	`{"functions": [{"name": ""}]}`, `{"level": "panic"}`, `{"status": "ok"}`, "\xff\xfe",
}

func FuzzDecodeTelemetry(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		points, err := DecodeTelemetry(data, now)
		if err != nil {
			if !errors.Is(err, errPayload) {
				t.Fatalf("error not marked as a payload error: %v", err)
			}
			return
		}
		for _, vars := range points {
			m := model.Mutation{Op: model.OpPut, Path: "/devices/d", Variables: vars}
			if err := m.Validate(); err != nil {
				t.Fatalf("decoded telemetry the model refuses: %v", err)
			}
		}
	})
}

func FuzzDecodeInventory(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := DecodeInventory(data, time.Now())
		if err != nil {
			if !errors.Is(err, errPayload) {
				t.Fatalf("error not marked as a payload error: %v", err)
			}
			return
		}
		m := model.Mutation{Op: model.OpPut, Path: "/devices/d", Variables: inv.Variables, Labels: inv.Labels,
			Functions: inv.Functions, SetFunctions: inv.SetFunctions}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded inventory the model refuses: %v", err)
		}
	})
}

func FuzzDecodeEvents(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := DecodeEvents(data, time.Now())
		if err != nil {
			if !errors.Is(err, errPayload) {
				t.Fatalf("error not marked as a payload error: %v", err)
			}
			return
		}
		for i := range evs {
			m := model.Mutation{Op: model.OpEvent, Path: "/devices/d", Event: &evs[i]}
			if err := m.Validate(); err != nil {
				t.Fatalf("decoded event the model refuses: %v", err)
			}
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResult(data)
		if err != nil {
			if !errors.Is(err, errPayload) {
				t.Fatalf("error not marked as a payload error: %v", err)
			}
			return
		}
		if r.Result != nil && !json.Valid(r.Result) {
			t.Fatalf("invalid result JSON %q", r.Result)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"strata/d1/telemetry", "strata/d1/cmd/j1/result", "strata/d1/cmd/j1", "strata/d2/x", "strata/d1/cmd//result", "strata/d1/cmd/+/result"} {
		f.Add("d1", s)
	}
	f.Fuzz(func(t *testing.T, id, topic string) {
		kind, job, ok := parseTopic(id, topic)
		if !ok {
			return
		}
		if (kind == topicResult || kind == topicCommand) && !validJobID(job) {
			t.Fatalf("job %q accepted", job)
		}
		if kind == topicCommand && topic != TopicPrefix(id)+"cmd/"+job {
			t.Fatalf("command topic %q for job %q", topic, job)
		}
	})
}

// The flat fast path of telemetry decoding gives the general path's result
// wherever it takes a payload.
func FuzzDecodeFlat(f *testing.F) {
	for _, s := range append(fuzzSeeds,
		`{"ts":1764000000000,"seq":12,"v0":37.2,"v1":-0.5e3,"s":"x y","b":true,"n":null,"pad":"xxxx"}`,
		` {"a": 1 , "a" : 2 }`, `{}`, `{"ts": "2026-11-23T10:00:00.5+02:00", "é": "\xff"}`, `{"a": 1e400}`,
		`{"ts": 1e400}`, `{"ts": null}`, `{"a": 01}`, `{"a": -}`, `{"a": 1.}`, `{"a": "\u0041"}`, `{"a\"": 1}`,
		`{"a": 1}x`, `{"a": 1,}`, "{\"a\":\t\"b\"}\n", `{"a":tru}`, `{"ts": 1, "ts": "x"}`,
	) {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ns := names{} // shared across inputs, as a connection's
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFlatNames(data, now, ns)
		if len(ns) > maxNames {
			t.Fatalf("%d names kept", len(ns))
		}
		if !ok {
			return
		}
		points, err := decodeTelemetry(data, now)
		if err != nil {
			t.Fatalf("fast path took a payload the general path refuses (%v): %q", err, data)
		}
		var want map[string]model.Variable
		if len(points) == 1 {
			want = points[0]
		} else if len(points) > 1 {
			t.Fatalf("fast path took an array: %q", data)
		}
		if len(fast) != len(want) {
			t.Fatalf("%q: fast %v, general %v", data, fast, want)
		}
		for k, v := range want {
			g, ok := fast[k]
			if !ok || string(g.Value) != string(v.Value) || g.Type != v.Type || !g.Time.Equal(v.Time) ||
				g.Time.Location() != v.Time.Location() || g.Quality != v.Quality {
				t.Fatalf("%q: variable %q: fast %+v, general %+v", data, k, g, v)
			}
		}
	})
}
