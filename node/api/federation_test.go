package api

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
)

// fakeFed stands in for the node's federation service: one provider,
// plant7, is mounted.
type fakeFed struct {
	mu      sync.Mutex
	calls   []federation.CallRequest
	gets    []federation.Identity
	grants  []federation.JoinGrant
	revoked []string

	callResult federation.CallResult
	callErr    error
	getCtx     *model.Context
	getErr     error
	alertReqs  []fakeAlertReq
}

type fakeAlertReq struct {
	id   federation.Identity
	path model.Path
	body string
}

var _ Federation = (*fakeFed)(nil)

func (f *fakeFed) Peers() []federation.PeerStatus {
	return []federation.PeerStatus{{Name: "plant7", Direction: "provider", State: "connected", Grant: "operate", Mount: "/peers/plant7"}}
}

func (f *fakeFed) CreateJoinToken(_ context.Context, g federation.JoinGrant) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants = append(f.grants, g)
	return "sfj1.secret", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), nil
}

func (f *fakeFed) Revoke(_ context.Context, peer string) error {
	if peer != "plant7" {
		return fmt.Errorf("federation: peer %q: %w", peer, model.ErrNotFound)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, peer)
	return nil
}

func (f *fakeFed) Verify(context.Context) ([]federation.VerifyResult, error) {
	return []federation.VerifyResult{{Peer: "plant7", Mount: "/peers/plant7", Match: true, Seq: 9, Contexts: 3}}, nil
}

func (f *fakeFed) Alert(_ context.Context, id federation.Identity, p model.Path, body []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.alertReqs = append(f.alertReqs, fakeAlertReq{id, p, string(body)})
	return []byte(`{"path":"/alerts/a1","id":"a1","state":"firing","acked":true,"acked_by":"` + id.User + `@hq"}`), nil
}

func (f *fakeFed) Mounted(p model.Path) bool { return p.Within("/peers/plant7") }

func (f *fakeFed) Call(_ context.Context, req federation.CallRequest) (federation.CallResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	return f.callResult, f.callErr
}

func (f *fakeFed) Get(_ context.Context, id federation.Identity, p model.Path) (*model.Context, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, id)
	if f.getErr != nil {
		return nil, f.getErr
	}
	c := *f.getCtx
	c.Path = p
	return &c, nil
}

func (f *fakeFed) History(_ context.Context, id federation.Identity, p model.Path, query []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, id)
	if f.getErr != nil {
		return nil, f.getErr
	}
	return []byte("[]"), nil
}

func (f *fakeFed) Job(_ context.Context, id federation.Identity, node model.Path, jobID string) (federation.CallResult, error) {
	if node != "/peers/plant7" || jobID != "j2" {
		return federation.CallResult{}, fmt.Errorf("%w: job %s", model.ErrNotFound, jobID)
	}
	return federation.CallResult{Job: "j2", State: "running", Node: "/peers/plant7", Path: "/devices/d1"}, nil
}

func (f *fakeFed) nCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func withFed(f *fakeFed, reload func(context.Context) ([]federation.Upstream, error)) envOption {
	return func(c *Config, _ *auth.Config, _ *model.Config) {
		c.Federation = f
		c.ReloadFederation = reload
	}
}

func TestFederationDisabled(t *testing.T) {
	e := newEnv(t)
	for _, rq := range []struct{ method, path string }{
		{"GET", "/api/v1/peers"},
		{"POST", "/api/v1/peer-tokens"},
		{"POST", "/api/v1/peers/x/revoke"},
		{"POST", "/api/v1/federation/verify"},
		{"POST", "/api/v1/federation/reload"},
	} {
		var body any
		if rq.path == "/api/v1/peer-tokens" {
			body = map[string]any{"peer": "x", "grant": "read"}
		}
		e.want(e.do(rq.method, rq.path, e.admin, body), 501, codeNotImplemented)
	}
	// Without federation, /peers is still reserved for mirrors.
	e.want(e.do("PUT", "/api/v1/contexts/peers/x", e.admin, map[string]any{"type": "folder"}), 409, codeMountedReadOnly)
	// The audit trail is the node's, federation or not.
	e.want(e.do("GET", "/api/v1/audit", e.admin, nil), 200, "")
}

func TestPeerEndpoints(t *testing.T) {
	f := &fakeFed{}
	reload := func(context.Context) ([]federation.Upstream, error) {
		return []federation.Upstream{{Address: "hq.example:7443", Token: "secret", Publish: []model.Path{"/devices"}}}, nil
	}
	e := newEnv(t, withFed(f, reload))
	c := e.tenants()

	var peers struct {
		Peers []federation.PeerStatus `json:"peers"`
	}
	r := e.do("GET", "/api/v1/peers", c.alice, nil)
	e.want(r, 200, "")
	r.json(t, &peers)
	if len(peers.Peers) != 1 || peers.Peers[0].Name != "plant7" {
		t.Fatalf("peers = %+v", peers)
	}
	e.want(e.do("GET", "/api/v1/peers", c.vera, nil), 403, codeForbidden) // viewer of /devices only

	// Peer tokens: system administrators only.
	body := map[string]any{"peer": "plant7", "grant": "operate", "subtrees": []string{"/devices"}, "ttl": "2h"}
	e.want(e.do("POST", "/api/v1/peer-tokens", c.ada, body), 403, codeForbidden) // a tenant admin
	r = e.do("POST", "/api/v1/peer-tokens", e.admin, body)
	e.want(r, 201, "")
	var tok struct {
		Token    string    `json:"token"`
		Peer     string    `json:"peer"`
		Grant    string    `json:"grant"`
		Subtrees []string  `json:"subtrees"`
		Expires  time.Time `json:"expires"`
	}
	r.json(t, &tok)
	if tok.Token != "sfj1.secret" || tok.Peer != "plant7" || tok.Grant != "operate" || len(tok.Subtrees) != 1 || tok.Expires.Year() != 2030 {
		t.Fatalf("token = %+v", tok)
	}
	if g := f.grants[0]; g.TTL != 2*time.Hour || g.Subtrees[0] != "/devices" {
		t.Fatalf("grant = %+v", g)
	}
	for _, bad := range []map[string]any{
		{"peer": "plant7", "grant": "write"},
		{"peer": "Plant 7", "grant": "read"},
		{"peer": "plant7", "grant": "read", "subtrees": []string{"/a/../b"}},
		{"peer": "plant7", "grant": "read", "ttl": "soon"},
		{"peer": "plant7", "grant": "read", "extra": true},
	} {
		e.want(e.do("POST", "/api/v1/peer-tokens", e.admin, bad), 400, codeInvalid)
	}

	// Revoke.
	e.want(e.do("POST", "/api/v1/peers/plant7/revoke", c.alice, nil), 403, codeForbidden)
	e.want(e.do("POST", "/api/v1/peers/plant7/revoke", e.admin, nil), 204, "")
	e.want(e.do("POST", "/api/v1/peers/plant9/revoke", e.admin, nil), 404, codeNotFound)
	if len(f.revoked) != 1 {
		t.Fatalf("revoked = %v", f.revoked)
	}

	// Verify: operators.
	var v struct {
		Mounts []federation.VerifyResult `json:"mounts"`
	}
	r = e.do("POST", "/api/v1/federation/verify", c.alice, nil)
	e.want(r, 200, "")
	r.json(t, &v)
	if len(v.Mounts) != 1 || !v.Mounts[0].Match {
		t.Fatalf("verify = %+v", v)
	}
	e.want(e.do("POST", "/api/v1/federation/verify", c.vera, nil), 403, codeForbidden)

	// Reload: the answer never shows tokens.
	e.want(e.do("POST", "/api/v1/federation/reload", c.ada, nil), 403, codeForbidden)
	r = e.do("POST", "/api/v1/federation/reload", e.admin, nil)
	e.want(r, 200, "")
	if !strings.Contains(string(r.body), "hq.example:7443") || strings.Contains(string(r.body), "secret") {
		t.Fatalf("reload = %s", r.body)
	}
}

func TestReloadNotWired(t *testing.T) {
	e := newEnv(t, withFed(&fakeFed{}, nil))
	e.want(e.do("POST", "/api/v1/federation/reload", e.admin, nil), 501, codeNotImplemented)
}

func TestMountedReadOnly(t *testing.T) {
	f := &fakeFed{}
	e := newEnv(t, withFed(f, nil))
	c := e.tenants()
	for _, rq := range []struct {
		method, path string
		body         any
	}{
		{"PUT", "/api/v1/contexts/peers/plant7/devices/d1", map[string]any{"type": "device"}},
		{"DELETE", "/api/v1/contexts/peers/plant7/devices/d1", nil},
		{"POST", "/api/v1/events/peers/plant7/devices/d1", map[string]any{"type": "note", "level": "info"}},
		{"PUT", "/api/v1/contexts/peers", map[string]any{"type": "folder"}},
	} {
		for _, tok := range []string{e.admin, c.alice} {
			r := e.do(rq.method, rq.path, tok, rq.body)
			e.want(r, 409, codeMountedReadOnly)
			if strings.Contains(rq.path, "plant7") && !strings.Contains(string(r.body), "mirror of peer plant7; change it on that node") {
				t.Fatalf("%s %s: %s", rq.method, rq.path, r.body)
			}
		}
	}
	// A viewer is refused for its role first, as everywhere.
	e.want(e.do("PUT", "/api/v1/contexts/peers/plant7/x", c.vera, map[string]any{"type": "folder"}), 403, codeForbidden)
}

func TestRemoteCalls(t *testing.T) {
	f := &fakeFed{}
	e := newServicesEnv(t, nil, withFed(f, nil))
	c := e.tenants()
	devOp := e.user(auth.UserSpec{Name: "dora", Tenant: "acme", Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/devices"}}})
	const call = "/api/v1/contexts/peers/plant7/devices/d1/functions/reboot"

	f.callResult = federation.CallResult{Job: "j1", State: "succeeded", Result: json.RawMessage(`{"uptime":0}`), Node: "/peers/plant7"}
	r := e.do("POST", call, c.alice, map[string]any{"args": map[string]any{"delay": 1}, "wait": "5s"})
	e.want(r, 200, "")
	var out struct {
		Job    string          `json:"job"`
		Node   string          `json:"node"`
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
	}
	r.json(t, &out)
	if out.Job != "j1" || out.Node != "/peers/plant7" || out.State != "succeeded" || string(out.Result) != `{"uptime":0}` {
		t.Fatalf("answer = %s", r.body)
	}
	got := f.calls[0]
	if got.Path != "/peers/plant7/devices/d1" || got.Function != "reboot" || got.Wait != 5*time.Second ||
		string(got.Args) != `{"delay":1}` || !reflect.DeepEqual(got.Identity, federation.Identity{User: "alice", Tenant: "acme"}) {
		t.Fatalf("call = %+v", got)
	}

	// Pending: 202 with the job and its node.
	f.callResult = federation.CallResult{Job: "j2", State: "queued", Node: "/peers/plant7"}
	r = e.do("POST", call, e.admin, nil)
	e.want(r, 202, "")
	r.json(t, &out)
	if out.Job != "j2" || out.State != "queued" || out.Node != "/peers/plant7" {
		t.Fatalf("answer = %s", r.body)
	}
	if id := f.calls[1].Identity; !id.System || id.User != "admin" {
		t.Fatalf("system identity = %+v", id)
	}

	// The pending job is followed through the node that owns it.
	r = e.do("GET", "/api/v1/jobs/j2?node=/peers/plant7", c.alice, nil)
	e.want(r, 200, "")
	var job struct {
		Job, State, Node, Path string
	}
	r.json(t, &job)
	if job.Job != "j2" || job.State != "running" || job.Node != "/peers/plant7" || job.Path != "/peers/plant7/devices/d1" {
		t.Fatalf("remote job = %s", r.body)
	}
	e.want(e.do("GET", "/api/v1/jobs/j9?node=/peers/plant7", c.alice, nil), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/jobs/j2?node=/peers/plant7", devOp, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/jobs/j2?node=/peers/../x", c.alice, nil), 400, codeInvalid)

	// Link errors get their own answers.
	f.callErr = fmt.Errorf("%w: the link to plant7 is down", federation.ErrUnreachable)
	r = e.do("POST", call, c.alice, nil)
	e.want(r, 503, codePeerUnreachable)
	if !strings.Contains(string(r.body), "cannot be reached") {
		t.Fatalf("unreachable: %s", r.body)
	}
	f.callErr = fmt.Errorf("%w: plant7 granted read", federation.ErrForbidden)
	e.want(e.do("POST", call, c.alice, nil), 403, codePeerForbidden)
	f.callErr = fmt.Errorf("%w: context /devices/d1", model.ErrNotFound)
	e.want(e.do("POST", call, c.bob, nil), 404, codeNotFound)

	// This node's grants apply first: nothing goes down the link.
	n := f.nCalls()
	e.want(e.do("POST", call, c.vera, nil), 403, codeForbidden)
	e.want(e.do("POST", call, devOp, nil), 403, codeForbidden) // operator of /devices, not of /peers
	e.want(e.do("POST", call, c.alice, map[string]any{"wait": "forever"}), 400, codeInvalid)
	if f.nCalls() != n {
		t.Fatal("a refused call went down the link")
	}

	// A path that is not mounted stays local.
	e.want(e.do("POST", "/api/v1/contexts/peers/plant9/devices/d1/functions/reboot", e.admin, nil), 404, codeNotFound)
	e.want(e.do("POST", "/api/v1/contexts/devices/d1/functions/reboot", e.admin, nil), 404, codeNotFound)
	if f.nCalls() != n {
		t.Fatal("a local call went down the link")
	}
}

func TestLiveReads(t *testing.T) {
	f := &fakeFed{getCtx: &model.Context{Type: "device", Tenant: "acme", Version: 7}}
	e := newEnv(t, withFed(f, nil))
	c := e.tenants()
	const path = "/api/v1/contexts/peers/plant7/devices/d1"

	r := e.do("GET", path+"?live=true", c.alice, nil)
	e.want(r, 200, "")
	var got contextJSON
	r.json(t, &got)
	if got.Path != "/peers/plant7/devices/d1" || got.Version != 7 || got.Tenant != "acme" {
		t.Fatalf("live = %s", r.body)
	}
	if !reflect.DeepEqual(f.gets[0], federation.Identity{User: "alice", Tenant: "acme"}) {
		t.Fatalf("identity = %+v", f.gets[0])
	}
	// Another tenant's context reads as missing, even if the provider
	// answered it.
	e.want(e.do("GET", path+"?live=true", c.bob, nil), 404, codeNotFound)
	// Without live, the mirror here is read (empty in this test).
	e.want(e.do("GET", path, c.alice, nil), 404, codeNotFound)
	e.want(e.do("GET", path+"?live=maybe", c.alice, nil), 400, codeInvalid)
	e.want(e.do("GET", path+"?live=true", c.vera, nil), 403, codeForbidden)
	f.getErr = fmt.Errorf("%w: down", federation.ErrUnreachable)
	e.want(e.do("GET", path+"?live=true", c.alice, nil), 503, codePeerUnreachable)
	if len(f.gets) != 3 {
		t.Fatalf("reads down the link = %d, want 3", len(f.gets))
	}
}

// The audit listing: newest first; all of it for system administrators,
// its own tenant's records for a tenant administrator, refused to others.
func TestAuditListing(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	put := func(i int, rec audit.Record) {
		rec.Time = base.Add(time.Duration(i) * time.Second)
		data, _ := json.Marshal(rec)
		if err := e.model.PutRecord(e.ctx, audit.Kind, audit.Key(rec.Time, uint64(i)), data); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		put(i, audit.Record{Consumer: "hq", User: "alice", Tenant: "acme", Op: "call", Path: "/devices/d1", Function: "reboot", Outcome: "ok"})
	}
	put(5, audit.Record{User: "bob", Tenant: "globex", Op: "context.put", Path: "/x", Outcome: "ok"})
	put(6, audit.Record{User: "root", System: true, Op: "user.create", Target: "ada", Outcome: "ok"})
	var out struct {
		Records []audit.Record `json:"records"`
	}
	r := e.do("GET", "/api/v1/audit?limit=2", e.admin, nil)
	e.want(r, 200, "")
	r.json(t, &out)
	if len(out.Records) != 2 || !out.Records[0].Time.Equal(base.Add(6*time.Second)) || !out.Records[1].Time.Equal(base.Add(5*time.Second)) ||
		out.Records[0].ID != audit.Key(base.Add(6*time.Second), 6) {
		t.Fatalf("audit = %s", r.body)
	}
	count := func(token string) (n int, tenants map[string]bool) {
		t.Helper()
		r := e.do("GET", "/api/v1/audit?limit=100", token, nil)
		e.want(r, 200, "")
		out.Records = nil
		r.json(t, &out)
		tenants = map[string]bool{}
		for _, rec := range out.Records {
			if rec.Op != "call" && rec.Op != "context.put" && rec.Op != "user.create" {
				continue // this listing's own records and the env's setup
			}
			n++
			tenants[rec.Tenant] = true
		}
		return n, tenants
	}
	if n, ts := count(e.admin); n != 7 || len(ts) != 3 {
		t.Fatalf("system admin sees %d records of %v", n, ts)
	}
	if n, ts := count(c.ada); n != 5 || len(ts) != 1 || !ts["acme"] {
		t.Fatalf("acme's admin sees %d records of %v", n, ts)
	}
	if n, ts := count(c.gina); n != 1 || !ts["globex"] {
		t.Fatalf("globex's admin sees %d records of %v", n, ts)
	}
	e.want(e.do("GET", "/api/v1/audit", c.alice, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/audit", c.vera, nil), 403, codeForbidden)
	e.want(e.do("GET", "/api/v1/audit?limit=0", e.admin, nil), 400, codeInvalid)
}
