package e2e

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The failover's timeline: where the time between a fault and the first
// acknowledged write goes. Each attempt of the measuring client (its
// target, start, end and outcome) and the replicas' own lines about
// leadership, all as offsets from the fault. Logged
// for a round slower than traceSlower, or for every round with
// STRATA_E2E_CLUSTER_TRACE=1.

// traceSlower is the failover time past which a round's timeline is
// logged.
const traceSlower = time.Second

// traceAll reports whether every round's timeline is logged.
func traceAll() bool { return os.Getenv("STRATA_E2E_CLUSTER_TRACE") != "" }

// attempt is one write attempt of the measuring client.
type attempt struct {
	target     string
	start, end time.Time
	err        error
}

// timelineLine matches the replicas' lines worth a place in a timeline:
// Raft's state changes, votes and elections, and the replica's own
// leadership.
var timelineLine = regexp.MustCompile(`entering (candidate|follower|leader) state|election|vote|heartbeat timeout reached|msg=leading|no longer the leader|leader barrier|leader is silent|lost leadership`)

// outcome is the class of an attempt's error, for the timeline.
func outcome(err error) string {
	if err == nil {
		return "acknowledged"
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "Timeout"):
		return "timed out"
	case strings.Contains(msg, "not the leader"):
		return "not the leader (503)"
	default:
		return "failed"
	}
}

// logTime is the time= field of a log line, zero when it has none.
func logTime(line string) time.Time {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return time.Time{}
	}
	ts, _, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}
	}
	return t
}

// timeline is the round's attempts and the replicas' lines between
// since-200ms and until, as offsets from since.
func (cp *clusterProcs) timeline(since, until time.Time, attempts []attempt) string {
	type ev struct {
		at   time.Time
		text string
	}
	var evs []ev
	// Consecutive attempts that failed alike make one line.
	for i := 0; i < len(attempts); {
		a, j := attempts[i], i+1
		for j < len(attempts) && attempts[j].err != nil && a.err != nil && outcome(attempts[j].err) == outcome(a.err) {
			j++
		}
		run := attempts[i:j]
		longest, targets := time.Duration(0), map[string]bool{}
		for _, x := range run {
			longest = max(longest, x.end.Sub(x.start))
			targets[x.target] = true
		}
		names := slices.Sorted(maps.Keys(targets))
		text := fmt.Sprintf("client → %s: attempt of %v: %s", a.target, longest.Round(time.Millisecond), outcome(a.err))
		if len(run) > 1 {
			text = fmt.Sprintf("client → %s: %d attempts until %+dms, the longest %v: %s (the first: %v)", strings.Join(names, ","), len(run),
				run[len(run)-1].end.Sub(since).Milliseconds(), longest.Round(time.Millisecond), outcome(a.err), a.err)
		} else if a.err != nil {
			text += fmt.Sprintf(" (%v)", a.err)
		}
		evs = append(evs, ev{a.start, text})
		i = j
	}
	for _, r := range cp.reps {
		if r.lastOut == nil {
			continue
		}
		for line := range strings.SplitSeq(r.lastOut.String(), "\n") {
			at := logTime(line)
			if at.IsZero() || at.Before(since.Add(-200*time.Millisecond)) || at.After(until) || !timelineLine.MatchString(line) {
				continue
			}
			if i := strings.Index(line, "level="); i >= 0 {
				line = line[i:]
			}
			evs = append(evs, ev{at, r.id + ": " + line})
		}
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %+7dms %s\n", e.at.Sub(since).Milliseconds(), e.text)
	}
	return b.String()
}
