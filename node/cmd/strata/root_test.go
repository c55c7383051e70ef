package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestConfigPath(t *testing.T) {
	for _, tc := range []struct {
		flag     string
		env      map[string]string
		want     string
		explicit bool
	}{
		{"", nil, "strata.yaml", false},
		{"", map[string]string{envConfig: ""}, "strata.yaml", false},
		{"", map[string]string{envConfig: "/etc/strata/hq.yaml"}, "/etc/strata/hq.yaml", true},
		{"my.yaml", map[string]string{envConfig: "/etc/strata/hq.yaml"}, "my.yaml", true},
		{"my.yaml", nil, "my.yaml", true},
	} {
		a := newTestApp(tc.env, "")
		got, explicit := a.configPath(tc.flag)
		if got != tc.want || explicit != tc.explicit {
			t.Errorf("configPath(%q) with %v = %q, %v; want %q, %v", tc.flag, tc.env, got, explicit, tc.want, tc.explicit)
		}
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8443":    "127.0.0.1:8443",
		"[::]:8443":       "127.0.0.1:8443",
		":8443":           "127.0.0.1:8443",
		"10.0.0.1:443":    "10.0.0.1:443",
		"[fd00::1]:8443":  "[fd00::1]:8443",
		"hq.example:8443": "hq.example:8443",
		"localhost:8443":  "localhost:8443",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"nope"},
		{"ctl", "nope"},
		{"ctl", "get"},
		{"ctl", "tree", "--bogus"},
		{"ctl", "-o", "yaml", "whoami"},
		{"version", "extra"},
	} {
		code, _, errOut := runCmd(t, nil, "", args...)
		if code != 1 || !strings.HasPrefix(errOut, "error: ") || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, nil, "", "version")
	if code != 0 || !strings.HasPrefix(out, "strata dev\ngo: go1.") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	var b strings.Builder
	printVersion(&b, "v1.2.3", "", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
	}})
	want := "strata v1.2.3\ngo: go1.26.8\ncommit: abc123 (modified)\ncommit time: 2026-01-02T03:04:05Z\n"
	if b.String() != want {
		t.Errorf("printVersion = %q, want %q", b.String(), want)
	}
	// Without the toolchain's stamp, the commit given at build time.
	b.Reset()
	printVersion(&b, "v1.2.3", "def456", &debug.BuildInfo{GoVersion: "go1.26.8"})
	if want := "strata v1.2.3\ngo: go1.26.8\ncommit: def456\n"; b.String() != want {
		t.Errorf("printVersion stamped = %q, want %q", b.String(), want)
	}
}

// strata completion writes a shell's completion script.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_strata", "zsh": "#compdef strata", "fish": "complete -c strata"} {
		code, out, e := runCmd(t, nil, "", "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %d bytes, %q", shell, code, len(out), e)
		}
	}
	if code, _, _ := runCmd(t, nil, "", "completion", "tcsh"); code != 1 {
		t.Errorf("completion tcsh: exit %d", code)
	}
}
