package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/config"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "strata.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseServe parses serve's flags and loads the config as serve would.
func parseServe(t *testing.T, args ...string) (config.Config, error) {
	t.Helper()
	a := newTestApp(nil, "")
	c := a.serveCmd()
	if err := c.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	f.config, _ = c.Flags().GetString("config")
	f.apiAddr, _ = c.Flags().GetString("api-addr")
	f.dataDir, _ = c.Flags().GetString("data-dir")
	f.logLevel, _ = c.Flags().GetString("log-level")
	f.logFormat, _ = c.Flags().GetString("log-format")
	return loadServeConfig(f.config, c, f)
}

func TestServeConfigPrecedence(t *testing.T) {
	path := writeConfig(t, "name: hq\napi:\n  addr: 127.0.0.1:1111\nlog:\n  level: warn\n  format: json\n")

	cfg, err := parseServe(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.Addr != "127.0.0.1:1111" || cfg.Log.Level != "warn" || cfg.Log.Format != "json" {
		t.Errorf("file: %+v %+v", cfg.API, cfg.Log)
	}

	t.Setenv("STRATA_API_ADDR", "127.0.0.1:2222")
	t.Setenv("STRATA_LOG_LEVEL", "debug")
	cfg, err = parseServe(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.Addr != "127.0.0.1:2222" || cfg.Log.Level != "debug" || cfg.Log.Format != "json" {
		t.Errorf("env over file: %+v %+v", cfg.API, cfg.Log)
	}

	cfg, err = parseServe(t, "--config", path, "--api-addr", "127.0.0.1:3333", "--log-level", "error",
		"--log-format", "text", "--data-dir", "rel/data")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if cfg.API.Addr != "127.0.0.1:3333" || cfg.Log.Level != "error" || cfg.Log.Format != "text" ||
		cfg.DataDir != filepath.Join(wd, "rel/data") {
		t.Errorf("flags over env: %+v %+v %q", cfg.API, cfg.Log, cfg.DataDir)
	}

	if _, err := parseServe(t, "--config", path, "--log-level", "loud"); err == nil {
		t.Error("an invalid flag value passed validation")
	}
}

func TestServeFailsAtStart(t *testing.T) {
	unknown := writeConfig(t, "name: hq\napi:\n  adr: 127.0.0.1:1\n")
	code, _, errOut := runCmd(t, nil, "", "serve", "--config", unknown)
	if code != 1 || !strings.Contains(errOut, "error: config: ") || !strings.Contains(errOut, "adr") {
		t.Errorf("unknown key: exit %d, %q", code, errOut)
	}
	code, _, errOut = runCmd(t, nil, "", "serve", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
	code, _, errOut = runCmd(t, map[string]string{envConfig: unknown}, "", "serve")
	if code != 1 || !strings.Contains(errOut, unknown) {
		t.Errorf("$STRATA_CONFIG not used: exit %d, %q", code, errOut)
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := newLogger(&b, config.Log{Level: "warn", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("json logger wrote %q", s)
	}
	b.Reset()
	l, _ = newLogger(&b, config.Log{Level: "debug", Format: "text"})
	l.Debug("dbg")
	if !strings.Contains(b.String(), "level=DEBUG msg=dbg") {
		t.Errorf("text logger wrote %q", b.String())
	}
	if _, err := newLogger(&b, config.Log{Level: "info", Format: "xml"}); err == nil {
		t.Error("accepted format xml")
	}
}

func TestServeTunesProcs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		slots     int
		env       bool
		wantSet   []int
		wantSlots int
	}{
		{"default", 0, false, []int{0, 3}, 1},
		{"explicit slots", 2, false, []int{0, 4}, 2},
		{"GOMAXPROCS set by the operator", 0, true, []int{0}, 1},
		{"unbounded ingest", -1, false, []int{0}, -1},
	} {
		var calls []int
		a := &app{
			lookupEnv: func(k string) (string, bool) { return "5", tc.env && k == "GOMAXPROCS" },
			setProcs:  func(n int) int { calls = append(calls, n); return 2 },
		}
		m := config.MQTT{IngestSlots: tc.slots}
		a.tuneProcs(&m, slog.New(slog.DiscardHandler))
		if fmt.Sprint(calls) != fmt.Sprint(tc.wantSet) || m.IngestSlots != tc.wantSlots {
			t.Errorf("%s: GOMAXPROCS calls %v, slots %d; want %v, %d", tc.name, calls, m.IngestSlots, tc.wantSet, tc.wantSlots)
		}
	}
	(&app{}).tuneProcs(&config.MQTT{}, slog.New(slog.DiscardHandler)) // no setProcs: nothing to do
}
