package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
)

func TestCtlDevices(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("devices", "list")
	if code != 0 || !strings.Contains(out, "d-1") || !strings.Contains(out, "b8:27:eb:12:34:56") || !strings.Contains(out, "HARDWARE ID") ||
		!strings.Contains(out, "ONLINE") || !strings.Contains(out, "/peers/eu/devices/d-2") || !strings.Contains(out, "linux") {
		t.Errorf("list: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.path != "/api/v1/search" || r.query != "limit=1000&path=%2F&type=device" {
		t.Errorf("list request %+v", r)
	}
	if code, _, errOut := ctl("devices", "list", "--online", "--os", "linux", "--label", "site=lyon", "--path", "/peers/eu"); code != 0 {
		t.Errorf("list with filters: exit %d, %q", code, errOut)
	}
	if r := n.last(t); r.query != "label.site=lyon&limit=1000&path=%2Fpeers%2Feu&type=device&var.online=true&var.os=%22linux%22" {
		t.Errorf("list with filters: query %q", r.query)
	}
	if code, _, errOut := ctl("devices", "list", "--online", "--offline"); code != 1 || !strings.Contains(errOut, "exclude each other") {
		t.Errorf("--online --offline: exit %d, %q", code, errOut)
	}
	code, out, _ = ctl("devices", "get", "d-1")
	if code != 0 || !strings.Contains(out, "hardware id:") || !strings.Contains(out, "1234") || strings.Contains(out, "revoked at") {
		t.Errorf("get: exit %d\n%s", code, out)
	}
	code, out, _ = ctl("devices", "revoke", "d-1")
	if code != 0 || !strings.HasPrefix(out, "revoked device d-1\n") || !strings.Contains(out, "revoked at:") {
		t.Errorf("revoke: exit %d\n%s", code, out)
	}
	if r := n.last(t); r.method != "POST" || r.path != "/api/v1/devices/d-1/revoke" {
		t.Errorf("revoke request %+v", r)
	}
	code, out, _ = ctl("devices", "allow-enroll", "d-1")
	if code != 0 || !strings.HasPrefix(out, "device d-1 may enroll again\n") || !strings.Contains(out, "may enroll again:  true") {
		t.Errorf("allow-enroll: exit %d\n%s", code, out)
	}
	if r := n.last(t); r.method != "POST" || r.path != "/api/v1/devices/d-1/allow-enroll" {
		t.Errorf("allow-enroll request %+v", r)
	}
	code, out, _ = ctl("-o", "json", "devices", "list")
	var list struct {
		Devices []struct {
			client.Device
			Online   *bool     `json:"online"`
			LastSeen time.Time `json:"last_seen"`
			OS       string    `json:"os"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Devices) != 2 || list.Devices[0].HardwareID != "b8:27:eb:12:34:56" ||
		list.Devices[0].Online == nil || !*list.Devices[0].Online || list.Devices[0].OS != "linux" || list.Devices[0].LastSeen.IsZero() ||
		list.Devices[1].ID != "d-2" || list.Devices[1].Online == nil || *list.Devices[1].Online {
		t.Errorf("json list: exit %d, %q", code, out)
	}
	if code, _, errOut := ctl("devices", "get", "d-9"); code != 1 || errOut != "error: no such thing (not_found)\n" {
		t.Errorf("get d-9: exit %d, %q", code, errOut)
	}
}

func TestCtlJobs(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("jobs", "list", "--path", "/devices", "--state", "queued", "--device", "d-1", "--limit", "2")
	if code != 0 || !strings.Contains(out, "j2") || !strings.Contains(errOut, "more: --before j1") {
		t.Errorf("list: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.query != "device=d-1&limit=2&path=%2Fdevices&state=queued" {
		t.Errorf("list query %q", r.query)
	}
	code, out, _ = ctl("jobs", "get", "j1")
	if code != 0 || !strings.Contains(out, `result:    {"pong":true}`) || !strings.Contains(out, "history:") || !strings.Contains(out, "by admin") {
		t.Errorf("get: exit %d\n%s", code, out)
	}
	code, _, errOut = ctl("jobs", "cancel", "j1")
	if code != 1 || errOut != "error: job j1 is already succeeded (conflict)\n" {
		t.Errorf("cancel: exit %d, %q", code, errOut)
	}
}

func TestCtlCall(t *testing.T) {
	n := newFakeNode(t, fakeDeviceAPI)
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("call", "/devices/d-ok", "ping", "--args", `{"m":2,"n":0}`, "--arg", "n=1", "--arg", `s="x"`)
	if code != 0 || !strings.Contains(out, "state:     succeeded") || !strings.Contains(out, `{"pong":true}`) || errOut != "" {
		t.Errorf("succeeded: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.path != "/api/v1/contexts/devices/d-ok/functions/ping" || r.body != `{"args":{"m":2,"n":1,"s":"x"},"wait":"30s"}` {
		t.Errorf("request %+v", r)
	}

	code, out, errOut = ctl("call", "devices/d-fail", "ping", "--wait", "5s")
	if code != exitJobFailed || !strings.Contains(out, "error:     it broke") || errOut != "error: job j4 failed: it broke\n" {
		t.Errorf("failed: exit %d, %q, %q", code, out, errOut)
	}

	code, out, errOut = ctl("-o", "json", "call", "/devices/d-slow", "ping", "--wait", "1s", "--ttl", "1h")
	var j client.Job
	if code != exitJobPending || json.Unmarshal([]byte(out), &j) != nil || j.ID != "j5" || !strings.Contains(errOut, "strata ctl jobs get j5") {
		t.Errorf("pending: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.body != `{"wait":"1s","ttl":"1h0m0s"}` {
		t.Errorf("body %s", r.body)
	}
	if code, _, errOut := ctl("call", "/devices/d-slow", "ping", "--wait", "0"); code != 0 || n.last(t).body != `{}` {
		t.Errorf("no wait: exit %d, %q, body %s", code, errOut, n.last(t).body)
	}

	for _, args := range [][]string{
		{"call", "/devices/d-ok", "ping", "--arg", "n"}, {"call", "/devices/d-ok", "ping", "--arg", "s=x"},
		{"call", "/devices/d-ok", "ping", "--args", "[1]"}, {"call", "/devices/d-ok", "ping", "--wait", "-1s"}, {"call", "/devices/d-ok"},
	} {
		if code, _, errOut := ctl(args...); code != 1 || !strings.Contains(errOut, "--help") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	if code, _, errOut := ctl("call", "/devices/d-9", "ping"); code != 1 || errOut != "error: no such thing (not_found)\n" {
		t.Errorf("missing device: exit %d, %q", code, errOut)
	}
}

func TestJobOutcome(t *testing.T) {
	for _, c := range []struct {
		state client.JobState
		wait  time.Duration
		code  int // 0: no error
	}{
		{client.JobSucceeded, time.Second, 0}, {client.JobFailed, time.Second, exitJobFailed},
		{client.JobExpired, 0, exitJobFailed}, {client.JobCancelled, time.Second, exitJobFailed},
		{client.JobQueued, 0, 0}, {client.JobRunning, time.Second, exitJobPending},
	} {
		err := jobOutcome(&client.Job{ID: "j", State: c.state}, c.wait)
		var xe exitError
		switch {
		case c.code == 0 && err != nil, c.code != 0 && (!errors.As(err, &xe) || xe.code != c.code):
			t.Errorf("%s after %v: %v, want exit %d", c.state, c.wait, err, c.code)
		}
	}
}

func TestParseCallArgs(t *testing.T) {
	if a, err := parseCallArgs("", nil); a != nil || err != nil {
		t.Errorf("none: %s, %v", a, err)
	}
	if a, err := parseCallArgs(`{"b": [1, 2], "a": 1}`, []string{"a=2", "c={}"}); err != nil || string(a) != `{"a":2,"b":[1,2],"c":{}}` {
		t.Errorf("merged: %s, %v", a, err)
	}
	for _, bad := range []string{"null", "[]", "1", "{"} {
		if _, err := parseCallArgs(bad, nil); err == nil {
			t.Errorf("--args %s accepted", bad)
		}
	}
}
