package main

import (
	"bytes"
	"strings"
	"testing"
)

// testApp is an app with captured output and a fixed environment.
type testApp struct {
	app
	out, err bytes.Buffer
}

func newTestApp(env map[string]string, stdin string) *testApp {
	ta := &testApp{}
	ta.app = app{
		stdin:  strings.NewReader(stdin),
		stdout: &ta.out,
		stderr: &ta.err,
		lookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
	}
	return ta
}

// runCmd runs a command line and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ta := newTestApp(env, stdin)
	code := ta.run(args)
	return code, ta.out.String(), ta.err.String()
}
