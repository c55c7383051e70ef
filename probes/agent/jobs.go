package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/strata-dm/strata/internal/atomicfile"
)

// jobLog remembers the job ids the agent has run so each runs at most once,
// even when the node delivers it again after a reconnect or a restart.
//
// jobs.log holds one line per step, "run <job>" before a function starts and
// "done <job>" once its result is in the outbound queue, each fsynced before
// the step it records. A job with "run" and no "done" was interrupted (the
// agent died while running it); it is reported as failed, never rerun. The
// log keeps the last limit jobs and is rewritten atomically when it holds
// twice that many lines.
type jobLog struct {
	path  string
	limit int
	log   *slog.Logger

	mu     sync.Mutex
	f      *os.File
	lines  int
	state  map[string]jobState // persisted jobs
	order  []string            // persisted jobs, oldest first
	active map[string]bool     // reserved by this process, not yet done
}

type jobState uint8

const (
	jobRunning jobState = iota + 1 // "run" recorded, "done" not (yet)
	jobDone
)

// verdict is what reserve decides about a delivered job.
type verdict uint8

const (
	jobNew         verdict = iota // never seen: run it
	jobDuplicate                  // running now or already done: ignore
	jobInterrupted                // started by an earlier process that died: report, do not run
)

// openJobLog loads DIR/jobs.log, keeping at most limit jobs.
func openJobLog(dir string, limit int, log *slog.Logger) (*jobLog, error) {
	j := &jobLog{path: filepath.Join(dir, jobsFile), limit: limit, log: log,
		state: map[string]jobState{}, active: map[string]bool{}}
	data, err := os.ReadFile(j.path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		data = data[:i+1] // a torn last line: its step never happened
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		step, job, ok := strings.Cut(sc.Text(), " ")
		if !ok || validTopicSegment(job) != nil || (step != "run" && step != "done") {
			continue // a torn last line, or garbage: skip it
		}
		j.lines++
		if step == "run" {
			j.remember(job, jobRunning)
		} else {
			j.remember(job, jobDone)
		}
	}
	if err := j.rewrite(); err != nil {
		return nil, err
	}
	return j, nil
}

// remember records a job's state in memory, evicting the oldest past limit.
func (j *jobLog) remember(job string, s jobState) {
	if _, ok := j.state[job]; !ok {
		j.order = append(j.order, job)
	}
	j.state[job] = s
	for len(j.order) > j.limit {
		delete(j.state, j.order[0])
		j.order = j.order[1:]
	}
}

// rewrite replaces jobs.log with one line per remembered job and reopens it
// for appending.
func (j *jobLog) rewrite() error {
	var b strings.Builder
	for _, job := range j.order {
		if j.state[job] == jobDone {
			b.WriteString("done " + job + "\n")
		} else {
			b.WriteString("run " + job + "\n")
		}
	}
	if err := atomicfile.Write(j.path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		j.f = nil
		return err
	}
	j.f, j.lines = f, len(j.order)
	return nil
}

// reserve decides what to do with a delivered job and, unless it is a
// duplicate, marks it active so a second delivery meanwhile is a duplicate.
// It touches no disk: it runs on the MQTT callback goroutine.
func (j *jobLog) reserve(job string) verdict {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.active[job] {
		return jobDuplicate
	}
	switch j.state[job] {
	case jobDone:
		return jobDuplicate
	case jobRunning:
		j.active[job] = true
		return jobInterrupted
	}
	j.active[job] = true
	return jobNew
}

// release forgets a reservation for a job that was neither run nor answered.
func (j *jobLog) release(job string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.active, job)
}

// claim durably records that job starts running.
func (j *jobLog) claim(job string) error { return j.record(job, jobRunning) }

// finish durably records that job's result is queued, and ends its
// reservation.
func (j *jobLog) finish(job string) error {
	err := j.record(job, jobDone)
	j.mu.Lock()
	delete(j.active, job)
	j.mu.Unlock()
	return err
}

func (j *jobLog) record(job string, s jobState) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errClosed
	}
	step := "run "
	if s == jobDone {
		step = "done "
	}
	if _, err := j.f.WriteString(step + job + "\n"); err != nil {
		return fmt.Errorf("jobs log: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("jobs log: %w", err)
	}
	j.lines++
	j.remember(job, s)
	if j.lines > 2*j.limit {
		return j.rewrite()
	}
	return nil
}

// close closes the log; safe twice.
func (j *jobLog) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
