package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowHook lets every client connect, publish and subscribe (mochi's
// hooks/auth would need a dependency outside go.sum).
type allowHook struct{ mqtt.HookBase }

func (allowHook) ID() string { return "allow" }
func (allowHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (allowHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (allowHook) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func TestSourceAddrs(t *testing.T) {
	got, err := sourceAddrs([]string{"10.0.0.9"}, "127.0.0.254-127.0.1.1")
	want := []string{"10.0.0.9", "127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"}
	if err != nil || !slices.Equal(strs(got), want) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"127.0.0.2-127.0.0.1", "127.0.0.1", "127.0.0.1-::1", "x-y"} {
		if _, err := sourceAddrs(nil, bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := sourceAddrs(nil, "10.0.0.0-10.1.0.0"); err == nil {
		t.Error("huge range accepted")
	}
}

func strs(a []netip.Addr) []string {
	var out []string
	for _, x := range a {
		out = append(out, x.String())
	}
	return out
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdout: &out, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false },
		signals: make(chan os.Signal)}
	code := a.run(args)
	return code, out.String(), errb.String()
}

func TestCommandLine(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(allowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	code, out, errs := run(t, "--anonymous", "--mqtt", l.Address(), "--plain", "--devices", "20",
		"--rate", "200", "--duration", "300ms", "--source-range", "127.0.0.1-127.0.0.2",
		"--report-interval", "100ms", "--json", "--no-raise-nofile")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r["connected"] != float64(20) || r["acked"].(float64) == 0 || r["phase"] != "done" {
		t.Fatalf("report: %s", out)
	}
	if _, ok := r["puback_latency"].(map[string]any)["p99_ms"]; !ok {
		t.Fatalf("no p99: %s", out)
	}
	if !strings.Contains(errs, "running") {
		t.Fatalf("no progress lines: %q", errs)
	}

	code, out, _ = run(t, "--anonymous", "--mqtt", l.Address(), "--plain", "--devices", "2",
		"--duration", "10ms", "--report-interval", "0")
	if code != 0 || !strings.Contains(out, "messages/s") {
		t.Fatalf("text report: exit %d: %s", code, out)
	}
}

func TestCommandLineErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--devices", "5"},                                // no credentials source
		{"--anonymous", "--devices", "5"},                 // no MQTT address
		{"--anonymous", "--mqtt", "h:1", "--qos", "2"},    // bad QoS
		{"--anonymous", "--mqtt", "h:1", "--ca", "/nope"}, // unreadable CA
		{"--anonymous", "--mqtt", "h:1", "--source-range", "x"},
		{"--api", "https://h:1", "--devices", "1"}, // API without token
		{"extra-arg"},
	} {
		if code, _, errs := run(t, args...); code == 0 || !strings.HasPrefix(errs, "strata-sim: ") {
			t.Errorf("%v: exit %d, %q", args, code, errs)
		}
	}
}
