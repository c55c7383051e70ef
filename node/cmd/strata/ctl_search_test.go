package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func fakeSearchAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method+" "+r.URL.Path != "GET /api/v1/search" {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"no such thing"}}`)
		return
	}
	io.WriteString(w, `{"contexts":[
		{"path":"/devices/d-1","type":"device","tenant":"acme","labels":{"site":"plant-7"},"variables":{"os":{"value":"linux"},"temp":{"value":41.5}},"functions":[]},
		{"path":"/devices/d-2","type":"device","labels":{},"variables":{},"functions":[]}],
		"next":"CURSOR","total":1234}`)
}

func TestCtlSearch(t *testing.T) {
	n := newFakeNode(t, fakeSearchAPI)
	ctl := func(args ...string) (int, string, string) {
		return runCmd(t, nil, "", append([]string{"ctl", "-c", n.config}, args...)...)
	}
	code, out, errOut := ctl("search", "--path", "/peers/eu", "--type", "device", "--sort", "-var.temp", "--count",
		"--limit", "2", "--columns", "var.temp,label.site,var.os", "site=plant-7", "var.os=linux", "var.cpus=4")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := n.last(t)
	for _, p := range []string{"path=%2Fpeers%2Feu", "type=device", "sort=-var.temp", "count=true", "limit=2",
		"label.site=plant-7", "var.os=%22linux%22", "var.cpus=4"} {
		if !strings.Contains(r.query, p) {
			t.Errorf("query %q lacks %s", r.query, p)
		}
	}
	for _, s := range []string{"PATH", "VAR.TEMP", "/devices/d-1", "41.5", "plant-7", "linux", "/devices/d-2", "1234 matching"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if errOut != "more: --after CURSOR\n" {
		t.Errorf("stderr %q", errOut)
	}
	code, out, _ = ctl("-o", "json", "search", "--after", "CURSOR")
	var page struct {
		Contexts []json.RawMessage
		Total    int
	}
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Contexts) != 2 || page.Total != 1234 {
		t.Errorf("json: exit %d, %q", code, out)
	}
	if r := n.last(t); r.query != "after=CURSOR" {
		t.Errorf("query %q", r.query)
	}
	for _, bad := range [][]string{{"search", "noequals"}, {"search", "=x"}, {"search", "a=1", "label.a=2"}, {"search", "var.a=1", "var.a=2"}} {
		if code, _, errOut := ctl(bad...); code != 1 || !strings.Contains(errOut, "--help") {
			t.Errorf("%q: exit %d, %q", bad, code, errOut)
		}
	}
}
