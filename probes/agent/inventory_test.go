package agent

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestGatherInventoryOnThisHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("checks Linux sources")
	}
	inv := GatherInventory(context.Background())
	if inv.Hostname == "" || inv.OS != "linux" || inv.Arch != runtime.GOARCH || inv.CPUs < 1 ||
		inv.MemoryBytes == 0 || inv.Kernel == "" {
		t.Fatalf("inventory incomplete: %+v", inv)
	}
	if _, err := os.Stat("/etc/os-release"); err == nil && (inv.Distribution.ID == "" || inv.Distribution.Name == "") {
		t.Errorf("distribution not read: %+v", inv.Distribution)
	}
	root := false
	for _, d := range inv.Disks {
		if d.Mount == "/" && d.TotalBytes > 0 && d.FSType != "" {
			root = true
		}
	}
	if !root {
		t.Errorf("root file system missing from disks %+v", inv.Disks)
	}
	for _, i := range inv.Interfaces {
		if i.Name == "lo" {
			t.Errorf("loopback listed: %+v", i)
		}
	}
}

// TestInventoryShape checks the keys the node reads (docs/mqtt.md).
func TestInventoryShape(t *testing.T) {
	a := newOfflineAgent(t, nil)
	inv := GatherInventory(context.Background())
	inv.AgentVersion, inv.Functions = "v1", a.FunctionInfos()
	data, _ := json.Marshal(inv)
	var m map[string]json.RawMessage
	json.Unmarshal(data, &m)
	for _, k := range []string{"hostname", "os", "arch", "distribution", "cpus", "memory_bytes", "disks", "interfaces", "agent_version", "functions"} {
		if _, ok := m[k]; !ok {
			t.Errorf("inventory lacks %q: %s", k, data)
		}
	}
	var fns []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Args        json.RawMessage `json:"args"`
		Result      json.RawMessage `json:"result"`
	}
	json.Unmarshal(m["functions"], &fns)
	names := map[string]bool{}
	for _, f := range fns {
		names[f.Name] = true
		var schema map[string]any
		if f.Description == "" || json.Unmarshal(f.Args, &schema) != nil || schema["type"] != "object" {
			t.Errorf("function %s badly declared: %+v", f.Name, f)
		}
	}
	for _, n := range []string{"ping", "reboot", "set-config", "run-script", "collect-logs"} {
		if !names[n] {
			t.Errorf("function %s not declared", n)
		}
	}
}

func TestPlatform(t *testing.T) {
	if goos, goarch := Platform(); goos != runtime.GOOS || goarch != runtime.GOARCH {
		t.Fatalf("Platform() = %s/%s", goos, goarch)
	}
}

func TestSampleTelemetry(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	p := SampleTelemetry(context.Background(), now)
	if p["ts"] != "2026-11-23T10:00:00.000Z" {
		t.Errorf("ts = %v", p["ts"])
	}
	if runtime.GOOS == "linux" {
		for _, k := range []string{"load1", "load5", "load15", "mem_used_bytes", "mem_used_percent", "disk_used_percent", "uptime_s"} {
			if _, ok := p[k]; !ok {
				t.Errorf("telemetry lacks %s: %v", k, p)
			}
		}
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatal(err)
	}
}

func TestReadOSRelease(t *testing.T) {
	path := t.TempDir() + "/os-release"
	os.WriteFile(path, []byte("NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n# comment\nPRETTY_NAME='Debian 12'\n"), 0o600)
	if d := readOSRelease(path); d != (Distribution{ID: "debian", Version: "12", Name: "Debian 12"}) {
		t.Fatalf("readOSRelease = %+v", d)
	}
}
