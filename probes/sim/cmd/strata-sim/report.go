package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/probes/sim"
)

// progress prints one line per report interval, with the message rate
// over the interval.
type progress struct {
	w    io.Writer
	mu   sync.Mutex
	last sim.Report
}

func (p *progress) line(r sim.Report) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rate := 0.0
	if dt := (r.Elapsed - p.last.Elapsed).Seconds(); dt > 0 {
		n, prev := r.Acked, p.last.Acked
		if r.Acked == 0 {
			n, prev = r.Sent, p.last.Sent
		}
		rate = float64(n-prev) / dt
	}
	p.last = r
	fmt.Fprintf(p.w, "[%7.1fs] %-10s connected=%d/%d fail=%d | sent=%d acked=%d msg/s=%.0f puback p50=%s p99=%s | cmds=%d answered=%d\n",
		r.Elapsed.Seconds(), r.Phase, r.Connected, r.Devices, sum(r.ConnectFailures),
		r.Sent, r.Acked, rate, ms(r.PubackLatency.P50), ms(r.PubackLatency.P99),
		r.CommandsReceived, r.CommandsAnswered)
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
}

func lat(l sim.Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.Count)
}

func reasons(w io.Writer, title string, m map[string]int64) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(w, "  %-20s %8d  %s\n", title, m[k], k)
	}
}

// writeText prints the final report for a terminal.
func writeText(w io.Writer, r sim.Report) {
	fmt.Fprintf(w, "devices            %d (elapsed %.1fs)\n", r.Devices, r.Elapsed.Seconds())
	if r.EnrollTime > 0 {
		fmt.Fprintf(w, "enrolled           %d in %.1fs (%d retries)\n", r.Enrolled, r.EnrollTime.Seconds(), r.EnrollRetries)
		reasons(w, "enroll failure", r.EnrollFailures)
	}
	fmt.Fprintf(w, "connected          %d at end; %d connects in %d attempts\n", r.Connected, r.Connects, r.ConnectAttempts)
	fmt.Fprintf(w, "connect phase      %.1fs, %.0f connections/s\n", r.ConnectTime.Seconds(), r.ConnectRate)
	fmt.Fprintf(w, "connect latency    %s\n", lat(r.ConnectLatency))
	reasons(w, "connect failure", r.ConnectFailures)
	fmt.Fprintf(w, "disconnects        %d (reconnects %d, subscribe failures %d)\n", r.Disconnects, r.Reconnects, r.SubscribeFailures)
	reasons(w, "disconnect", r.DisconnectReasons)
	fmt.Fprintf(w, "telemetry          %.1fs: sent %d, acked %d, skipped %d, lost %d\n",
		r.TelemetryTime.Seconds(), r.Sent, r.Acked, r.Skipped, r.Lost)
	fmt.Fprintf(w, "messages/s         %.1f\n", r.MessageRate)
	fmt.Fprintf(w, "publish→PUBACK     %s\n", lat(r.PubackLatency))
	fmt.Fprintf(w, "commands           received %d (duplicate %d, expired %d, invalid %d), answered %d\n",
		r.CommandsReceived, r.CommandsDuplicate, r.CommandsExpired, r.CommandsInvalid, r.CommandsAnswered)
	fmt.Fprintf(w, "command→result ack %s\n", lat(r.CommandLatency))
	if r.Installs > 0 || len(r.InstallFailures) > 0 {
		fmt.Fprintf(w, "installs           %d\n", r.Installs)
		reasons(w, "install failure", r.InstallFailures)
	}
}

func writeJSON(w io.Writer, r sim.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// sourceAddrs parses --source-addrs and --source-range into one list.
func sourceAddrs(list []string, rng string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range list {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--source-addrs: %w", err)
		}
		out = append(out, a)
	}
	if rng == "" {
		return out, nil
	}
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return nil, fmt.Errorf("--source-range: want FIRST-LAST, got %q", rng)
	}
	first, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil {
		return nil, fmt.Errorf("--source-range: %w", err)
	}
	last, err := netip.ParseAddr(strings.TrimSpace(hi))
	if err != nil {
		return nil, fmt.Errorf("--source-range: %w", err)
	}
	if first.Is4() != last.Is4() || last.Less(first) {
		return nil, fmt.Errorf("--source-range: %s does not follow %s", last, first)
	}
	for a := first; ; a = a.Next() {
		if len(out) == 4096 {
			return nil, fmt.Errorf("--source-range: more than 4096 addresses")
		}
		out = append(out, a)
		if a == last {
			return out, nil
		}
	}
}
