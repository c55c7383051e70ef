package mqtt

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/strata-dm/strata/model"
)

// Telemetry, inventory, events and results whose JSON values break the
// tree's rule (a number out of range, nesting past model's depth limit,
// invalid UTF-8, an unpaired surrogate), sent by a real client over TLS,
// are refused and counted, and store nothing, on the fast path and the
// general one; good values in other messages of the same connection still
// land.
func TestTelemetryRefusesBadValues(t *testing.T) {
	h := newHarness(t)
	h.cmds.pending["d1"] = []Command{{Job: "j1", Function: "f"}}
	c := h.mustConnect("d1", "s1")
	publish(t, c, "strata/d1/telemetry", 1, `{"good": 1}`)
	deep := strings.Repeat("[", 9998) + strings.Repeat("]", 9998)
	tooDeep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	bad := []struct{ topic, payload string }{
		{"telemetry", `{"bad": 1e999}`},                        // the fast path's kind of payload
		{"telemetry", `{"bad": -1E+400, "ts": 1764000000000}`}, // idem, with a ts
		{"telemetry", `{"bad": [1e999]}`},
		{"telemetry", "{\"bad\": \"caf\xe9\"}"},
		{"telemetry", `{"bad": "\udc00"}`},
		{"telemetry", `[{"good": 2}, {"bad": ` + tooDeep + `}]`},
		{"inventory", `{"bad": ` + deep[:1500] + deep[len(deep)-1500:] + `}`},
		{"inventory", `{"functions": [{"name": "f", "args": ` + tooDeep + `}]}`},
		{"events", `{"name": "e", "payload": {"x": 1e999}}`},
		{"events", "{\"name\": \"e\", \"payload\": \"\xff\"}"},
		{"cmd/j1/result", `{"status": "succeeded", "result": 1e999}`},
	}
	for _, b := range bad {
		publish(t, c, "strata/d1/"+b.topic, 1, b.payload)
	}
	publish(t, c, "strata/d1/telemetry", 1, `{"good": 3}`)
	if v, _ := h.variable("d1", "good"); v != "3" {
		t.Fatalf("good = %s after the bad messages, want 3", v)
	}
	ctx, err := h.model.Get(DevicePath("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := ctx.Variables["bad"]; ok {
		t.Errorf("bad stored: %s", v.Value)
	}
	if len(ctx.Functions) != 0 {
		t.Errorf("functions stored: %+v", ctx.Functions)
	}
	evs, _ := h.model.Events(DevicePath("d1"), model.EventQuery{})
	for _, e := range evs {
		if e.Name == "e" {
			t.Errorf("event stored: %s", e.Payload)
		}
	}
	h.cmds.mu.Lock()
	_, reported := h.cmds.results["j1"]
	h.cmds.mu.Unlock()
	if reported {
		t.Error("a result with a bad value was reported")
	}
	var m dto.Metric
	h.broker.metrics.rejected.WithLabelValues("invalid_value").Write(&m)
	if n := m.GetCounter().GetValue(); n != float64(len(bad)) {
		t.Errorf("strata_mqtt_rejected_total{reason=invalid_value} = %v, want %d", n, len(bad))
	}
	if !c.IsConnectionOpen() {
		t.Fatal("connection closed")
	}
}
