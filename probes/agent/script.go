package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrScriptNotAllowed is wrapped by every refusal of run-script: no scripts
// directory, a name that is not a plain file name, a file that resolves
// outside the directory, is not a regular executable file, or is writable
// by group or others.
var ErrScriptNotAllowed = errors.New("script not allowed")

const (
	defaultScriptTimeout = 60 * time.Second
	maxScriptTimeout     = time.Hour // when the job has no deadline
	maxScriptOutput      = 64 << 10  // of stdout and of stderr, each
	maxScriptArgs        = 64
	maxScriptArgBytes    = 4 << 10
)

// scriptEnv is the whole environment of a script: nothing of the agent's
// own environment leaks into it.
var scriptEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
}

// scriptResult is run-script's result.
type scriptResult struct {
	ExitCode        int    `json:"exit_code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	TimedOut        bool   `json:"timed_out"`
	DurationMS      int64  `json:"duration_ms"`
}

func (a *Agent) runScript(ctx context.Context, c *call) (any, error) {
	var args struct {
		Name    string          `json:"name"`
		Args    []string        `json:"args"`
		Timeout json.RawMessage `json:"timeout"`
	}
	if err := decodeArgs(c.args, &args); err != nil {
		return nil, err
	}
	path, err := resolveScript(a.cfg.ScriptsDir, args.Name)
	if err != nil {
		return nil, err
	}
	if len(args.Args) > maxScriptArgs {
		return nil, fmt.Errorf("%w: more than %d args", ErrInvalidArgs, maxScriptArgs)
	}
	for _, s := range args.Args {
		if len(s) > maxScriptArgBytes || strings.ContainsRune(s, 0) {
			return nil, fmt.Errorf("%w: an arg is longer than %d bytes or holds NUL", ErrInvalidArgs, maxScriptArgBytes)
		}
	}
	timeout, err := scriptTimeout(args.Timeout, c.deadline, time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout, stderr := &capBuffer{max: maxScriptOutput}, &capBuffer{max: maxScriptOutput}
	cmd := exec.CommandContext(ctx, path, args.Args...)
	cmd.Dir = filepath.Dir(path)
	cmd.Env = append(append([]string(nil), scriptEnv...), "STRATA_JOB="+c.job)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 5 * time.Second // a child keeping the pipes open cannot hold the worker
	killProcessGroup(cmd)

	start := time.Now()
	runErr := cmd.Run()
	if cmd.ProcessState == nil {
		return nil, fmt.Errorf("cannot start %s: %w", args.Name, runErr)
	}
	res := scriptResult{
		ExitCode: cmd.ProcessState.ExitCode(),
		Stdout:   stdout.String(), Stderr: stderr.String(),
		StdoutTruncated: stdout.truncated, StderrTruncated: stderr.truncated,
		TimedOut:   errors.Is(ctx.Err(), context.DeadlineExceeded),
		DurationMS: time.Since(start).Milliseconds(),
	}
	switch {
	case res.TimedOut:
		return res, fmt.Errorf("%s timed out after %v", args.Name, timeout)
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s stopped: %w", args.Name, ctx.Err())
	case runErr != nil:
		return res, fmt.Errorf("%s: %v", args.Name, runErr)
	}
	return res, nil
}

// resolveScript returns the real path of the allow-listed script name in
// dir, or an error wrapping ErrScriptNotAllowed. name must be a plain file
// name; after resolving symbolic links the file must sit directly in
// (the real) dir, be a regular executable file and be writable only by its
// owner, and dir must not be writable by group or others.
func resolveScript(dir, name string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%w: run-script is disabled (the agent runs without --scripts-dir)", ErrScriptNotAllowed)
	}
	switch {
	case name == "":
		return "", fmt.Errorf("%w: name is required", ErrScriptNotAllowed)
	case len(name) > 255:
		return "", fmt.Errorf("%w: name too long", ErrScriptNotAllowed)
	case strings.ContainsAny(name, `/\`):
		return "", fmt.Errorf("%w: %q holds a path separator", ErrScriptNotAllowed, name)
	case strings.Contains(name, ".."), name == ".":
		return "", fmt.Errorf("%w: %q holds a dot path", ErrScriptNotAllowed, name)
	case strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return "", fmt.Errorf("%w: %q holds a control character", ErrScriptNotAllowed, name)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("%w: scripts directory: %v", ErrScriptNotAllowed, err)
	}
	if realDir, err = filepath.Abs(realDir); err != nil {
		return "", fmt.Errorf("%w: scripts directory: %v", ErrScriptNotAllowed, err)
	}
	if st, err := os.Stat(realDir); err != nil || !st.IsDir() || st.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("%w: scripts directory is missing, not a directory, or writable by group or others", ErrScriptNotAllowed)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(realDir, name))
	if err != nil {
		return "", fmt.Errorf("%w: no script %q", ErrScriptNotAllowed, name)
	}
	if filepath.Dir(real) != realDir {
		return "", fmt.Errorf("%w: %q resolves outside the scripts directory", ErrScriptNotAllowed, name)
	}
	st, err := os.Stat(real)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrScriptNotAllowed, err)
	case !st.Mode().IsRegular():
		return "", fmt.Errorf("%w: %q is not a regular file", ErrScriptNotAllowed, name)
	case st.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("%w: %q is not executable", ErrScriptNotAllowed, name)
	case st.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("%w: %q is writable by group or others", ErrScriptNotAllowed, name)
	}
	return real, nil
}

// scriptTimeout reads the timeout arg (a duration string or seconds),
// defaulting to 60s and capped by the job deadline.
func scriptTimeout(raw json.RawMessage, deadline, now time.Time) (time.Duration, error) {
	d := defaultScriptTimeout
	if len(raw) > 0 && string(raw) != "null" {
		var s string
		var secs float64
		switch {
		case json.Unmarshal(raw, &s) == nil:
			var err error
			if d, err = time.ParseDuration(s); err != nil {
				return 0, fmt.Errorf("%w: timeout: %v", ErrInvalidArgs, err)
			}
		case json.Unmarshal(raw, &secs) == nil:
			d = time.Duration(secs * float64(time.Second))
		default:
			return 0, fmt.Errorf("%w: timeout: want a duration string or seconds", ErrInvalidArgs)
		}
		if d <= 0 {
			return 0, fmt.Errorf("%w: timeout must be positive", ErrInvalidArgs)
		}
	}
	limit := maxScriptTimeout
	if !deadline.IsZero() {
		limit = deadline.Sub(now)
	}
	if limit <= 0 {
		return 0, ErrDeadlinePassed
	}
	return min(d, limit), nil
}

// capBuffer keeps the first max bytes written to it and notes whether more
// came. It never fails a write, so a chatty script is not killed by EPIPE.
type capBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	room := b.max - len(b.buf)
	if len(p) > room {
		b.truncated = true
		p = p[:max(room, 0)]
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *capBuffer) String() string { return string(b.buf) }
