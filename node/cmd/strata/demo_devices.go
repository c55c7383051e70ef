package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
)

// The simulated equipment of a probe: its site, two production lines (the
// enrollment tokens' groups), and three kinds of device in turn.
var (
	demoSites = map[string]string{"probe-a": "lyon", "probe-b": "porto"}
	demoLines = []string{"line-1", "line-2"}
	demoKinds = []demoKind{
		{kind: "pump", model: "pump-x200", vars: []string{"temperature", "pressure", "flow"}},
		{kind: "valve", model: "valve-v10", vars: []string{"position", "pressure"}},
		{kind: "meter", model: "meter-m3", vars: []string{"flow", "temperature"}},
	}
)

type demoKind struct {
	kind, model string
	vars        []string
}

// demoDevice is simulated device i of a probe.
type demoDevice struct {
	i          int
	site, line string
	kind       demoKind
}

func newDemoDevice(probe string, i int) demoDevice {
	return demoDevice{i: i, site: demoSites[probe], line: demoLines[i%len(demoLines)], kind: demoKinds[i%len(demoKinds)]}
}

// hardwareID names the device as a technician would: lyon-pump-007.
func (d demoDevice) hardwareID() string {
	return fmt.Sprintf("%s-%s-%03d", d.site, d.kind.kind, d.i)
}

func (d demoDevice) labels() map[string]string {
	return map[string]string{"site": d.site, "line": d.line, "model": d.kind.model, "kind": d.kind.kind}
}

// demoFunctions are the functions every simulated device declares; the
// simulator answers each call with {"echo": args}.
var demoFunctions = []map[string]any{
	{"name": "ping", "description": "check that the device answers"},
	{"name": "reboot", "description": "restart the controller",
		"args": map[string]any{"type": "object", "properties": map[string]any{
			"delay_s": map[string]any{"type": "integer", "minimum": 0, "maximum": 3600, "description": "seconds to wait"}}}},
	{"name": "set-setpoint", "description": "change the control setpoint",
		"args": map[string]any{"type": "object", "required": []string{"value"}, "properties": map[string]any{
			"value": map[string]any{"type": "number", "description": "new setpoint"}}}},
}

// inventory is what the device publishes on connecting.
func (d demoDevice) inventory() []byte {
	b, _ := json.Marshal(map[string]any{
		"hostname": d.hardwareID(), "model": d.kind.model, "serial": fmt.Sprintf("SN-%s-%05d", d.site, 10007*d.i%100000),
		"firmware": fmt.Sprintf("2.%d.%d", d.i%3+3, d.i%7), "os": "linux", "arch": "arm64",
		"functions": demoFunctions,
	})
	return b
}

// appendTelemetry appends message seq: each variable follows a slow wave
// of its own around a plausible value.
func (d demoDevice) appendTelemetry(b []byte, seq uint64, now time.Time) []byte {
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	phase := float64(seq)/12 + float64(d.i)
	for k, v := range d.kind.vars {
		base, amp := demoRange(v)
		x := base + amp*math.Sin(phase+float64(k))
		b = append(b, `,"`...)
		b = append(b, v...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, math.Round(x*10)/10, 'f', -1, 64)
	}
	return append(b, '}')
}

func demoRange(v string) (base, amp float64) {
	switch v {
	case "temperature":
		return 45, 8
	case "pressure":
		return 3.2, 0.4
	case "flow":
		return 120, 25
	case "position":
		return 50, 40
	}
	return 0, 1
}

// demoCredentialsFile keeps a probe's devices' credentials, so a demo
// started again on the same folder keeps its devices.
const demoCredentialsFile = "demo-devices.jsonl"

// enrollDemoDevices returns the credentials of n devices of probe nd:
// those kept from an earlier run, and the rest enrolled through the
// probe's API (POST /api/v1/enroll) with one token per line. Each new
// device's context then gets its labels (site, line, model, kind).
func enrollDemoDevices(ctx context.Context, nd *demoNode, n int, log *slog.Logger) ([]sim.Credentials, error) {
	path := filepath.Join(nd.dir, demoCredentialsFile)
	creds, err := sim.LoadCredentialsFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if len(creds) >= n {
		return creds[:n], nil
	}
	tokens := map[string]string{}
	for _, line := range demoLines {
		t, err := nd.admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: line, TTL: time.Hour})
		if err != nil {
			return nil, fmt.Errorf("%s: enrollment token: %w", nd.spec.name, err)
		}
		tokens[line] = t.Secret
	}
	have := len(creds)
	creds = append(creds, make([]sim.Credentials, n-have)...)
	// A few at a time: each enrollment is a durable write on the probe.
	const workers = 8
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				if errs[w] != nil {
					continue
				}
				creds[i], errs[w] = enrollDemoDevice(ctx, nd, newDemoDevice(nd.spec.name, i), tokens)
			}
		})
	}
	for i := have; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := sim.SaveCredentialsFile(path, creds); err != nil {
		return nil, err
	}
	log.Info("demo devices enrolled", "probe", nd.spec.name, "new", n-have, "kept", have)
	return creds, nil
}

func enrollDemoDevice(ctx context.Context, nd *demoNode, d demoDevice, tokens map[string]string) (sim.Credentials, error) {
	e, err := nd.admin.Enroll(ctx, client.EnrollRequest{Token: tokens[d.line], HardwareID: d.hardwareID()})
	if err != nil {
		return sim.Credentials{}, fmt.Errorf("%s: enroll %s: %w", nd.spec.name, d.hardwareID(), err)
	}
	if _, _, err := nd.admin.PutContext(ctx, e.Path, client.ContextUpdate{Labels: d.labels()}); err != nil {
		return sim.Credentials{}, fmt.Errorf("%s: label %s: %w", nd.spec.name, e.Path, err)
	}
	return sim.Credentials{Enrollment: apitypes.Enrollment(*e), HardwareID: d.hardwareID()}, nil
}

// newDemoFleet is the simulated fleet of probe nd: devices that publish
// telemetry at rate messages/s in all and answer every function call.
func newDemoFleet(nd *demoNode, creds []sim.Credentials, rate float64, log *slog.Logger) (*sim.Fleet, error) {
	devs := make([]demoDevice, len(creds))
	for i := range devs {
		devs[i] = newDemoDevice(nd.spec.name, i)
	}
	cfg := sim.DefaultConfig()
	cfg.Devices = len(creds)
	cfg.Credentials = creds
	cfg.Rate = rate
	cfg.ConnectRate = 500
	cfg.ConnectConcurrency = 32
	cfg.Payload = func(b []byte, i int, seq uint64, now time.Time) []byte { return devs[i].appendTelemetry(b, seq, now) }
	cfg.Inventory = func(i int) []byte { return devs[i].inventory() }
	cfg.Logger = log.With("probe", nd.spec.name)
	return sim.NewFleet(cfg)
}
