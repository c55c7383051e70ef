package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scriptsFixture builds a scripts directory beside files an attacker would
// like to reach, and returns both directories.
func scriptsFixture(t *testing.T) (scripts, outside string) {
	t.Helper()
	root := t.TempDir()
	scripts, outside = filepath.Join(root, "scripts"), filepath.Join(root, "outside")
	for _, d := range []string{scripts, outside, filepath.Join(scripts, "subdir")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, body string, mode os.FileMode) {
		if err := os.WriteFile(path, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode) // not subject to umask
	}
	write(filepath.Join(scripts, "hello.sh"), "#!/bin/sh\necho \"hello $*\"\necho oops >&2\n", 0o755)
	write(filepath.Join(scripts, "fail.sh"), "#!/bin/sh\necho failing\nexit 3\n", 0o755)
	write(filepath.Join(scripts, "slow.sh"), "#!/bin/sh\nsleep 30\n", 0o755)
	write(filepath.Join(scripts, "chatty.sh"), "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' 'x'\n", 0o755)
	write(filepath.Join(scripts, "env.sh"), "#!/bin/sh\nenv\n", 0o755)
	write(filepath.Join(scripts, "notexec.sh"), "#!/bin/sh\necho no\n", 0o644)
	write(filepath.Join(scripts, "shared.sh"), "#!/bin/sh\necho shared\n", 0o777)
	write(filepath.Join(outside, "evil.sh"), "#!/bin/sh\necho pwned\n", 0o755)
	write(filepath.Join(scripts, "subdir", "nested.sh"), "#!/bin/sh\necho nested\n", 0o755)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(outside, "evil.sh"), filepath.Join(scripts, "link-out.sh")))
	must(os.Symlink("../outside/evil.sh", filepath.Join(scripts, "rel-out.sh")))
	must(os.Symlink("hello.sh", filepath.Join(scripts, "alias.sh")))
	must(os.Symlink(outside, filepath.Join(scripts, "dirlink")))
	must(syscall.Mkfifo(filepath.Join(scripts, "fifo"), 0o700))
	return scripts, outside
}

func TestResolveScriptRefusals(t *testing.T) {
	scripts, outside := scriptsFixture(t)
	for _, name := range []string{
		"", ".", "..", "../outside/evil.sh", "..%2f", "sub/../hello.sh", "subdir/nested.sh",
		"/bin/sh", filepath.Join(outside, "evil.sh"), `..\evil.sh`, "x..sh", "hello.sh\x00",
		"link-out.sh", "rel-out.sh", "dirlink", "subdir", "fifo", "notexec.sh", "shared.sh",
		"missing.sh", "hello.sh/", "dirlink/evil.sh", "\nhello.sh",
	} {
		if p, err := resolveScript(scripts, name); !errors.Is(err, ErrScriptNotAllowed) {
			t.Errorf("resolveScript(%q) = %q, %v; want a refusal", name, p, err)
		}
	}
	for _, name := range []string{"hello.sh", "alias.sh"} {
		if _, err := resolveScript(scripts, name); err != nil {
			t.Errorf("resolveScript(%q): %v", name, err)
		}
	}
	if _, err := resolveScript("", "hello.sh"); !errors.Is(err, ErrScriptNotAllowed) {
		t.Error("run-script allowed without a scripts directory")
	}
	os.Chmod(scripts, 0o777)
	if _, err := resolveScript(scripts, "hello.sh"); !errors.Is(err, ErrScriptNotAllowed) {
		t.Error("world-writable scripts directory accepted")
	}
}

type scriptOut struct {
	ExitCode        int    `json:"exit_code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	TimedOut        bool   `json:"timed_out"`
}

func TestRunScript(t *testing.T) {
	scripts, _ := scriptsFixture(t)
	a := newOfflineAgent(t, func(c *Config) { c.ScriptsDir = scripts })
	decode := func(r wireResult) scriptOut {
		var o scriptOut
		json.Unmarshal(r.Result, &o)
		return o
	}

	r := runJob(t, a, "ok", "run-script", `{"name":"hello.sh","args":["a b","c"]}`, soon())
	if o := decode(r); r.Status != StatusSucceeded || o.Stdout != "hello a b c\n" || o.Stderr != "oops\n" || o.ExitCode != 0 {
		t.Fatalf("hello.sh: %+v %s", r, r.Result)
	}
	r = runJob(t, a, "exit3", "run-script", `{"name":"fail.sh"}`, soon())
	if o := decode(r); r.Status != StatusFailed || o.ExitCode != 3 || o.Stdout != "failing\n" {
		t.Fatalf("fail.sh: %+v %s", r, r.Result)
	}
	start := time.Now()
	r = runJob(t, a, "slow", "run-script", `{"name":"slow.sh","timeout":"200ms"}`, soon())
	if o := decode(r); r.Status != StatusFailed || !o.TimedOut || time.Since(start) > 10*time.Second {
		t.Fatalf("slow.sh: %+v %s after %v", r, r.Result, time.Since(start))
	}
	r = runJob(t, a, "chatty", "run-script", `{"name":"chatty.sh"}`, soon())
	if o := decode(r); r.Status != StatusSucceeded || len(o.Stdout) != maxScriptOutput || !o.StdoutTruncated {
		t.Fatalf("chatty.sh: %s, stdout %d bytes", r.Status, len(o.Stdout))
	}
	t.Setenv("STRATA_SECRET_FOR_TEST", "leak")
	r = runJob(t, a, "env", "run-script", `{"name":"env.sh"}`, soon())
	if o := decode(r); strings.Contains(o.Stdout, "leak") || !strings.Contains(o.Stdout, "STRATA_JOB=env") {
		t.Fatalf("script environment: %q", o.Stdout)
	}
	for job, args := range map[string]string{
		"trav":  `{"name":"../outside/evil.sh"}`,
		"link":  `{"name":"link-out.sh"}`,
		"abs":   `{"name":"/bin/sh","args":["-c","echo pwned"]}`,
		"extra": `{"name":"hello.sh","cwd":"/"}`,
	} {
		r := runJob(t, a, job, "run-script", args, soon())
		if r.Status != StatusFailed || strings.Contains(string(r.Result), "pwned") {
			t.Errorf("%s: %+v", args, r)
		}
	}
}

func TestRunScriptDisabled(t *testing.T) {
	a := newOfflineAgent(t, nil)
	r := runJob(t, a, "j1", "run-script", `{"name":"hello.sh"}`, soon())
	if r.Status != StatusFailed || !strings.HasPrefix(r.Error, "script not allowed") {
		t.Fatalf("run-script without --scripts-dir: %+v", r)
	}
}

func TestScriptTimeoutBounds(t *testing.T) {
	now := time.Now()
	cases := []struct {
		raw      string
		deadline time.Time
		want     time.Duration
		err      bool
	}{
		{"", time.Time{}, defaultScriptTimeout, false},
		{`"5s"`, time.Time{}, 5 * time.Second, false},
		{`2.5`, time.Time{}, 2500 * time.Millisecond, false},
		{`"10m"`, now.Add(time.Minute), time.Minute, false}, // capped by the deadline
		{`"2h"`, time.Time{}, maxScriptTimeout, false},
		{`"-1s"`, time.Time{}, 0, true},
		{`"soon"`, time.Time{}, 0, true},
		{`[]`, time.Time{}, 0, true},
		{"", now.Add(-time.Second), 0, true},
	}
	for _, c := range cases {
		got, err := scriptTimeout(json.RawMessage(c.raw), c.deadline, now)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("scriptTimeout(%s) = %v, %v; want %v (error %v)", c.raw, got, err, c.want, c.err)
		}
	}
}
