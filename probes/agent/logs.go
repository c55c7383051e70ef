package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DefaultLogPaths returns the files collect-logs reads when none are
// configured; those that do not exist are skipped.
func DefaultLogPaths() []string { return []string{"/var/log/syslog", "/var/log/messages"} }

const (
	defaultLogLines = 200
	maxLogLines     = 5000
	maxLogBytes     = 128 << 10 // of all sources together
	journalTimeout  = 15 * time.Second
)

// logSource is one source in collect-logs' result.
type logSource struct {
	Source    string   `json:"source"`
	Lines     []string `json:"lines"`
	Truncated bool     `json:"truncated,omitempty"` // fewer lines than asked, for the size bound
	Error     string   `json:"error,omitempty"`
}

func (a *Agent) collectLogs(ctx context.Context, c *call) (any, error) {
	var args struct {
		Lines *int `json:"lines"`
	}
	if err := decodeArgs(c.args, &args); err != nil {
		return nil, err
	}
	n := defaultLogLines
	if args.Lines != nil {
		n = *args.Lines
	}
	if n < 1 || n > maxLogLines {
		return nil, fmt.Errorf("%w: lines must be between 1 and %d", ErrInvalidArgs, maxLogLines)
	}
	var files []string
	for _, p := range a.cfg.LogPaths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		files = append(files, p)
	}
	journal := ""
	if a.cfg.Journal {
		journal, _ = exec.LookPath("journalctl")
	}
	count := len(files)
	if journal != "" {
		count++
	}
	if count == 0 {
		return nil, errors.New("no log source available on this device")
	}
	budget := int64(maxLogBytes / count)
	var out []logSource
	for _, p := range files {
		lines, truncated, err := tailFile(p, n, budget)
		out = append(out, newLogSource(p, lines, truncated, err))
	}
	if journal != "" {
		lines, truncated, err := tailJournal(ctx, journal, n, budget)
		out = append(out, newLogSource("journal", lines, truncated, err))
	}
	return map[string]any{"sources": out}, nil
}

func newLogSource(name string, lines []string, truncated bool, err error) logSource {
	s := logSource{Source: name, Lines: lines, Truncated: truncated}
	if s.Lines == nil {
		s.Lines = []string{}
	}
	if err != nil {
		s.Error = err.Error()
	}
	return s
}

// tailFile returns the last n lines of the file at path, reading at most
// budget bytes from its end.
func tailFile(path string, n int, budget int64) ([]string, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, errors.New("not a regular file")
	}
	size := st.Size()
	window := min(size, budget)
	buf := make([]byte, window)
	if _, err := f.ReadAt(buf, size-window); err != nil {
		return nil, false, err
	}
	lines, truncated := lastLines(buf, n, window < size)
	return lines, truncated, nil
}

// tailJournal returns the last n lines of the systemd journal.
func tailJournal(ctx context.Context, journalctl string, n int, budget int64) ([]string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, journalTimeout)
	defer cancel()
	out := &capBuffer{max: maxLogBytes * 4}
	cmd := exec.CommandContext(ctx, journalctl, "--no-pager", "--quiet", "--output=short-iso", "--lines="+strconv.Itoa(n))
	cmd.Stdout = out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return nil, false, fmt.Errorf("journalctl: %w", err)
	}
	data := out.buf
	cut := out.truncated
	if int64(len(data)) > budget {
		data, cut = data[int64(len(data))-budget:], true
	}
	lines, truncated := lastLines(data, n, cut)
	return lines, truncated, nil
}

// lastLines splits data into lines and keeps the last n. When partial says
// data starts in the middle of the source, its first (partial) line is
// dropped and a short answer is reported as truncated.
func lastLines(data []byte, n int, partial bool) ([]string, bool) {
	data = bytes.TrimRight(data, "\n")
	if partial {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		} else {
			data = nil
		}
	}
	if len(data) == 0 {
		return nil, partial
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		return lines[len(lines)-n:], false
	}
	return lines, partial
}
