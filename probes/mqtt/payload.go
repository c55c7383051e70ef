package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// Topic kinds under strata/<id>/ (docs/mqtt.md).
type topicKind uint8

const (
	topicUnknown topicKind = iota
	topicTelemetry
	topicInventory
	topicEvents
	topicStatus
	topicResult  // cmd/<job>/result
	topicCommand // cmd/<job>: node → device only
)

// TopicPrefix is the topic prefix of device id.
func TopicPrefix(id string) string { return "strata/" + id + "/" }

// DevicePath is the context of device id.
func DevicePath(id string) model.Path { return model.Path("/devices/" + id) }

// parseTopic classifies a topic of device id and returns the job id of
// command topics. ok is false for a topic outside the device's prefix.
func parseTopic(id, topic string) (kind topicKind, job string, ok bool) {
	// topic starts with TopicPrefix(id), checked without building it
	rest, ok := strings.CutPrefix(topic, "strata/")
	if ok {
		rest, ok = strings.CutPrefix(rest, id)
	}
	if ok {
		rest, ok = strings.CutPrefix(rest, "/")
	}
	if !ok || id == "" {
		return topicUnknown, "", false
	}
	switch rest {
	case "telemetry":
		return topicTelemetry, "", true
	case "inventory":
		return topicInventory, "", true
	case "events":
		return topicEvents, "", true
	case "status":
		return topicStatus, "", true
	}
	if j, ok := strings.CutPrefix(rest, "cmd/"); ok {
		if jj, ok := strings.CutSuffix(j, "/result"); ok && validJobID(jj) {
			return topicResult, jj, true
		}
		if validJobID(j) {
			return topicCommand, j, true
		}
	}
	return topicUnknown, "", true
}

// validJobID accepts what can be one topic level and a record key.
func validJobID(j string) bool {
	return j != "" && len(j) <= 64 && !strings.ContainsAny(j, "/+#$\x00") && model.ValidateName(j) == nil
}

// Limits on one message's content.
const (
	MaxPoints = 1000 // telemetry points or events in one message
)

// errPayload marks a payload the node refuses; its text is the recorded
// reason.
var errPayload = errors.New("bad payload")

func payloadErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errPayload}, args...)...)
}

// objects splits a payload into one object or an array of objects.
func objects(data []byte, what string) ([]map[string]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, payloadErr("empty %s payload", what)
	}
	switch data[0] {
	case '{':
		var o map[string]json.RawMessage
		if err := json.Unmarshal(data, &o); err != nil {
			return nil, payloadErr("%s is not a JSON object: %v", what, err)
		}
		return []map[string]json.RawMessage{o}, nil
	case '[':
		var os []map[string]json.RawMessage
		if err := json.Unmarshal(data, &os); err != nil {
			return nil, payloadErr("%s is not an array of JSON objects: %v", what, err)
		}
		if len(os) > MaxPoints {
			return nil, payloadErr("more than %d %s items in one message", MaxPoints, what)
		}
		for i, o := range os {
			if o == nil {
				return nil, payloadErr("%s item %d is not an object", what, i)
			}
		}
		return os, nil
	}
	return nil, payloadErr("%s must be a JSON object or an array of objects", what)
}

// parseTS reads the reserved "ts" member: RFC 3339 or Unix milliseconds.
func parseTS(raw json.RawMessage, def time.Time) (time.Time, error) {
	if raw == nil {
		return def, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, payloadErr("ts: %v", err)
		}
		return t.UTC(), nil
	}
	var ms float64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return time.Time{}, payloadErr("ts must be an RFC 3339 string or Unix milliseconds")
	}
	if ms < 0 || ms > 1e14 {
		return time.Time{}, payloadErr("ts out of range")
	}
	return time.UnixMilli(int64(ms)).UTC(), nil
}

// variables turns the members of o (but skip) into variables at t.
func variables(o map[string]json.RawMessage, t time.Time, skip ...string) (map[string]model.Variable, error) {
	vars := make(map[string]model.Variable, len(o))
	for name, raw := range o {
		if contains(skip, name) {
			continue
		}
		if err := model.ValidateName(name); err != nil {
			return nil, payloadErr("variable name %q: %v", truncate(name, 64), err)
		}
		v, err := model.NewVariable(raw, t)
		if err != nil {
			return nil, payloadErr("variable %q: %w", name, err)
		}
		vars[name] = v
	}
	if len(vars) > model.MaxVariables {
		return nil, payloadErr("more than %d variables", model.MaxVariables)
	}
	return vars, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// DecodeTelemetry decodes a telemetry payload into points, each a set of
// variables stamped with its "ts" (default now).
func DecodeTelemetry(data []byte, now time.Time) ([]map[string]model.Variable, error) {
	return decodeTelemetryNames(data, now, nil)
}

// decodeTelemetryNames is DecodeTelemetry taking the names of the usual
// payload's variables from ns (see names).
func decodeTelemetryNames(data []byte, now time.Time, ns names) ([]map[string]model.Variable, error) {
	if vars, ok := decodeFlatNames(data, now, ns); ok {
		if vars == nil {
			return nil, nil
		}
		return []map[string]model.Variable{vars}, nil
	}
	return decodeTelemetry(data, now)
}

// decodeTelemetry is DecodeTelemetry's general path.
func decodeTelemetry(data []byte, now time.Time) ([]map[string]model.Variable, error) {
	objs, err := objects(data, "telemetry")
	if err != nil {
		return nil, err
	}
	points := make([]map[string]model.Variable, 0, len(objs))
	for _, o := range objs {
		t, err := parseTS(o["ts"], now)
		if err != nil {
			return nil, err
		}
		vars, err := variables(o, t, "ts")
		if err != nil {
			return nil, err
		}
		if len(vars) > 0 {
			points = append(points, vars)
		}
	}
	return points, nil
}

// Inventory is a decoded inventory payload.
type Inventory struct {
	Variables    map[string]model.Variable
	Labels       map[string]string // os, arch
	Functions    []model.Function
	SetFunctions bool
}

// DecodeInventory decodes an inventory payload (one object).
func DecodeInventory(data []byte, now time.Time) (Inventory, error) {
	objs, err := objects(data, "inventory")
	if err != nil {
		return Inventory{}, err
	}
	if len(objs) != 1 || bytes.TrimSpace(data)[0] != '{' {
		return Inventory{}, payloadErr("inventory must be one JSON object")
	}
	o := objs[0]
	var inv Inventory
	if raw, ok := o["functions"]; ok {
		if err := json.Unmarshal(raw, &inv.Functions); err != nil {
			return Inventory{}, payloadErr("functions must be an array of {name, description, args, result}: %v", err)
		}
		if len(inv.Functions) > model.MaxFunctions {
			return Inventory{}, payloadErr("more than %d functions", model.MaxFunctions)
		}
		seen := map[string]bool{}
		for i, f := range inv.Functions {
			if err := model.ValidateName(f.Name); err != nil {
				return Inventory{}, payloadErr("function %d name: %v", i, err)
			}
			if seen[f.Name] {
				return Inventory{}, payloadErr("function %q declared twice", f.Name)
			}
			seen[f.Name] = true
			for what, raw := range map[string]json.RawMessage{"argument": f.Args, "result": f.Result} {
				if len(raw) > 0 {
					if err := model.CheckValue(raw); err != nil {
						return Inventory{}, payloadErr("function %q: %s schema: %w", f.Name, what, err)
					}
				}
			}
		}
		inv.SetFunctions = true
	}
	if inv.Variables, err = variables(o, now, "functions"); err != nil {
		return Inventory{}, err
	}
	for _, k := range []string{"os", "arch"} {
		var s string
		if raw, ok := o[k]; ok && json.Unmarshal(raw, &s) == nil && s != "" && len(s) <= model.MaxLabelLen {
			if inv.Labels == nil {
				inv.Labels = map[string]string{}
			}
			inv.Labels[k] = s
		}
	}
	return inv, nil
}

// eventPayload is one event as a device sends it.
type eventPayload struct {
	Name    string          `json:"name"`
	Level   model.Level     `json:"level"`
	Payload json.RawMessage `json:"payload"`
	TS      json.RawMessage `json:"ts"`
}

// DecodeEvents decodes an events payload (one object or an array).
func DecodeEvents(data []byte, now time.Time) ([]model.Event, error) {
	objs, err := objects(data, "events")
	if err != nil {
		return nil, err
	}
	out := make([]model.Event, 0, len(objs))
	for i, o := range objs {
		b, _ := json.Marshal(o)
		var e eventPayload
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, payloadErr("event %d: %v", i, err)
		}
		if e.Level == "" {
			e.Level = model.LevelInfo
		}
		switch e.Level {
		case model.LevelInfo, model.LevelWarning, model.LevelAlert:
		default:
			return nil, payloadErr("event %d: level must be info, warning or alert", i)
		}
		if e.Name != "" {
			if err := model.ValidateName(e.Name); err != nil {
				return nil, payloadErr("event %d name: %v", i, err)
			}
		}
		if len(e.Payload) > model.MaxPayloadSize {
			return nil, payloadErr("event %d payload larger than %d bytes", i, model.MaxPayloadSize)
		}
		t, err := parseTS(e.TS, now)
		if err != nil {
			return nil, err
		}
		var pl json.RawMessage
		if len(e.Payload) > 0 && string(e.Payload) != "null" {
			if err := model.CheckValue(e.Payload); err != nil {
				return nil, payloadErr("event %d payload: %w", i, err)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, e.Payload); err != nil {
				return nil, payloadErr("event %d payload: %v", i, err)
			}
			pl = buf.Bytes()
		}
		out = append(out, model.Event{Name: e.Name, Level: e.Level, Payload: pl, Time: t})
	}
	return out, nil
}

// Command is a command the broker delivers to a device. Its payload on
// strata/<id>/cmd/<job> is apitypes.Command (see payload).
type Command struct {
	Job      string
	Function string
	Args     json.RawMessage
	Deadline time.Time
	// Tenant is the job's tenant, never sent: a command goes only to a
	// connection authenticated as a device of that tenant.
	Tenant string
}

// payload is the JSON the device receives.
func (c Command) payload() apitypes.Command {
	return apitypes.Command{Job: c.Job, Function: c.Function, Args: c.Args, Deadline: c.Deadline}
}

// Result is a device's answer on strata/<id>/cmd/<job>/result.
type Result = apitypes.CommandResult

// DecodeResult decodes a command result.
func DecodeResult(data []byte) (Result, error) {
	var r Result
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return Result{}, payloadErr("result is not a JSON object {status, result, error}: %v", err)
	}
	if dec.More() {
		return Result{}, payloadErr("trailing data after the result object")
	}
	switch r.Status {
	case "running", "succeeded", "failed":
	default:
		return Result{}, payloadErr("status must be running, succeeded or failed")
	}
	if len(r.Result) > 0 {
		if string(r.Result) == "null" {
			r.Result = nil
		} else {
			if err := model.CheckValue(r.Result); err != nil {
				return Result{}, payloadErr("result: %w", err)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, r.Result); err != nil {
				return Result{}, payloadErr("result: %v", err)
			}
			r.Result = buf.Bytes()
		}
	}
	return r, nil
}
