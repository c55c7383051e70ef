package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
)

// fedNode is a started node with its CA, config file and admin client.
type fedNode struct {
	n     *Node
	file  string
	admin *client.Client
}

// startFedNode starts a node called name with a CA (so federation is on);
// fedAddr "" means no federation listener. The config is written to
// strata.yaml, so that reloads read it.
func startFedNode(t *testing.T, name, fedAddr string, ups ...config.Upstream) *fedNode {
	t.Helper()
	dir := t.TempDir()
	id, err := WriteIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = name, dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.Federation.Addr = fedAddr
	cfg.Federation.Upstreams = ups
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	n, err := New(Options{Config: cfg, ConfigFile: file, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	cl, err := client.New("https://"+n.APIAddr(), id.AdminToken, id.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.CloseIdleConnections)
	return &fedNode{n: n, file: file, admin: cl}
}

func writeConfig(t *testing.T, file string, cfg config.Config) {
	t.Helper()
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func apiStatus(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// enrollDevice enrolls hardware hw in tenant ("": shared) on n and
// declares functions on its context, as its inventory would; it returns
// the device's path.
func enrollDevice(t *testing.T, n *Node, tenant, hw string, functions ...string) model.Path {
	t.Helper()
	ctx := context.Background()
	sys := &auth.Principal{User: "admin", System: true}
	tok, _, err := n.devices.CreateToken(ctx, sys, devices.TokenSpec{Group: "g", Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	e, err := n.devices.Enroll(ctx, devices.EnrollRequest{Token: tok, HardwareID: hw}, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	fns := make([]model.Function, len(functions))
	for i, f := range functions {
		fns[i] = model.Function{Name: f}
	}
	if _, err := n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path, Functions: fns, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	return e.Path
}

func TestFederationWiring(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	if hq.n.FederationAddr() == "" || hq.n.Federation() == nil {
		t.Fatal("hq has no federation")
	}
	// The probe starts with no upstream and no listener: it joins while
	// running, as strata join does (edit the file, then reload).
	probe := startFedNode(t, "plant7", "")
	d1 := enrollDevice(t, probe.n, "acme", "hw-1", "reboot")
	if _, err := probe.n.Model().Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/secret/s1", Type: "folder"}); err != nil {
		t.Fatal(err)
	}

	tok, err := hq.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "plant7", Grant: "operate"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(probe.file)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Federation.Upstreams = []config.Upstream{{Address: hq.n.FederationAddr(), Token: tok.Token, Publish: []string{"/devices"}}}
	writeConfig(t, probe.file, cfg)
	ups, err := probe.admin.ReloadFederation(ctx)
	if err != nil || len(ups) != 1 || ups[0].Address != hq.n.FederationAddr() {
		t.Fatalf("reload: %+v, %v", ups, err)
	}

	mirrored := "/peers/plant7" + string(d1)
	tstest.WaitForErr(t, 20*time.Second, "the mirror at hq", func() (bool, error) {
		c, err := hq.admin.GetContext(ctx, mirrored)
		return err == nil && len(c.Functions) == 1, err
	})
	if _, err := hq.admin.GetContext(ctx, "/peers/plant7/secret/s1"); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("an unpublished subtree at hq: %v", err)
	}
	peers, err := hq.admin.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].Name != "plant7" || peers[0].Direction != "provider" || peers[0].State != "connected" {
		t.Fatalf("hq peers: %+v, %v", peers, err)
	}

	// A call on the mirror becomes a job on the probe, made by hq's admin.
	j, status, err := hq.admin.Call(ctx, mirrored, "reboot", client.Call{})
	if err != nil || status != http.StatusAccepted || j.ID == "" || j.State != client.JobQueued {
		t.Fatalf("call: %d %+v %v", status, j, err)
	}
	pj, err := probe.admin.GetJob(ctx, j.ID)
	if err != nil || pj.CreatedBy != "admin@hq" || pj.Path != string(d1) || pj.Tenant != "acme" {
		t.Fatalf("job at the probe: %+v, %v", pj, err)
	}

	// Another tenant's operator at hq: the probe answers not found.
	sys := &auth.Principal{User: "admin", System: true}
	if _, err := hq.n.auth.CreateUser(ctx, sys, auth.UserSpec{Name: "bob", Password: "password-bob", Tenant: "globex",
		Grants: []auth.Grant{{Role: auth.RoleOperator, Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}
	bobTok, _, err := hq.n.auth.CreateToken(ctx, sys, "bob", "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bob := hq.admin.WithToken(bobTok)
	if _, _, err := bob.Call(ctx, mirrored, "reboot", client.Call{}); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("call by another tenant: %v", err)
	}
	if _, err := bob.GetContextLive(ctx, mirrored); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("live read by another tenant: %v", err)
	}

	// A live read; the mirror is read-only.
	c, err := hq.admin.GetContextLive(ctx, mirrored)
	if err != nil || c.Path != mirrored || c.Tenant != "acme" {
		t.Fatalf("live read: %+v, %v", c, err)
	}
	_, _, err = hq.admin.PutContext(ctx, mirrored, client.ContextUpdate{Labels: map[string]string{"x": "y"}})
	if !client.IsCode(err, client.CodeMountedReadOnly) || !strings.Contains(err.Error(), "plant7") {
		t.Fatalf("write into the mirror: %v", err)
	}

	// The probe audited what it received, newest first.
	recs, err := probe.admin.Audit(ctx, 10)
	recs = overLinks(recs)
	if err != nil || len(recs) != 4 {
		t.Fatalf("audit: %+v, %v", recs, err)
	}
	first, last := recs[len(recs)-1], recs[0]
	if first.Op != "call" || first.Consumer != "hq" || first.User != "admin" || first.Function != "reboot" || first.Outcome != "pending" || first.Job != j.ID ||
		first.Path != string(d1) {
		t.Fatalf("first audit record: %+v", first)
	}
	if last.Op != "get" || last.User != "admin" || recs[1].User != "bob" || recs[1].Outcome == "ok" {
		t.Fatalf("audit records: %+v", recs)
	}

	tstest.WaitForErr(t, 20*time.Second, "the mount to verify", func() (bool, error) {
		ms, err := hq.admin.VerifyFederation(ctx)
		return err == nil && len(ms) == 1 && ms[0].Match, err
	})
	if keep := hq.n.compactKeep(); keep != hq.n.cfg.Retention.LogEntries {
		t.Fatalf("hq has no consumer: keep %d", keep)
	}
	if keep := probe.n.compactKeep(); keep < probe.n.cfg.Retention.LogEntries {
		t.Fatalf("probe keeps %d", keep)
	}

	// Revoked: the link drops and calls answer peer_unreachable.
	if err := hq.admin.RevokePeer(ctx, "plant7"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, 20*time.Second, "the call refused after revocation", func() (bool, error) {
		_, _, err := hq.admin.Call(ctx, mirrored, "reboot", client.Call{})
		return client.IsCode(err, client.CodePeerUnreachable), err
	})
}

func TestFederationOffWithoutCA(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if n.Federation() != nil || n.FederationAddr() != "" {
		t.Fatal("federation without a CA")
	}
	cfg = testConfig(t)
	cfg.Federation.Addr = "127.0.0.1:0"
	if _, err := New(Options{Config: cfg}); err == nil || !strings.Contains(err.Error(), "federation.addr needs the node's CA") {
		t.Fatalf("a listener without a CA: %v", err)
	}
}

// joinNode makes provider p publish subtrees to consumer c with grant,
// through the config file and a reload, as strata join does.
func joinNode(t *testing.T, p, c *fedNode, name, grant string, publish ...string) {
	t.Helper()
	ctx := context.Background()
	tok, err := c.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: name, Grant: grant})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p.file)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Federation.Upstreams = append(cfg.Federation.Upstreams,
		config.Upstream{Address: c.n.FederationAddr(), Token: tok.Token, Publish: publish})
	writeConfig(t, p.file, cfg)
	if _, err := p.admin.ReloadFederation(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFederationThreeTiers(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p7 := startFedNode(t, "plant7", "")
	d1 := enrollDevice(t, p7.n, "acme", "hw-1", "ping")
	joinNode(t, eu, hq, "eu", "operate")
	joinNode(t, p7, eu, "plant7", "operate", "/devices")

	path := "/peers/eu/peers/plant7" + string(d1)
	tstest.WaitForErr(t, 20*time.Second, "plant7's device at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, path)
		return err == nil, err
	})
	j, status, err := hq.admin.Call(ctx, path, "ping", client.Call{})
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("call through two links: %d %+v %v", status, j, err)
	}
	if pj, err := p7.admin.GetJob(ctx, j.ID); err != nil || pj.CreatedBy != "admin@eu" {
		t.Fatalf("job at plant7: %+v %v", pj, err)
	}
	// plant7 audits the call with the path it came through; eu audits
	// what it forwarded.
	recs, err := p7.admin.Audit(ctx, 10)
	recs = overLinks(recs)
	if err != nil || len(recs) != 1 || recs[0].Consumer != "eu" || strings.Join(recs[0].Via, ">") != "hq>eu" || recs[0].User != "admin" {
		t.Fatalf("audit at plant7: %+v %v", recs, err)
	}
	recs, err = eu.admin.Audit(ctx, 10)
	recs = overLinks(recs)
	if err != nil || len(recs) != 1 || recs[0].Outcome != "forwarded" || recs[0].Path != "/peers/plant7"+string(d1) {
		t.Fatalf("audit at eu: %+v %v", recs, err)
	}
}

// overLinks keeps the audit records of requests received over links.
func overLinks(recs []client.AuditRecord) []client.AuditRecord {
	var out []client.AuditRecord
	for _, r := range recs {
		if r.Consumer != "" {
			out = append(out, r)
		}
	}
	return out
}
