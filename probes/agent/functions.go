package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// FunctionInfo declares a function in the inventory (docs/mqtt.md): its
// name, what it does and JSON Schemas of its arguments and result.
type FunctionInfo struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Args        json.RawMessage `json:"args,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// function is one operation the agent offers.
type function struct {
	FunctionInfo
	run func(ctx context.Context, c *call) (any, error)
}

// call is one invocation. A function may set after to act once its
// successful result has been acknowledged (reboot does).
type call struct {
	job      string
	args     json.RawMessage
	deadline time.Time
	after    func(ctx context.Context) error
}

// ErrRebootNotAllowed fails reboot on an agent started without
// --allow-reboot.
var ErrRebootNotAllowed = errors.New("reboot not allowed: the agent runs without --allow-reboot")

// ErrInvalidArgs is wrapped by errors about a function's arguments.
var ErrInvalidArgs = errors.New("invalid args")

// decodeArgs decodes a function's args strictly into v: an unknown key is an
// error, so an operator's typo fails instead of being ignored.
func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := strictUnmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgs, err)
	}
	return nil
}

// functions returns the agent's functions, in the order the inventory
// declares them.
func (a *Agent) functions() []*function {
	return []*function{
		{FunctionInfo{"ping", "Answer at once with the device's time; proves the command path works.",
			schema(`{"type":"object","additionalProperties":false}`),
			schema(`{"type":"object","properties":{"pong":{"type":"boolean"},"time":{"type":"string","format":"date-time"}}}`)},
			a.ping},
		{FunctionInfo{"reboot", "Reboot the device after acknowledging. Refused unless the agent runs with --allow-reboot.",
			schema(`{"type":"object","additionalProperties":false}`),
			schema(`{"type":"object","properties":{"rebooting":{"type":"boolean"}}}`)},
			a.reboot},
		{FunctionInfo{"set-config", "Change one agent setting; it takes effect at once and persists across restarts.",
			schema(`{"type":"object","required":["key","value"],"additionalProperties":false,"properties":{` +
				`"key":{"enum":["telemetry_interval","inventory_interval"]},` +
				`"value":{"oneOf":[{"type":"string","description":"Go duration, e.g. 45s"},{"type":"number","description":"seconds"}]}}}`),
			schema(`{"type":"object","description":"the settings stored by set-config","properties":{` +
				`"telemetry_interval":{"type":"string"},"inventory_interval":{"type":"string"}}}`)},
			a.setConfig},
		{FunctionInfo{"run-script", "Run an allow-listed executable from the agent's scripts directory, with bounded time and output.",
			schema(`{"type":"object","required":["name"],"additionalProperties":false,"properties":{` +
				`"name":{"type":"string","description":"file name inside the scripts directory; no path"},` +
				`"args":{"type":"array","items":{"type":"string"},"maxItems":64},` +
				`"timeout":{"oneOf":[{"type":"string"},{"type":"number"}],"description":"default 60s, at most the job deadline"}}}`),
			schema(`{"type":"object","properties":{"exit_code":{"type":"integer"},"stdout":{"type":"string"},"stderr":{"type":"string"},` +
				`"stdout_truncated":{"type":"boolean"},"stderr_truncated":{"type":"boolean"},"timed_out":{"type":"boolean"},"duration_ms":{"type":"integer"}}}`)},
			a.runScript},
		{FunctionInfo{"collect-logs", "Return the last lines of the device's system logs and journal.",
			schema(`{"type":"object","additionalProperties":false,"properties":{"lines":{"type":"integer","minimum":1,"maximum":5000,"default":200}}}`),
			schema(`{"type":"object","properties":{"sources":{"type":"array","items":{"type":"object","properties":{` +
				`"source":{"type":"string"},"lines":{"type":"array","items":{"type":"string"}},"truncated":{"type":"boolean"},"error":{"type":"string"}}}}}}`)},
			a.collectLogs},
		a.installFunction(),
	}
}

func schema(s string) json.RawMessage {
	if !json.Valid([]byte(s)) {
		panic("agent: invalid built-in schema: " + s)
	}
	return json.RawMessage(s)
}

// FunctionInfos returns the declarations of the agent's functions, as the
// inventory sends them.
func (a *Agent) FunctionInfos() []FunctionInfo {
	fs := a.functions()
	out := make([]FunctionInfo, len(fs))
	for i, f := range fs {
		out[i] = f.FunctionInfo
	}
	return out
}

func (a *Agent) ping(_ context.Context, c *call) (any, error) {
	if err := decodeArgs(c.args, &struct{}{}); err != nil {
		return nil, err
	}
	return map[string]any{"pong": true, "time": time.Now().UTC().Format(time.RFC3339)}, nil
}

// reboot answers first and reboots after: the worker runs c.after once the
// result is acknowledged (or after afterAckTimeout; it is on disk anyway).
func (a *Agent) reboot(_ context.Context, c *call) (any, error) {
	if err := decodeArgs(c.args, &struct{}{}); err != nil {
		return nil, err
	}
	if !a.cfg.AllowReboot {
		return nil, ErrRebootNotAllowed
	}
	c.after = a.cfg.Reboot
	return map[string]any{"rebooting": true}, nil
}

// SystemReboot reboots the machine with systemctl reboot, or reboot where
// systemctl is missing. It is the default Config.Reboot.
func SystemReboot(ctx context.Context) error {
	if path, err := exec.LookPath("systemctl"); err == nil {
		out, err := exec.CommandContext(ctx, path, "reboot").CombinedOutput()
		if err == nil {
			return nil
		}
		if _, lerr := exec.LookPath("reboot"); lerr != nil {
			return fmt.Errorf("systemctl reboot: %v: %s", err, out)
		}
	}
	out, err := exec.CommandContext(ctx, "reboot").CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot: %v: %s", err, out)
	}
	return nil
}

func (a *Agent) setConfig(_ context.Context, c *call) (any, error) {
	var args struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := decodeArgs(c.args, &args); err != nil {
		return nil, err
	}
	if args.Key == "" || len(args.Value) == 0 {
		return nil, fmt.Errorf("%w: key and value are required", ErrInvalidArgs)
	}
	stored, err := a.settings.set(args.Key, args.Value)
	if err != nil {
		return nil, err
	}
	a.log.Info("setting changed", "key", args.Key, "value", string(args.Value))
	return stored, nil
}
