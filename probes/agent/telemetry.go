package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
)

// tsLayout is RFC 3339 with milliseconds, in UTC: the "ts" of telemetry
// points and events.
const tsLayout = "2006-01-02T15:04:05.000Z07:00"

// SampleTelemetry reads one telemetry point of this host: load1, load5,
// load15, mem_used_bytes, mem_used_percent, disk_used_percent (of the root
// file system), uptime_s, and ts, the sample time. A value that cannot be
// read is left out.
func SampleTelemetry(ctx context.Context, now time.Time) map[string]any {
	p := map[string]any{"ts": now.UTC().Format(tsLayout)}
	if l, err := load.AvgWithContext(ctx); err == nil {
		p["load1"], p["load5"], p["load15"] = l.Load1, l.Load5, l.Load15
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		p["mem_used_bytes"] = vm.Used
		p["mem_used_percent"] = round2(vm.UsedPercent)
	}
	if u, err := disk.UsageWithContext(ctx, "/"); err == nil {
		p["disk_used_percent"] = round2(u.UsedPercent)
	}
	if up, err := host.UptimeWithContext(ctx); err == nil {
		p["uptime_s"] = up
	}
	return p
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// telemetryLoop samples a point at start and then every telemetry
// interval, into the queue; the sender publishes it when connected.
func (a *Agent) telemetryLoop(ctx context.Context) {
	for {
		payload, err := json.Marshal(SampleTelemetry(ctx, time.Now()))
		if err == nil {
			_, err = a.queue.append("telemetry", payload)
		}
		if err != nil {
			a.log.Error("cannot queue telemetry", "err", err)
		}
		if !a.waitInterval(ctx, func(s Settings) time.Duration { return s.TelemetryInterval }, nil) {
			return
		}
	}
}

// event queues an event (docs/mqtt.md) for strata/<id>/events.
func (a *Agent) event(name, level string, payload any) {
	data, err := json.Marshal(map[string]any{"name": name, "level": level, "payload": payload,
		"ts": time.Now().UnixMilli()}) // as docs/mqtt.md's event example
	if err == nil {
		_, err = a.queue.append("events", data)
	}
	if err != nil {
		a.log.Error("cannot queue event", "event", name, "err", err)
	}
}

// waitInterval waits for the interval interval(settings) to pass, or for
// now to be signalled, restarting the wait when the settings change. It
// returns false when ctx ends.
func (a *Agent) waitInterval(ctx context.Context, interval func(Settings) time.Duration, now <-chan struct{}) bool {
	for {
		changed := a.settings.changed()
		timer := time.NewTimer(interval(a.settings.get()))
		select {
		case <-timer.C:
			return true
		case <-now:
			timer.Stop()
			return true
		case <-changed:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
}
