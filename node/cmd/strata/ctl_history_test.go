package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCtlHistory(t *testing.T) {
	n := newFakeNode(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"path":"/devices/p1","var":"temp","from":1796119200000,"to":1796122800000,"step":60000,"agg":"max","points":[[1796119200000,21.5],[1796119260000,null]]}`)
	})
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "history", "/devices/p1", "--var", "temp",
		"--from", "2026-12-01T10:00:00Z", "--to", "1796122800000", "--step", "1m", "--agg", "max")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := n.last(t)
	if r.path != "/api/v1/history/devices/p1" || r.query != "agg=max&from=2026-12-01T10%3A00%3A00Z&step=1m&to=1796122800000&var=temp" {
		t.Errorf("request %+v", r)
	}
	want := "/devices/p1 temp, max per 1m0s, 2026-12-01T10:00:00Z .. 2026-12-01T11:00:00Z: 2 points\n" +
		"TIME                      VALUE\n2026-12-01T10:00:00.000Z  21.5\n2026-12-01T10:01:00.000Z  -\n"
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "-o", "json", "history", "/devices/p1", "--var", "temp", "--from", "24h")
	var got struct {
		Points [][2]*float64 `json:"points"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got.Points) != 2 || *got.Points[0][1] != 21.5 || got.Points[1][1] != nil {
		t.Errorf("-o json: exit %d, %s", code, out)
	}
	if r := n.last(t); !strings.Contains(r.query, "from=17") {
		t.Errorf("--from 24h sent %s", r.query)
	}
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "history", "/devices/p1"); code != 1 || !strings.Contains(e, "--var is required") {
		t.Errorf("without --var: exit %d, %q", code, e)
	}
}
