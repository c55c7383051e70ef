package main

import (
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
)

// fakeNode is an initialised node folder whose API is a fake served with
// the certificate init wrote.
type fakeNode struct {
	dir, config, token string
	srv                *httptest.Server

	mu   sync.Mutex
	reqs []fakeReq
}

type fakeReq struct {
	method, path, query, auth, body string
}

func newFakeNode(t *testing.T, h http.HandlerFunc) *fakeNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{dir: t.TempDir()}
	n.config = filepath.Join(n.dir, configFile)
	// Listen on all addresses in the config: ctl must dial 127.0.0.1.
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if code, _, e := runCmd(t, nil, "", "init", "--dir", n.dir, "--name", "hq", "--api-addr", "0.0.0.0:"+port); code != 0 {
		t.Fatal(e)
	}
	tok, _ := os.ReadFile(filepath.Join(n.dir, adminTokenFile))
	n.token = string(tok)
	tlsCfg, err := certs.ServerConfig(filepath.Join(n.dir, apiCertFile), filepath.Join(n.dir, apiKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.reqs = append(n.reqs, fakeReq{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
		n.mu.Unlock()
		h(w, r)
	}))
	n.srv.Listener.Close()
	n.srv.Listener = ln
	n.srv.TLS = tlsCfg
	n.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	n.srv.StartTLS()
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) last(t *testing.T) fakeReq {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return n.reqs[len(n.reqs)-1]
}

func fakeAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/api/v1/whoami":
		io.WriteString(w, `{"name":"admin","tenant":"","system":true,"grants":[{"role":"admin","subtree":"/"}],"token_id":"abc","created":"2026-01-01T00:00:00Z"}`)
	case r.Method == http.MethodPut:
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"path":"/devices/p1","type":"device","tenant":"acme","labels":{"site":"n"},"variables":{"temp":{"value":21.5,"type":"number","time":"2026-01-01T00:00:00Z"}},"version":3}`)
	case r.URL.Path == "/api/v1/login":
		io.WriteString(w, `{"token":"st_session","id":"sid","expires":"2026-01-01T12:00:00Z","user":{"name":"alice"}}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"no context /devices/nope","code":"not_found"}`)
	}
}

func TestCtlUsesConfigFiles(t *testing.T) {
	n := newFakeNode(t, fakeAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "--config", n.config, "whoami")
	if code != 0 {
		t.Fatalf("whoami: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "name:") || !strings.Contains(out, "admin:/") || !strings.Contains(out, "abc") {
		t.Errorf("whoami output:\n%s", out)
	}
	if got := n.last(t).auth; got != "Bearer "+n.token {
		t.Errorf("Authorization = %q, want the admin token", got)
	}

	// $STRATA_CONFIG, and ./strata.yaml, find the same node.
	if code, _, e := runCmd(t, map[string]string{envConfig: n.config}, "", "ctl", "whoami"); code != 0 {
		t.Errorf("via $STRATA_CONFIG: %s", e)
	}
	t.Chdir(n.dir)
	if code, _, e := runCmd(t, nil, "", "ctl", "whoami"); code != 0 {
		t.Errorf("via ./strata.yaml: %s", e)
	}

	// $STRATA_TOKEN and --token override admin.token; --token wins.
	runCmd(t, map[string]string{envToken: "st_env"}, "", "ctl", "whoami")
	if got := n.last(t).auth; got != "Bearer st_env" {
		t.Errorf("with $STRATA_TOKEN: %q", got)
	}
	runCmd(t, map[string]string{envToken: "st_env"}, "", "ctl", "--token", "st_flag", "whoami")
	if got := n.last(t).auth; got != "Bearer st_flag" {
		t.Errorf("with --token: %q", got)
	}
}

func TestCtlServerFlag(t *testing.T) {
	n := newFakeNode(t, fakeAPI)
	t.Chdir(n.dir)
	ca := filepath.Join(n.dir, caFile)

	// --server with the implicit ./strata.yaml: the local admin token is
	// not sent elsewhere.
	code, _, errOut := runCmd(t, nil, "", "ctl", "--server", n.srv.URL, "--ca", ca, "whoami")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := n.last(t).auth; got != "" {
		t.Errorf("Authorization = %q, want none", got)
	}
	// Without --ca it trusts the system roots only, which lack the node's CA.
	if code, _, _ := runCmd(t, nil, "", "ctl", "--server", n.srv.URL, "whoami"); code != 1 {
		t.Error("trusted the node's CA without --ca")
	}
	// With the config named explicitly, its files are used.
	runCmd(t, nil, "", "ctl", "--config", n.config, "--server", strings.TrimPrefix(n.srv.URL, "https://"), "whoami")
	if got := n.last(t).auth; got != "Bearer "+n.token {
		t.Errorf("explicit config: Authorization = %q", got)
	}
}

func TestCtlErrorsAndJSON(t *testing.T) {
	n := newFakeNode(t, fakeAPI)
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "get", "/devices/nope")
	if code != 1 || out != "" || errOut != "error: no context /devices/nope (not_found)\n" {
		t.Errorf("API error: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if r := n.last(t); r.path != "/api/v1/contexts/devices/nope" {
		t.Errorf("path = %s", r.path)
	}

	code, out, errOut = runCmd(t, nil, "", "ctl", "-c", n.config, "-o", "json", "put", "/devices/p1",
		"--type", "device", "--label", "site=n", "--label", "old=", "--var", "temp=21.5", "--var", `cfg={"a":[1]}`, "--tenant", "acme")
	if code != 0 {
		t.Fatalf("put: exit %d: %s", code, errOut)
	}
	if r := n.last(t); r.method != "PUT" || r.body != `{"type":"device","labels":{"old":"","site":"n"},"variables":{"cfg":{"a":[1]},"temp":21.5},"tenant":"acme"}` {
		t.Errorf("put request = %+v", r)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["path"] != "/devices/p1" || got["version"] != 3.0 {
		t.Errorf("-o json output %q: %v", out, err)
	}

	code, out, _ = runCmd(t, nil, "", "ctl", "-c", n.config, "put", "/devices/p1", "--type", "device")
	if code != 0 || !strings.HasPrefix(out, "created /devices/p1\n") || !strings.Contains(out, "temp  21.5") {
		t.Errorf("put text output:\n%s", out)
	}

	body := filepath.Join(t.TempDir(), "body.json")
	os.WriteFile(body, []byte(`{"type":"device","variables":{"x":true}}`), 0o644)
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "put", "/devices/p1", "--file", body); code != 0 {
		t.Fatal(e)
	}
	if r := n.last(t); r.body != `{"type":"device","variables":{"x":true}}` {
		t.Errorf("--file body = %s", r.body)
	}
	if code, _, e := runCmd(t, nil, `{"type":"x"}`, "ctl", "-c", n.config, "put", "/a", "--file", "-", "--type", "y"); code != 1 || !strings.Contains(e, "cannot be combined") {
		t.Errorf("--file with --type: exit %d, %q", code, e)
	}
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "put", "/a", "--var", "mode=auto"); code != 1 || !strings.Contains(e, "is not JSON") {
		t.Errorf("bad --var: exit %d, %q", code, e)
	}

	code, out, _ = runCmd(t, nil, "hunter2\n", "ctl", "-c", n.config, "login", "--user", "alice", "--password-stdin")
	if code != 0 || out != "st_session\n" {
		t.Errorf("login: exit %d, %q", code, out)
	}
	if r := n.last(t); r.auth != "" || r.body != `{"username":"alice","password":"hunter2"}` {
		t.Errorf("login request = %+v", r)
	}
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "login", "--user", "alice"); code != 1 || !strings.Contains(e, "--password-stdin") {
		t.Errorf("login without a terminal: exit %d, %q", code, e)
	}
}

func TestCtlNoNode(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, errOut := runCmd(t, nil, "", "ctl", "whoami")
	if code != 1 || !strings.Contains(errOut, "strata.yaml not found") {
		t.Errorf("exit %d, %q", code, errOut)
	}
	code, _, errOut = runCmd(t, nil, "", "ctl", "--config", "missing.yaml", "whoami")
	if code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

func TestFormatChange(t *testing.T) {
	var ch client.Change
	json.Unmarshal([]byte(`{"seq":7,"time":"2026-01-01T00:00:00Z","op":"put","path":"/d/p","type":"device","tenant":"acme",
		"labels":{"b":"2","a":"1"},"variables":{"t":{"value":21.5,"type":"number"}},
		"event":{"seq":7,"path":"/d/p","name":"hot","level":"alert","payload":{"x":1}}}`), &ch)
	got := formatChange(ch)
	for _, want := range []string{"7 ", " put /d/p type=device tenant=acme label:a=1 label:b=2 t=21.5 event=alert:hot {\"x\":1}"} {
		if !strings.Contains(got, want) {
			t.Errorf("formatChange = %q, lacks %q", got, want)
		}
	}
	if got := formatChange(client.Change{Reset: true, Op: client.OpReset, Seq: 9}); !strings.HasPrefix(got, "9 reset") {
		t.Errorf("reset = %q", got)
	}
}

// ctl events --subtree reads the event feed: the path, lowest level,
// limit and cursor go as query parameters; the output names each
// event's context and the next page.
func TestCtlEventsSubtree(t *testing.T) {
	n := newFakeNode(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"events":[{"seq":9,"path":"/peers/eu/peers/plant7/devices/pump-12","name":"overheat","level":"alert","time":"2026-01-01T00:00:00Z","payload":{"t":93}},
			{"seq":4,"path":"/devices/d1","level":"warning","time":"2026-01-01T00:00:00Z"}],"next":4}`)
	})
	code, out, errOut := runCmd(t, nil, "", "ctl", "-c", n.config, "events", "/peers", "--subtree", "--level", "alert", "--limit", "2", "--before", "12")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := n.last(t)
	if r.method != "GET" || r.path != "/api/v1/events" || r.query != "before=12&level=alert&limit=2&path=%2Fpeers" {
		t.Errorf("request = %+v", r)
	}
	for _, want := range []string{"PATH", "/peers/eu/peers/plant7/devices/pump-12", "overheat", `{"t":93}`, "/devices/d1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "more: --before 4") {
		t.Errorf("stderr = %q", errOut)
	}
	if code, _, _ := runCmd(t, nil, "", "ctl", "-c", n.config, "events", "--subtree"); code != 0 || n.last(t).query != "path=%2F" {
		t.Errorf("--subtree without PATH: exit %d, query %q", code, n.last(t).query)
	}
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "events", "--subtree", "--since", "2026-01-01T00:00:00Z"); code == 0 || !strings.Contains(e, "--since") {
		t.Errorf("--since with --subtree: exit %d, %q", code, e)
	}
	if code, _, e := runCmd(t, nil, "", "ctl", "-c", n.config, "events"); code == 0 || !strings.Contains(e, "PATH") {
		t.Errorf("events without PATH: exit %d, %q", code, e)
	}
}
