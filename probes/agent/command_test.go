package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeCommand(t *testing.T) {
	c, err := DecodeCommand([]byte(`{"job":"j01hv","function":"ping","args":{},"deadline":"2026-11-23T10:05:00Z","extra":1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 23, 10, 5, 0, 0, time.UTC)
	if c.Job != "j01hv" || c.Function != "ping" || string(c.Args) != "{}" || !c.Deadline.Equal(want) {
		t.Fatalf("decoded %+v", c)
	}
	c, err = DecodeCommand([]byte(`{"function":"ping","args":null}`))
	if err != nil || c.Args != nil || !c.Deadline.IsZero() {
		t.Fatalf("minimal command: %+v, %v", c, err)
	}
	for _, bad := range []string{
		``, `null`, `[]`, `{"job":"j1"}`, `{"function":""}`, `{"function":"a/b"}`,
		`{"function":"ping","job":"a/b"}`, `{"function":"ping","job":"#"}`,
		`{"function":"ping","args":[1]}`, `{"function":"ping","args":"x"}`,
		`{"function":"ping","deadline":"tomorrow"}`, `{"function":"ping","deadline":1764000000000}`,
		`{"function":"ping"} trailing`, `{"function":"ping","job":"` + strings.Repeat("j", 200) + `"}`,
		`{"function":"ping","pad":"` + strings.Repeat("x", maxCommandBytes) + `"}`,
	} {
		if _, err := DecodeCommand([]byte(bad)); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("DecodeCommand(%.60q) = %v, want ErrInvalidCommand", bad, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"job":"j01hv","function":"ping","args":{},"deadline":"2026-11-23T10:05:00Z"}`,
		`{"job":"j2","function":"run-script","args":{"name":"x.sh","args":["a"],"timeout":"5s"}}`,
		`{"function":"set-config","args":{"key":"telemetry_interval","value":45}}`,
		`{"function":"ping","args":null,"deadline":""}`,
		`{"function":"\u0000"}`, `[`, `{"function":"a","args":{"a":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := DecodeCommand(payload)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v does not wrap ErrInvalidCommand", err)
			}
			return
		}
		if validTopicSegment(c.Function) != nil {
			t.Fatalf("accepted function %q", c.Function)
		}
		if c.Job != "" && validTopicSegment(c.Job) != nil {
			t.Fatalf("accepted job %q", c.Job)
		}
		if c.Args != nil && (!json.Valid(c.Args) || c.Args[0] != '{') {
			t.Fatalf("accepted args %q", c.Args)
		}
		// What was accepted encodes again.
		if _, err := json.Marshal(c); err != nil {
			t.Fatalf("re-encoding %+v: %v", c, err)
		}
	})
}
