package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/xid"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
)

const bulkWait = time.Minute

// startProbe starts a node like startFedNode, with an MQTT listener for
// devices, and returns what a restart needs.
func startProbe(t *testing.T, name string) *probeNode {
	t.Helper()
	dir := t.TempDir()
	id, err := WriteIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = name, dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	p := &probeNode{fedNode: fedNode{file: file}, token: id.AdminToken, ca: id.CAPEM}
	p.start(t)
	return p
}

type probeNode struct {
	fedNode
	token string
	ca    []byte
}

func (p *probeNode) start(t *testing.T) {
	t.Helper()
	cfg, err := config.Load(p.file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Options{Config: cfg, ConfigFile: p.file, Logger: tstest.Logger(t).With("test_node", cfg.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	cl, err := client.New("https://"+n.APIAddr(), p.token, p.ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.CloseIdleConnections)
	p.n, p.admin = n, cl
}

// restart stops the probe and starts it again from its directory.
func (p *probeNode) restart(t *testing.T) {
	t.Helper()
	if err := p.n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.start(t)
}

// simDevice is an enrolled device connected with Eclipse Paho: it counts
// the commands it receives by job id, and answers each with answer's
// status (nothing while hold is set).
type simDevice struct {
	e      devices.Enrollment
	answer string // "succeeded" or "failed"
	hold   atomic.Bool

	mu   sync.Mutex
	runs map[string]int // job id → commands received
	cl   paho.Client
}

// enrollSim enrolls hw on n in tenant with function reboot, label site and
// variable os.
func enrollSim(t *testing.T, n *Node, tenant, hw, site, os string) *simDevice {
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
	v, err := model.NewVariable(json.RawMessage(fmt.Sprintf("%q", os)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: e.Path, Labels: map[string]string{"site": site},
		Variables: map[string]model.Variable{"os": v}, Functions: []model.Function{{Name: "reboot"}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	return &simDevice{e: e, answer: "succeeded", runs: map[string]int{}}
}

// connect connects d to n's MQTT listener.
func (d *simDevice) connect(t *testing.T, n *Node) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + n.MQTTAddr("tcp")).
		SetClientID(d.e.DeviceID).SetUsername(d.e.MQTTUsername).SetPassword(d.e.MQTTPassword).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	cl := paho.NewClient(o)
	if tk := cl.Connect(); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("device %s: connect: %v", d.e.DeviceID, tk.Error())
	}
	d.mu.Lock()
	d.cl = cl
	d.mu.Unlock()
	t.Cleanup(func() { cl.Disconnect(0) })
	if tk := cl.Subscribe(d.e.TopicPrefix+"cmd/+", 1, func(c paho.Client, m paho.Message) {
		var cmd struct {
			Job string `json:"job"`
		}
		if json.Unmarshal(m.Payload(), &cmd) != nil || cmd.Job == "" {
			return
		}
		d.mu.Lock()
		d.runs[cmd.Job]++
		d.mu.Unlock()
		if !d.hold.Load() {
			d.reply(c, cmd.Job)
		}
	}); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("device %s: subscribe: %v", d.e.DeviceID, tk.Error())
	}
}

func (d *simDevice) reply(c paho.Client, job string) {
	body := `{"status":"succeeded"}`
	d.mu.Lock()
	answer := d.answer
	d.mu.Unlock()
	if answer == "failed" {
		body = `{"status":"failed","error":"disk full"}`
	}
	c.Publish(d.e.TopicPrefix+"cmd/"+job+"/result", 1, false, body)
}

func (d *simDevice) disconnect() {
	d.mu.Lock()
	cl := d.cl
	d.mu.Unlock()
	if cl != nil {
		cl.Disconnect(0)
	}
}

// jobIDs are the job ids d received commands for.
func (d *simDevice) jobIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id := range d.runs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// bulkTruth counts the device jobs of bulk job id on n from its records.
func bulkTruth(t *testing.T, n *Node, id string) client.BulkCounters {
	t.Helper()
	var c client.BulkCounters
	if err := n.jobs.List(func(j jobs.Job) bool {
		if j.Bulk == id {
			c.Count(j.State)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitBulk waits until bulk job id at cl is in state want.
func waitBulk(t *testing.T, cl *client.Client, id string, want client.BulkState) *client.BulkJob {
	t.Helper()
	var b *client.BulkJob
	tstest.WaitForErr(t, bulkWait, "bulk job "+id+" "+string(want), func() (bool, error) {
		var err error
		b, err = cl.GetBulkJob(context.Background(), id)
		return err == nil && b.State == want, err
	})
	return b
}

// A filter at HQ matching devices on two probes below a regional runs
// every matching device exactly once, on its own probe; HQ's counters
// equal the device jobs at the probes; the failure is listed at HQ with
// its error; devices outside the filter, or of another tenant for a
// tenant operator, get nothing.
func TestBulkJobAcrossTiers(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	p2 := startProbe(t, "p2")
	on := map[*Node][]*simDevice{}
	add := func(p *probeNode, tenant, hw, os string) *simDevice {
		d := enrollSim(t, p.n, tenant, hw, "plant-7", os)
		on[p.n] = append(on[p.n], d)
		return d
	}
	a1 := add(p1, "acme", "a1", "android")
	a2 := add(p1, "acme", "a2", "android")
	a3 := add(p1, "acme", "a3", "android")
	i1 := add(p1, "acme", "i1", "ios")
	a4 := add(p2, "acme", "a4", "android")
	a5 := add(p2, "acme", "a5", "android")
	a5.answer = "failed"
	g1 := add(p2, "globex", "g1", "android")
	for _, p := range []*probeNode{p1, p2} {
		for _, d := range on[p.n] {
			d.connect(t, p.n)
		}
	}
	joinNode(t, eu, hq, "eu", "operate")
	joinNode(t, &p1.fedNode, eu, "p1", "operate", "/devices")
	joinNode(t, &p2.fedNode, eu, "p2", "operate", "/devices")
	for _, d := range []struct {
		p  string
		sd *simDevice
	}{{"p1", i1}, {"p2", g1}} {
		path := "/peers/eu/peers/" + d.p + string(d.sd.e.Path)
		tstest.WaitForErr(t, bulkWait, path+" at hq", func() (bool, error) {
			_, err := hq.admin.GetContext(ctx, path)
			return err == nil, err
		})
	}

	filter := map[string]string{"path": "/peers/eu", "type": "device", "var.os": "android", "label.site": "plant-7"}
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Args: json.RawMessage(`{"force":true}`),
		Target: client.BulkTarget{Filter: filter}, Rollout: json.RawMessage(`{"waves":[100]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if b.State != client.BulkRunning || !b.Bulk || b.CreatedBy != "admin" || string(b.Rollout) != `{"waves":[100]}` {
		t.Fatalf("created: %+v", b)
	}
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	want := client.BulkCounters{Total: 6, Succeeded: 5, Failed: 1}
	if done.Counters != want {
		t.Fatalf("counters at hq: %+v, want %+v", done.Counters, want)
	}
	truth := bulkTruth(t, p1.n, b.ID)
	truth.Add(bulkTruth(t, p2.n, b.ID))
	if truth != done.Counters {
		t.Fatalf("hq's counters %+v, the probes' device jobs %+v", done.Counters, truth)
	}
	for node, c := range map[string]client.BulkCounters{
		"/peers/eu/peers/p1": {Total: 3, Succeeded: 3},
		"/peers/eu/peers/p2": {Total: 3, Succeeded: 2, Failed: 1},
		"/peers/eu":          {},
	} {
		if got := done.Peers[node]; got.BulkCounters != c || got.State != client.BulkDone {
			t.Errorf("peer %s: %+v, want %+v done", node, got, c)
		}
	}
	if len(done.Waves) != 1 || done.Waves[0].Size != 6 || done.Waves[0].Counters != want {
		t.Errorf("waves: %+v", done.Waves)
	}
	// Every matching device ran it once, with the job id derived from the
	// bulk job; the others got nothing.
	for _, d := range []*simDevice{a1, a2, a3, a4, a5, g1} {
		if ids := d.jobIDs(); len(ids) != 1 || ids[0] != jobs.BulkJobID(b.ID, d.e.DeviceID) {
			t.Errorf("device %s ran %v", d.e.DeviceID, ids)
		}
	}
	if ids := i1.jobIDs(); len(ids) != 0 {
		t.Errorf("the ios device ran %v", ids)
	}
	// One request crossed each link: eu and each probe took the job once
	// (their audit trails), whatever the number of devices.
	for _, n := range []*Node{eu.n, p1.n, p2.n} {
		recs, err := n.audit.List(ctx, 1000, func(r *audit.Record) bool { return r.Op == auditBulk && r.Target == b.ID })
		if err != nil || len(recs) != 1 || recs[0].Outcome != audit.OK {
			t.Fatalf("%s received the job %d times: %+v %v", n.cfg.Name, len(recs), recs, err)
		}
	}
	// The failure, listed at hq with its error.
	fp, err := hq.admin.BulkFailures(ctx, b.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/peers/eu/peers/p2" + string(a5.e.Path)
	if len(fp.Failures) != 1 || fp.Failures[0].Path != wantPath || fp.Failures[0].Error != "disk full" ||
		fp.Failures[0].Node != "/peers/eu/peers/p2" || fp.Failures[0].Job != jobs.BulkJobID(b.ID, a5.e.DeviceID) {
		t.Fatalf("failures at hq: %+v", fp)
	}
	// The device job reads as any device job at its probe.
	dj, err := p2.admin.GetJob(ctx, jobs.BulkJobID(b.ID, a4.e.DeviceID))
	if err != nil || dj.Bulk != b.ID || dj.State != client.JobSucceeded || dj.CreatedBy != "admin@eu" || string(dj.Args) != `{"force":true}` {
		t.Fatalf("device job at p2: %+v %v", dj, err)
	}
	// A finished job cannot be cancelled.
	if _, err := hq.admin.CancelBulkJob(ctx, b.ID); apiStatus(err) != http.StatusConflict {
		t.Fatalf("cancel a done job: %v", err)
	}

	// A tenant operator's job runs on its tenant's devices only; another
	// tenant's users do not see it; a viewer reads it but neither creates
	// nor cancels.
	alice := tenantClient(t, hq, "alice", "acme", "operator")
	vera := tenantClient(t, hq, "vera", "acme", "viewer")
	bob := tenantClient(t, hq, "bob", "globex", "operator")
	a5.answer = "succeeded"
	ab, err := alice.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Filter: filter}})
	if err != nil {
		t.Fatal(err)
	}
	adone := waitBulk(t, alice, ab.ID, client.BulkDone)
	if adone.Counters != (client.BulkCounters{Total: 5, Succeeded: 5}) || adone.Tenant != "acme" {
		t.Fatalf("acme's job: %+v", adone)
	}
	if ids := g1.jobIDs(); len(ids) != 1 {
		t.Fatalf("globex's device ran acme's job: %v", ids)
	}
	if _, err := vera.GetBulkJob(ctx, ab.ID); err != nil {
		t.Fatalf("acme's viewer: %v", err)
	}
	if _, err := vera.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/"}}); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer creates a bulk job: %v", err)
	}
	if _, err := vera.CancelBulkJob(ctx, ab.ID); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer cancels a bulk job: %v", err)
	}
	for _, read := range []func() error{
		func() error { _, err := bob.GetBulkJob(ctx, ab.ID); return err },
		func() error { _, err := bob.CancelBulkJob(ctx, ab.ID); return err },
		func() error { _, err := bob.BulkFailures(ctx, ab.ID, "", 0); return err },
		func() error { _, err := alice.GetBulkJob(ctx, b.ID); return err }, // the system admin's
	} {
		if err := read(); apiStatus(err) != http.StatusNotFound {
			t.Fatalf("a job of another tenant: %v", err)
		}
	}
	if _, err := bob.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Filter: map[string]string{"tenant": "acme"}}}); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a job naming another tenant: %v", err)
	}
}

// A probe restarted while its devices hold their commands runs no device
// twice: its part, its device jobs and the bulk job at HQ resume, and
// every device ends with the one job it was given.
func TestBulkJobProbeRestart(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	var devs []*simDevice
	for i := range 4 {
		d := enrollSim(t, p1.n, "acme", fmt.Sprintf("hw-%d", i), "plant-7", "android")
		d.hold.Store(true)
		d.connect(t, p1.n)
		devs = append(devs, d)
	}
	joinNode(t, &p1.fedNode, hq, "p1", "operate", "/devices")
	tstest.WaitForErr(t, bulkWait, "p1's devices at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/p1"+string(devs[3].e.Path))
		return err == nil, err
	})
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Labels: map[string]string{"site": "plant-7"}}})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, bulkWait, "every device holds its command", func() bool {
		for _, d := range devs {
			if len(d.jobIDs()) != 1 {
				return false
			}
		}
		return true
	})
	tstest.WaitForErr(t, bulkWait, "hq counts 4 delivered", func() (bool, error) {
		v, err := hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.Counters.Delivered == 4, err
	})

	for _, d := range devs {
		d.disconnect()
	}
	p1.restart(t)
	for _, d := range devs {
		d.hold.Store(false)
		d.connect(t, p1.n)
	}
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	if done.Counters != (client.BulkCounters{Total: 4, Succeeded: 4}) {
		t.Fatalf("counters at hq: %+v", done.Counters)
	}
	if truth := bulkTruth(t, p1.n, b.ID); truth != done.Counters {
		t.Fatalf("hq %+v, p1's device jobs %+v", done.Counters, truth)
	}
	for _, d := range devs {
		if ids := d.jobIDs(); len(ids) != 1 || ids[0] != jobs.BulkJobID(b.ID, d.e.DeviceID) {
			t.Errorf("device %s ran %v", d.e.DeviceID, ids)
		}
	}
}

// A peer that holds only read on a provider cannot send it a bulk job:
// HQ shows the refusal, and nothing runs there.
func TestBulkJobUngrantedPeer(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	d := enrollSim(t, p1.n, "acme", "hw-1", "plant-7", "android")
	joinNode(t, &p1.fedNode, hq, "p1", "read", "/devices")
	tstest.WaitForErr(t, bulkWait, "p1's device at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/p1"+string(d.e.Path))
		return err == nil, err
	})
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/"}})
	if err != nil {
		t.Fatal(err)
	}
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	if p := done.Peers["/peers/p1"]; p.Error == "" || done.Counters.Total != 0 {
		t.Fatalf("a read-only link: %+v", done)
	}
	if c := bulkTruth(t, p1.n, b.ID); c.Total != 0 {
		t.Fatalf("p1 ran a job from a read-only consumer: %+v", c)
	}
}

// A bulk job that reaches a node over a link runs only within what the
// node publishes to that consumer, and for the tenant it carries.
func TestBulkJobReceivedWithinGrant(t *testing.T) {
	ctx := context.Background()
	p := startProbe(t, "p1")
	acme := enrollSim(t, p.n, "acme", "hw-a", "plant-7", "android")
	globex := enrollSim(t, p.n, "globex", "hw-g", "plant-7", "android")
	local := &fedLocal{n: p.n}
	send := func(id string, identity federation.Identity, scope []model.Path) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"action": "create", "spec": map[string]any{
			"id": id, "function": "reboot", "target": map[string]any{"subtree": "/"},
			"deadline": time.Now().Add(time.Hour), "created": time.Now(),
		}})
		if err := local.Bulk(ctx, "hq", identity, scope, body); err != nil {
			t.Fatal(err)
		}
		tstest.WaitForErr(t, bulkWait, "part "+id+" expanded", func() (bool, error) {
			part, err := p.n.bulk.Get(id)
			return err == nil && part.Expanded, err
		})
	}
	// Published: /sites only. Nothing under /devices runs.
	send("b"+xid.New().String(), federation.Identity{User: "root", System: true}, []model.Path{"/sites"})
	// An acme operator over a link: only acme's device.
	id := "b" + xid.New().String()
	send(id, federation.Identity{User: "alice", Tenant: "acme"}, []model.Path{"/"})
	// Expanded, then dispatched in the same round: wait for the job.
	var c client.BulkCounters
	tstest.WaitFor(t, bulkWait, "acme's device job made", func() bool {
		c = bulkTruth(t, p.n, id)
		return c.Total >= 1
	})
	if c.Total != 1 {
		t.Fatalf("acme's job over a link: %+v", c)
	}
	var all client.BulkCounters
	p.n.jobs.List(func(j jobs.Job) bool {
		if j.Device == globex.e.DeviceID {
			all.Count(j.State)
		}
		return true
	})
	if all.Total != 0 {
		t.Fatalf("globex's device got %d jobs", all.Total)
	}
	if _, err := p.n.jobs.Get(jobs.BulkJobID(id, acme.e.DeviceID)); err != nil {
		t.Fatalf("acme's device job: %v", err)
	}
}

// A cancel at HQ goes down two links: the device jobs still open on the
// probe are cancelled, and HQ counts them.
func TestBulkJobCancelEverywhere(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	var devs []*simDevice
	for i := range 3 {
		d := enrollSim(t, p1.n, "acme", fmt.Sprintf("hw-%d", i), "plant-7", "android")
		d.hold.Store(true)
		d.connect(t, p1.n)
		devs = append(devs, d)
	}
	joinNode(t, eu, hq, "eu", "operate")
	joinNode(t, &p1.fedNode, eu, "p1", "operate", "/devices")
	tstest.WaitForErr(t, bulkWait, "p1's devices at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/eu/peers/p1"+string(devs[2].e.Path))
		return err == nil, err
	})
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/peers/eu/peers/p1/devices"}})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, bulkWait, "hq counts 3 delivered", func() (bool, error) {
		v, err := hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.Counters.Delivered == 3, err
	})
	if v, err := hq.admin.CancelBulkJob(ctx, b.ID); err != nil || v.State != client.BulkCancelled {
		t.Fatalf("cancel: %+v %v", v, err)
	}
	tstest.WaitForErr(t, bulkWait, "hq counts 3 cancelled", func() (bool, error) {
		v, err := hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.Counters == client.BulkCounters{Total: 3, Cancelled: 3}, err
	})
	if truth := bulkTruth(t, p1.n, b.ID); truth != (client.BulkCounters{Total: 3, Cancelled: 3}) {
		t.Fatalf("p1's device jobs: %+v", truth)
	}
	if v, err := p1.admin.GetBulkJob(ctx, b.ID); err != nil || v.State != client.BulkCancelled || v.Origin != "eu" {
		t.Fatalf("the part at p1: %+v %v", v, err)
	}
	if _, err := hq.admin.CancelBulkJob(ctx, b.ID); apiStatus(err) != http.StatusConflict {
		t.Fatalf("cancelled twice: %v", err)
	}
}

// A job issued while a provider is down is sent when its link comes back,
// and runs there then.
func TestBulkJobSentWhenLinkHeals(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	d := enrollSim(t, p1.n, "acme", "hw-1", "plant-7", "android")
	d.connect(t, p1.n)
	joinNode(t, &p1.fedNode, hq, "p1", "operate", "/devices")
	tstest.WaitForErr(t, bulkWait, "p1's device at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/p1"+string(d.e.Path))
		return err == nil, err
	})
	d.disconnect()
	if err := p1.n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, bulkWait, "hq sees p1 down", func() bool {
		for _, p := range hq.n.fed.Peers() {
			if p.Name == "p1" && p.Direction == "provider" {
				return p.State != "connected"
			}
		}
		return false
	})
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Labels: map[string]string{"site": "plant-7"}}})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, bulkWait, "hq's part expanded", func() (bool, error) {
		part, err := hq.n.bulk.Get(b.ID)
		return err == nil && part.Expanded && part.Links["p1"] != nil && !part.Links["p1"].Sent, err
	})
	if v, err := hq.admin.GetBulkJob(ctx, b.ID); err != nil || v.State != client.BulkRunning {
		t.Fatalf("while p1 is down: %+v %v", v, err)
	}
	p1.start(t)
	d.connect(t, p1.n)
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	if done.Counters != (client.BulkCounters{Total: 1, Succeeded: 1}) {
		t.Fatalf("counters: %+v", done.Counters)
	}
	if ids := d.jobIDs(); len(ids) != 1 {
		t.Fatalf("device ran %v", ids)
	}
}
