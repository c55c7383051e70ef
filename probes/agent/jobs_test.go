package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
)

func openTestJobs(t *testing.T, dir string, limit int) *jobLog {
	t.Helper()
	j, err := openJobLog(dir, limit, tstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.close() })
	return j
}

func TestJobsRunOnce(t *testing.T) {
	dir := t.TempDir()
	j := openTestJobs(t, dir, 100)
	if v := j.reserve("j1"); v != jobNew {
		t.Fatalf("first delivery: %v, want new", v)
	}
	if v := j.reserve("j1"); v != jobDuplicate {
		t.Fatalf("second delivery while pending: %v, want duplicate", v)
	}
	if err := j.claim("j1"); err != nil {
		t.Fatal(err)
	}
	if err := j.finish("j1"); err != nil {
		t.Fatal(err)
	}
	if v := j.reserve("j1"); v != jobDuplicate {
		t.Fatalf("delivery after done: %v, want duplicate", v)
	}
	// A released reservation (never claimed) may be delivered again.
	j.reserve("j2")
	j.release("j2")
	if v := j.reserve("j2"); v != jobNew {
		t.Fatalf("after release: %v, want new", v)
	}

	j.close()
	j2 := openTestJobs(t, dir, 100)
	if v := j2.reserve("j1"); v != jobDuplicate {
		t.Fatalf("after restart: %v, want duplicate", v)
	}
	if v := j2.reserve("j2"); v != jobNew {
		t.Fatalf("unclaimed job after restart: %v, want new", v)
	}
}

// TestJobsInterruptedByCrash: a job claimed but not finished when the agent
// died is reported, never rerun.
func TestJobsInterruptedByCrash(t *testing.T) {
	dir := t.TempDir()
	j := openTestJobs(t, dir, 100)
	j.reserve("j1")
	if err := j.claim("j1"); err != nil {
		t.Fatal(err)
	}
	// Crash: abandon j without finishing or closing.
	j2 := openTestJobs(t, dir, 100)
	if v := j2.reserve("j1"); v != jobInterrupted {
		t.Fatalf("claimed job after crash: %v, want interrupted", v)
	}
	if v := j2.reserve("j1"); v != jobDuplicate {
		t.Fatalf("second delivery of an interrupted job: %v, want duplicate", v)
	}
}

func TestJobsTornLastLine(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, jobsFile), []byte("run j1\ndone j1\nrun j2"), 0o600)
	j := openTestJobs(t, dir, 100)
	if v := j.reserve("j1"); v != jobDuplicate {
		t.Fatalf("j1: %v", v)
	}
	if v := j.reserve("j2"); v != jobNew {
		t.Fatalf("torn line's job j2: %v, want new (its claim never completed)", v)
	}
}

func TestJobsBounded(t *testing.T) {
	dir := t.TempDir()
	j := openTestJobs(t, dir, 3)
	for i := range 10 {
		job := fmt.Sprintf("j%d", i)
		j.reserve(job)
		j.claim(job)
		j.finish(job)
	}
	if len(j.state) != 3 || len(j.order) != 3 {
		t.Fatalf("remembers %d jobs, want 3", len(j.state))
	}
	data, _ := os.ReadFile(filepath.Join(dir, jobsFile))
	if lines := strings.Count(string(data), "\n"); lines > 2*3+1 {
		t.Fatalf("jobs.log holds %d lines, want at most %d", lines, 2*3+1)
	}
	j.close()
	j2 := openTestJobs(t, dir, 3)
	if v := j2.reserve("j9"); v != jobDuplicate {
		t.Fatalf("recent job after reopen: %v", v)
	}
	if v := j2.reserve("j0"); v != jobNew {
		t.Fatalf("evicted job after reopen: %v, want new", v)
	}
}
