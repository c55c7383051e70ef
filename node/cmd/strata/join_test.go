package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/config"
)

const joinBase = `# plant 7 probe
name: plant7 # the node's name
role: probe
api:
  addr: 127.0.0.1:8443 # operators
# devices
mqtt:
  addr: :8883
federation:
  # the regional above
  upstreams:
    - address: eu.example:7443
      token: old
retention:
  log_entries: 2000
`

func TestSetUpstream(t *testing.T) {
	out, old, err := setUpstream([]byte(joinBase), config.Upstream{Address: "hq.example:7443", Token: "t1", Publish: []string{"/devices"}})
	if err != nil || old != nil {
		t.Fatalf("add: %v, old %+v", err, old)
	}
	s := string(out)
	for _, want := range []string{"# plant 7 probe", "# the node's name", "# operators", "# devices", "# the regional above",
		"log_entries: 2000", "address: eu.example:7443", "address: hq.example:7443", "token: t1", "- /devices"} {
		if !strings.Contains(s, want) {
			t.Errorf("lost %q:\n%s", want, s)
		}
	}
	cfg, err := config.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if ups := cfg.Federation.Upstreams; len(ups) != 2 || ups[1].Address != "hq.example:7443" || ups[1].Publish[0] != "/devices" ||
		cfg.Retention.LogEntries != 2000 || cfg.MQTT.Addr != ":8883" {
		t.Fatalf("parsed back: %+v", cfg)
	}

	// The same address is replaced, in place.
	out, old, err = setUpstream(out, config.Upstream{Address: "eu.example:7443", Token: "new"})
	if err != nil || old == nil || old.Token != "old" {
		t.Fatalf("replace: %v, old %+v", err, old)
	}
	cfg, _ = config.Parse(out)
	if ups := cfg.Federation.Upstreams; len(ups) != 2 || ups[0].Token != "new" || ups[0].Address != "eu.example:7443" {
		t.Fatalf("replaced: %+v", ups)
	}
	if !strings.Contains(string(out), "# the regional above") {
		t.Errorf("lost the entry's comment:\n%s", out)
	}

	// An empty file, and one without federation.
	for _, in := range []string{"", "name: x\n", "name: x\nfederation:\n", "name: x\nfederation:\n  addr: :7443\n  upstreams: []\n"} {
		out, _, err := setUpstream([]byte(in), config.Upstream{Address: "a.example:1", Token: "t"})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		cfg, err := config.Parse(out)
		if err != nil || len(cfg.Federation.Upstreams) != 1 {
			t.Fatalf("%q → %q: %v %+v", in, out, err, cfg.Federation)
		}
	}
	for _, in := range []string{"- a\n", "federation:\n  upstreams: 3\n", "federation: [\n", "federation: 0\n"} {
		if _, _, err := setUpstream([]byte(in), config.Upstream{Address: "a.example:1", Token: "t"}); err == nil {
			t.Errorf("%q: edited", in)
		}
	}
}

func TestRemoveUpstream(t *testing.T) {
	two, _, _ := setUpstream([]byte(joinBase), config.Upstream{Address: "hq.example:7443", Token: "t1"})
	out, found, err := removeUpstream(two, "eu.example:7443")
	if err != nil || !found {
		t.Fatalf("remove: %v %v", found, err)
	}
	cfg, err := config.Parse(out)
	if err != nil || len(cfg.Federation.Upstreams) != 1 || cfg.Federation.Upstreams[0].Address != "hq.example:7443" {
		t.Fatalf("left: %v %+v", err, cfg.Federation)
	}
	if !strings.Contains(string(out), "# operators") {
		t.Errorf("lost comments:\n%s", out)
	}
	// The last one goes with its keys.
	out, found, _ = removeUpstream(out, "hq.example:7443")
	if !found || strings.Contains(string(out), "federation") || !strings.Contains(string(out), "log_entries: 2000") {
		t.Fatalf("last removed:\n%s", out)
	}
	if _, found, _ := removeUpstream(out, "hq.example:7443"); found {
		t.Fatal("removed twice")
	}
	// Other federation keys stay.
	out, _, _ = removeUpstream([]byte("name: x\nfederation:\n  addr: :7443\n  upstreams:\n    - address: a:1\n"), "a:1")
	if string(out) != "name: x\nfederation:\n  addr: :7443\n" {
		t.Fatalf("got %q", out)
	}
}

// fakeReloadAPI answers the reload as a running node does.
func fakeReloadAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method+" "+r.URL.Path == "POST /api/v1/federation/reload" {
		io.WriteString(w, `{"upstreams":[{"address":"hq.example:7443","publish":[]}]}`)
		return
	}
	w.WriteHeader(404)
	io.WriteString(w, `{"error":"no","code":"not_found"}`)
}

func TestJoinLeave(t *testing.T) {
	n := newFakeNode(t, fakeReloadAPI)
	before, _ := os.ReadFile(n.config)
	st, _ := os.Stat(n.config)

	// A kept certificate for that consumer is dropped with a new token.
	state := filepath.Join(n.dir, "federation", "hq.example_7443")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, nil, "", "join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "sfj1.x",
		"--publish", "/devices", "--publish", "/groups")
	if code != 0 || !strings.Contains(out, "added upstream hq.example:7443") || !strings.Contains(out, "/devices, /groups") ||
		!strings.Contains(out, "the running node applied it") {
		t.Fatalf("join: exit %d, %q, %q", code, out, errOut)
	}
	if r := n.last(t); r.method != "POST" || r.path != "/api/v1/federation/reload" || r.auth != "Bearer "+n.token {
		t.Fatalf("reload request %+v", r)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("old state kept: %v", err)
	}
	cfg, err := config.Load(n.config)
	if err != nil {
		t.Fatal(err)
	}
	if ups := cfg.Federation.Upstreams; len(ups) != 1 || ups[0].Token != "sfj1.x" || len(ups[0].Publish) != 2 {
		t.Fatalf("upstreams %+v", ups)
	}
	if st2, _ := os.Stat(n.config); st2.Mode() != st.Mode() {
		t.Fatalf("mode %v, was %v", st2.Mode(), st.Mode())
	}

	// The same token again keeps the state (the join already happened).
	os.MkdirAll(state, 0o700)
	if code, _, errOut := runCmd(t, nil, "", "join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "sfj1.x"); code != 0 {
		t.Fatal(errOut)
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state dropped for the same token: %v", err)
	}

	code, out, errOut = runCmd(t, nil, "", "leave", "-c", n.config, "--upstream", "hq.example:7443")
	if code != 0 || !strings.Contains(out, "removed upstream hq.example:7443") {
		t.Fatalf("leave: exit %d, %q, %q", code, out, errOut)
	}
	after, _ := os.ReadFile(n.config)
	cfgBefore, _ := config.Parse(before)
	cfgAfter, _ := config.Parse(after)
	if cfgAfter.Name != cfgBefore.Name || cfgAfter.API != cfgBefore.API || len(cfgAfter.Federation.Upstreams) != 0 {
		t.Fatalf("after leave:\n%s", after)
	}
	code, _, errOut = runCmd(t, nil, "", "leave", "-c", n.config, "--upstream", "hq.example:7443")
	if code != 1 || !strings.Contains(errOut, "has no upstream hq.example:7443") {
		t.Fatalf("leave twice: exit %d, %q", code, errOut)
	}

	// A stopped node: the change waits for its next start.
	n.srv.Close()
	code, out, errOut = runCmd(t, nil, "", "join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "t")
	if code != 0 || !strings.Contains(out, "takes effect at its next start") {
		t.Fatalf("join, stopped: exit %d, %q, %q", code, out, errOut)
	}
}

func TestJoinErrors(t *testing.T) {
	n := newFakeNode(t, fakeReloadAPI)
	before, _ := os.ReadFile(n.config)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"join", "-c", n.config, "--token", "t"}, `required flag(s) "upstream" not set`},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443"}, `required flag(s) "token" not set`},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example", "--token", "t"}, "--upstream"},
		{[]string{"join", "-c", n.config, "--upstream", ":7443", "--token", "t"}, "no host"},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443", "--token", " "}, "--token"},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "t", "--publish", "/a/../b"}, "would not be valid, left unchanged"},
		{[]string{"join", "-c", filepath.Join(n.dir, "nope.yaml"), "--upstream", "hq.example:7443", "--token", "t"}, "no such file"},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "t", "extra"}, "unknown command"},
		{[]string{"leave", "-c", n.config}, `required flag(s) "upstream" not set`},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "t", "--replica", "hq2.example"}, "--replica"},
		{[]string{"join", "-c", n.config, "--upstream", "hq.example:7443", "--token", "t", "--replica", "hq.example:7443"}, "would not be valid, left unchanged"},
	} {
		code, _, errOut := runCmd(t, nil, "", tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q, want %q", tc.args, code, errOut, tc.want)
		}
	}
	if after, _ := os.ReadFile(n.config); string(after) != string(before) {
		t.Fatalf("a refused command changed the file:\n%s", after)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.reqs) != 0 {
		t.Fatalf("refused commands sent %d requests", len(n.reqs))
	}
}

// A consumer that is a cluster: --replica lists its other addresses.
func TestJoinReplicas(t *testing.T) {
	n := newFakeNode(t, fakeReloadAPI)
	code, out, errOut := runCmd(t, nil, "", "join", "-c", n.config, "--upstream", "eu-1.example:7443", "--token", "sfj1.x",
		"--replica", "eu-2.example:7443", "--replica", "eu-3.example:7443")
	if code != 0 || !strings.Contains(out, "added upstream eu-1.example:7443") {
		t.Fatalf("join: exit %d, %q, %q", code, out, errOut)
	}
	cfg, err := config.Load(n.config)
	if err != nil {
		t.Fatal(err)
	}
	if ups := cfg.Federation.Upstreams; len(ups) != 1 || strings.Join(ups[0].Replicas, ",") != "eu-2.example:7443,eu-3.example:7443" {
		t.Fatalf("upstreams %+v", ups)
	}
}
