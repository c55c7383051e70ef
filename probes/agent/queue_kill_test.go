package agent

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const queueChildEnv = "STRATA_AGENT_QUEUE_CHILD_DIR"

// TestQueueSurvivesKill9 runs a child process that appends to (and acks
// from) a queue, reporting each step once it returned, kills it with
// SIGKILL mid-stream and checks that the reopened queue holds every
// reported entry not reported acknowledged, contiguous and in order.
func TestQueueSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueKillChild$")
	cmd.Env = append(os.Environ(), queueChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	appended, acked := -1, -1
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(30 * time.Second)
	for appended < 300 && sc.Scan() {
		step, n, _ := strings.Cut(sc.Text(), " ")
		i, _ := strconv.Atoi(n)
		switch step {
		case "append":
			appended = i
		case "ack":
			acked = i
		}
		if time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Kill() // SIGKILL: no deferred code, no close
	cmd.Wait()
	if appended < 300 {
		t.Fatalf("child reported only %d appends", appended+1)
	}

	got := payloads(t, openTestQueue(t, dir, bigLimits))
	if len(got) == 0 {
		t.Fatal("queue empty after kill -9")
	}
	first, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(got[0], `{"i":`), "}"))
	if first > acked+1 {
		t.Fatalf("queue starts at %d but only entries up to %d were acknowledged", first, acked)
	}
	for k, p := range got {
		if want := fmt.Sprintf(`{"i":%d}`, first+k); p != want {
			t.Fatalf("entry %d is %s, want %s", k, p, want)
		}
	}
	if last := first + len(got) - 1; last < appended {
		t.Fatalf("queue ends at %d but %d was reported appended", last, appended)
	}
}

// TestQueueKillChild is the child process of TestQueueSurvivesKill9.
func TestQueueKillChild(t *testing.T) {
	dir := os.Getenv(queueChildEnv)
	if dir == "" {
		t.Skip("helper process of TestQueueSurvivesKill9")
	}
	q, err := openQueue(dir, bigLimits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		seq, err := q.append("telemetry", fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("append %d\n", i)
		if i%10 == 9 {
			if err := q.ack(seq - 5); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("ack %d\n", i-5)
		}
	}
}
