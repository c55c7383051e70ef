package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/client"
)

func fakeClusterAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.Method + " " + r.URL.Path {
	case "POST /api/v1/cluster/transfer-leader", "DELETE /api/v1/cluster/members/r3":
		w.WriteHeader(204)
		return
	}
	if r.Method+" "+r.URL.Path != "GET /api/v1/cluster" {
		w.WriteHeader(404)
		io.WriteString(w, `{"error":"no","code":"not_found"}`)
		return
	}
	io.WriteString(w, `{"leader":"r1","term":4,"members":[`+
		`{"id":"r1","address":"10.0.0.1:7400","role":"voter","state":"leader","applied_index":120,"last_contact":"2026-01-01T00:00:00Z"},`+
		`{"id":"r4","address":"10.0.0.4:7400","role":"nonvoter","state":"unreachable","applied_index":0}]}`)
}

func TestClusterStatus(t *testing.T) {
	n := newFakeNode(t, fakeClusterAPI)
	code, out, errOut := runCmd(t, nil, "", "cluster", "-c", n.config, "status")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"leader r1, term 4", "r1  10.0.0.1:7400  voter     leader", "r4  10.0.0.4:7400  nonvoter  unreachable  0"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd(t, nil, "", "cluster", "-c", n.config, "-o", "json", "status")
	var st client.ClusterStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Leader != "r1" || len(st.Members) != 2 {
		t.Fatalf("json: exit %d, %q", code, out)
	}
}

func TestClusterTransferAndLeave(t *testing.T) {
	n := newFakeNode(t, fakeClusterAPI)
	if code, out, errOut := runCmd(t, nil, "", "cluster", "-c", n.config, "transfer-leader"); code != 0 || out != "leadership handed over\n" {
		t.Fatalf("transfer-leader: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.method != "POST" || r.path != "/api/v1/cluster/transfer-leader" {
		t.Fatalf("request %+v", r)
	}
	if code, out, errOut := runCmd(t, nil, "", "cluster", "-c", n.config, "leave", "r3"); code != 0 || out != "replica r3 removed\n" {
		t.Fatalf("leave: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.method != "DELETE" || r.path != "/api/v1/cluster/members/r3" {
		t.Fatalf("request %+v", r)
	}
	if code, _, _ := runCmd(t, nil, "", "cluster", "-c", n.config, "leave", "r9"); code == 0 {
		t.Fatal("leave of an unknown replica succeeded")
	}
}
