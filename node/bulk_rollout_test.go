package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/tests/udpproxy"
)

// joinVia is joinNode with p dialling c through a UDP proxy (the link
// is QUIC), which a test blackholes to cut the link.
func joinVia(t *testing.T, p, c *fedNode, name, grant string, publish ...string) *udpproxy.Proxy {
	t.Helper()
	ctx := context.Background()
	px, err := udpproxy.New("127.0.0.1:0", c.n.FederationAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	tok, err := c.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: name, Grant: grant})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p.file)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Federation.Upstreams = append(cfg.Federation.Upstreams,
		config.Upstream{Address: px.Addr(), Token: tok.Token, Publish: publish})
	writeConfig(t, p.file, cfg)
	if _, err := p.admin.ReloadFederation(ctx); err != nil {
		t.Fatal(err)
	}
	return px
}

// setAnswer sets how d answers from now on.
func (d *simDevice) setAnswer(a string) {
	d.mu.Lock()
	d.answer = a
	d.mu.Unlock()
}

// answerHeld answers every command d received (while holding them).
func (d *simDevice) answerHeld() {
	d.hold.Store(false)
	d.mu.Lock()
	cl := d.cl
	d.mu.Unlock()
	for _, id := range d.jobIDs() {
		d.reply(cl, id)
	}
}

// A three-wave rollout from HQ over devices on two probes below a
// regional, with max_failures 1: on p1 the second wave's two failures
// pause p1 before its third wave, and the job reads paused at HQ with
// p1's reason; p2, cut off from the regional mid-job, opens its second
// wave on its own, is paused by its failures before its third as the
// thresholds it was given say, and reports so when the link heals.
// Resumed at HQ, both run their third waves; a retry at HQ runs again
// only the four devices that failed, as new device jobs. Every device
// ran each attempt once, and HQ's final counters equal the probes'
// device jobs.
func TestBulkRolloutAcrossProbes(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	p2 := startProbe(t, "p2")
	enroll := func(p *probeNode, prefix string) []*simDevice {
		var out []*simDevice
		for i := range 5 {
			out = append(out, enrollSim(t, p.n, "acme", fmt.Sprintf("%s-%d", prefix, i), "plant-7", "android"))
		}
		// The order of a part's devices (and so its waves) is path order.
		slices.SortFunc(out, func(a, b *simDevice) int { return strings.Compare(string(a.e.Path), string(b.e.Path)) })
		return out
	}
	d1, d2 := enroll(p1, "a"), enroll(p2, "b")
	// Waves over 5 devices: 1, 2, 2. On each probe the second wave fails.
	failing := []*simDevice{d1[1], d1[2], d2[1], d2[2]}
	for _, d := range failing {
		d.setAnswer("failed")
	}
	for _, d := range d1 {
		d.connect(t, p1.n)
	}
	for _, d := range d2 {
		d.hold.Store(true) // p2's first wave waits for the partition
		d.connect(t, p2.n)
	}
	joinNode(t, eu, hq, "eu", "operate")
	joinNode(t, &p1.fedNode, eu, "p1", "operate", "/devices")
	px := joinVia(t, &p2.fedNode, eu, "p2", "operate", "/devices")
	for _, at := range []string{"/peers/eu/peers/p1" + string(d1[4].e.Path), "/peers/eu/peers/p2" + string(d2[4].e.Path)} {
		tstest.WaitForErr(t, bulkWait, at+" at hq", func() (bool, error) {
			_, err := hq.admin.GetContext(ctx, at)
			return err == nil, err
		})
	}

	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot",
		Target:  client.BulkTarget{Filter: map[string]string{"path": "/peers/eu", "label.site": "plant-7"}},
		Rollout: json.RawMessage(`{"waves":["20%","40%","40%"],"max_failures":1,"min_finished":1}`)})
	if err != nil {
		t.Fatal(err)
	}

	// p1 trips max_failures in its second wave; HQ reads the job paused.
	var v *client.BulkJob
	tstest.WaitForErr(t, bulkWait, "paused at hq by p1", func() (bool, error) {
		v, err = hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.State == client.BulkPaused && v.Peers["/peers/eu/peers/p1"].Failed == 2, err
	})
	if b, err := json.Marshal(v); err == nil {
		t.Logf("paused at hq: %s", b)
	}
	if !strings.HasPrefix(v.Reason, "/peers/eu/peers/p1: ") || !strings.Contains(v.Reason, "max_failures") {
		t.Fatalf("reason at hq: %q", v.Reason)
	}
	if pp := v.Peers["/peers/eu/peers/p1"]; pp.State != client.BulkPaused || pp.Pending != 2 || pp.Succeeded != 1 {
		t.Fatalf("p1 at hq: %+v", pp)
	}
	if len(v.Waves) != 3 || v.Waves[1].Counters.Failed != 2 || v.Waves[2].State == client.BulkDone {
		t.Fatalf("waves at hq: %+v", v.Waves)
	}
	for i, d := range d1 {
		if n := len(d.jobIDs()); (i < 3 && n != 1) || (i >= 3 && n != 0) {
			t.Fatalf("p1's device %d ran %v while paused", i, d.jobIDs())
		}
	}

	// p2 holds its first wave's command; cut it off, then let it run.
	tstest.WaitFor(t, bulkWait, "p2's first wave delivered", func() bool { return len(d2[0].jobIDs()) == 1 })
	px.Blackhole(true)
	d2[0].answerHeld()
	for _, d := range d2[1:] {
		d.hold.Store(false)
	}
	// Cut off, p2 opens its second wave on its own, and its failures
	// pause it before its third, as the thresholds it was given say.
	var p2v *client.BulkJob
	tstest.WaitForErr(t, bulkWait, "p2 paused while cut off", func() (bool, error) {
		p2v, err = p2.admin.GetBulkJob(ctx, b.ID)
		return err == nil && p2v.State == client.BulkPaused && p2v.Local.Failed == 2, err
	})
	p2own := client.BulkCounters{Total: 5, Pending: 2, Succeeded: 1, Failed: 2}
	if p2v.Local.BulkCounters != p2own || len(p2v.Waves) != 3 || p2v.Waves[2].State != client.BulkPending ||
		!strings.Contains(p2v.Reason, "max_failures") {
		t.Fatalf("p2's own view: %+v", p2v)
	}
	for _, d := range d2[3:] {
		if ids := d.jobIDs(); len(ids) != 0 {
			t.Fatalf("p2's third wave ran while paused: %v", ids)
		}
	}
	if v, err = hq.admin.GetBulkJob(ctx, b.ID); err != nil || v.Peers["/peers/eu/peers/p2"].Failed != 0 {
		t.Fatalf("hq knew p2's failures across a partition: %+v %v", v, err)
	}
	px.Blackhole(false)
	tstest.WaitForErr(t, bulkWait, "p2 reported at hq once healed", func() (bool, error) {
		v, err = hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.Peers["/peers/eu/peers/p2"].State == client.BulkPaused, err
	})
	if pp := v.Peers["/peers/eu/peers/p2"]; pp.BulkCounters != p2own || !strings.Contains(pp.Reason, "max_failures") {
		t.Fatalf("p2 at hq: %+v", pp)
	}
	if v.State != client.BulkPaused {
		t.Fatalf("hq: %s, want paused", v.State)
	}

	// A viewer may not resume; resumed by the operator at HQ, both probes
	// run their third waves.
	vera := tenantClient(t, hq, "vera", "acme", "viewer")
	if _, err := vera.ResumeBulkJob(ctx, b.ID); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("a tenant's viewer resumes the system's job: %v", err)
	}
	if _, err := hq.admin.ResumeBulkJob(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	if done.Counters != (client.BulkCounters{Total: 10, Succeeded: 6, Failed: 4}) {
		t.Fatalf("counters at hq: %+v", done.Counters)
	}
	truth := bulkTruth(t, p1.n, b.ID)
	truth.Add(bulkTruth(t, p2.n, b.ID))
	if truth != done.Counters {
		t.Fatalf("hq %+v, the probes' device jobs %+v", done.Counters, truth)
	}
	for i, w := range done.Waves {
		if w.State != client.BulkDone || w.Size != []int{2, 4, 4}[i] {
			t.Fatalf("waves at hq: %+v", done.Waves)
		}
	}

	// Retry the failed only: the four that failed now succeed.
	for _, d := range failing {
		d.setAnswer("succeeded")
	}
	if _, err := hq.admin.RetryBulkJob(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, bulkWait, "retried at hq", func() (bool, error) {
		v, err = hq.admin.GetBulkJob(ctx, b.ID)
		return err == nil && v.State == client.BulkDone && v.Counters.Succeeded == 10 &&
			v.Peers["/peers/eu/peers/p1"].Attempt == 1 && v.Peers["/peers/eu/peers/p2"].Attempt == 1, err
	})
	if v.Counters != (client.BulkCounters{Total: 10, Succeeded: 10}) {
		t.Fatalf("after retry at hq: %+v", v.Counters)
	}
	for _, d := range append(slices.Clone(d1), d2...) {
		want := []string{bulk.AttemptJobID(b.ID, d.e.DeviceID, 0)}
		if slices.Contains(failing, d) {
			want = append(want, bulk.AttemptJobID(b.ID, d.e.DeviceID, 1))
			slices.Sort(want)
		}
		d.mu.Lock()
		runs := maps2(d.runs)
		d.mu.Unlock()
		if !slices.Equal(d.jobIDs(), want) || slices.ContainsFunc(runs, func(n int) bool { return n != 1 }) {
			t.Errorf("device %s ran %v (%v), want %v once each", d.e.DeviceID, d.jobIDs(), runs, want)
		}
	}
}

func maps2(m map[string]int) []int {
	var out []int
	for _, n := range m {
		out = append(out, n)
	}
	return out
}

// Pause, resume and retry need the operator role on the job's target: a
// viewer of its tenant is refused (403), another tenant's operator finds
// no such job (404); its operator pauses (a second pause conflicts),
// resumes, and a wave waiting for approval opens on that resume.
func TestBulkRolloutControlRoles(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	var ds []*simDevice
	for i := range 3 {
		d := enrollSim(t, p1.n, "acme", fmt.Sprintf("hw-%d", i), "plant-7", "android")
		d.connect(t, p1.n)
		ds = append(ds, d)
	}
	joinNode(t, &p1.fedNode, hq, "p1", "operate", "/devices")
	tstest.WaitForErr(t, bulkWait, "p1's devices at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/p1"+string(ds[2].e.Path))
		return err == nil, err
	})
	alice := tenantClient(t, hq, "alice", "acme", "operator")
	vera := tenantClient(t, hq, "vera", "acme", "viewer")
	bob := tenantClient(t, hq, "bob", "globex", "operator")
	if _, err := alice.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/"},
		Rollout: json.RawMessage(`{"waves":["50%"],"max_failures":"x"}`)}); apiStatus(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "max_failures") {
		t.Fatalf("a bad rollout: %v", err)
	}
	b, err := alice.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot", Target: client.BulkTarget{Subtree: "/"},
		Rollout: json.RawMessage(`{"waves":[1],"approval":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, bulkWait, "waiting for approval", func() (bool, error) {
		v, err := alice.GetBulkJob(ctx, b.ID)
		return err == nil && v.State == client.BulkPaused && strings.Contains(v.Reason, "approval") && v.Counters.Succeeded == 1, err
	})
	for name, do := range map[string]func(*client.Client) error{
		"pause":  func(c *client.Client) error { _, err := c.PauseBulkJob(ctx, b.ID); return err },
		"resume": func(c *client.Client) error { _, err := c.ResumeBulkJob(ctx, b.ID); return err },
		"retry":  func(c *client.Client) error { _, err := c.RetryBulkJob(ctx, b.ID); return err },
	} {
		if err := do(vera); apiStatus(err) != http.StatusForbidden {
			t.Errorf("a viewer's %s: %v", name, err)
		}
		if err := do(bob); apiStatus(err) != http.StatusNotFound {
			t.Errorf("another tenant's %s: %v", name, err)
		}
	}
	if v, err := alice.PauseBulkJob(ctx, b.ID); err != nil || v.State != client.BulkPaused {
		t.Fatalf("pause: %+v %v", v, err)
	}
	if _, err := alice.PauseBulkJob(ctx, b.ID); apiStatus(err) != http.StatusConflict {
		t.Fatalf("paused twice: %v", err)
	}
	if _, err := alice.ResumeBulkJob(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	done := waitBulk(t, alice, b.ID, client.BulkDone)
	if done.Counters != (client.BulkCounters{Total: 3, Succeeded: 3}) || len(done.Waves) != 2 || done.Waves[0].Size != 1 {
		t.Fatalf("done: %+v", done)
	}
	if _, err := alice.PauseBulkJob(ctx, b.ID); apiStatus(err) != http.StatusConflict {
		t.Fatalf("pause a done job: %v", err)
	}
	for _, d := range ds {
		if len(d.jobIDs()) != 1 {
			t.Errorf("device %s ran %v", d.e.DeviceID, d.jobIDs())
		}
	}
}
