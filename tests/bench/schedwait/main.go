// Command schedwait reads an execution trace of a node (getlatency
// -trace) and tells how long goroutines waited runnable for a P, by
// what they are (the operator API's handlers, device readers, the MQTT
// committers, ...) and how they became runnable:
//
//	go run ./tests/bench/schedwait node.trace
//
// A goroutine is classed by its stack when it last blocked; the wait is
// from the moment it became runnable to the moment it ran. It reads the
// trace through `go tool trace -d=parsed` (the text dump of the Go
// toolchain it runs with).
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var transition = regexp.MustCompile(`^M=\S+ P=\S+ G=\S+ StateTransition Time=(\d+) GoID=(\d+) (\w+)->(\w+) Reason="([^"]*)"`)

// class names a goroutine by the frames of its stack.
func class(frames []string) string {
	s := strings.Join(frames, "\n")
	switch {
	case strings.Contains(s, "net/http.(*conn).serve"):
		return "operator API (net/http handler)"
	case strings.Contains(s, "mochi-mqtt") && strings.Contains(s, "Client).Read"):
		return "device reader (mqtt)"
	case strings.Contains(s, "mqtt.(*poller).run"):
		return "mqtt ingest poller"
	case strings.Contains(s, "mqtt.(*shard).run"):
		return "mqtt committer"
	case strings.Contains(s, "mqtt.(*uplink)"):
		return "mqtt ack writer"
	case strings.Contains(s, "mqtt.(*Broker).recordDeliveries"):
		return "mqtt delivery recorder"
	case strings.Contains(s, "federation.(*mount)"):
		return "federation mirror"
	case strings.Contains(s, "strata/model."):
		return "model"
	case strings.Contains(s, "badger"):
		return "badger"
	case strings.Contains(s, "runtime.gcBgMarkWorker"):
		return "gc worker"
	}
	for _, f := range frames {
		if strings.Contains(f, "strata") {
			return "other: " + f
		}
	}
	if len(frames) > 0 {
		return "other: " + frames[len(frames)-1]
	}
	return "other"
}

type key struct{ class, how string }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schedwait TRACE")
		os.Exit(2)
	}
	cmd := exec.Command("go", "tool", "trace", "-d=parsed", os.Args[1])
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	type since struct {
		t    int64
		from string
	}
	type block struct{ class, reason string }
	parked := map[string]block{} // goroutine → what it was and why it blocked, at its last block
	runnable := map[string]since{}
	waits := map[key][]int64{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var pending []string // an event line and its transition stack
	flush := func() {
		if len(pending) == 0 {
			return
		}
		m := transition.FindStringSubmatch(pending[0])
		if m != nil {
			t, _ := strconv.ParseInt(m[1], 10, 64)
			g, from, to, reason := m[2], m[3], m[4], m[5]
			var frames []string
			in := false
			for _, l := range pending[1:] {
				switch {
				case strings.HasPrefix(l, "TransitionStack="):
					in = true
				case !strings.HasPrefix(l, "\t"):
					in = false
				case in && !strings.HasPrefix(l, "\t\t"):
					frames = append(frames, strings.Fields(l)[0])
				}
			}
			if from == "Running" && to == "Waiting" {
				parked[g] = block{class(frames), reason}
			}
			if to == "Runnable" {
				how := from + "->Runnable"
				if from == "Waiting" {
					how = "woken: " + parked[g].reason
				}
				runnable[g] = since{t, how}
			}
			if from == "Runnable" && to == "Running" {
				if r, ok := runnable[g]; ok {
					delete(runnable, g)
					c := parked[g].class
					if c == "" {
						c = "(blocked before the trace began)"
					}
					k := key{c, r.from}
					waits[k] = append(waits[k], t-r.t)
				}
			}
		}
		pending = pending[:0]
	}
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "M=") {
			flush()
		}
		if strings.HasPrefix(l, "M=") || len(pending) > 0 {
			pending = append(pending, l)
		}
	}
	flush()
	if err := cmd.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var total int64
	keys := make([]key, 0, len(waits))
	sums := map[key]int64{}
	for k, ws := range waits {
		keys = append(keys, k)
		for _, w := range ws {
			sums[k] += w
		}
		total += sums[k]
	}
	slices.SortFunc(keys, func(a, b key) int { return int(sums[b] - sums[a]) })
	fmt.Printf("%-40s %-24s %8s %9s %9s %10s %6s\n", "goroutine (stack when it last blocked)", "became runnable", "count", "p50 µs", "p99 µs", "total ms", "share")
	for i, k := range keys {
		if i == 25 {
			break
		}
		ws := waits[k]
		slices.Sort(ws)
		q := func(p float64) float64 { return float64(ws[min(len(ws)-1, int(p*float64(len(ws))))]) / 1e3 }
		fmt.Printf("%-40.40s %-24.24s %8d %9.0f %9.0f %10.1f %5.1f%%\n", k.class, k.how, len(ws), q(0.5), q(0.99), float64(sums[k])/1e6, 100*float64(sums[k])/float64(total))
	}
	fmt.Printf("total wait %.1f ms over %d goroutine wake-ups\n", float64(total)/1e6, func() (n int) {
		for _, ws := range waits {
			n += len(ws)
		}
		return
	}())
}
