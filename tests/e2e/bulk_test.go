package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/tests/udpproxy"
)

// bulkDevice is a device on a probe driven by Paho: it declares the
// function reboot, records every command it receives, and answers it
// succeeded, or failed when the test made it fail; a held device records
// commands without answering until released.
type bulkDevice struct {
	e    *client.Enrollment
	fail bool // answers failed ("disk full"); set before it connects
	hold atomic.Bool

	mu       sync.Mutex
	c        paho.Client
	runs     map[string]int  // job id → commands received
	answered map[string]bool // job ids answered
}

func (d *bulkDevice) connect(t *testing.T, model string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(d.e.CAPEM)) {
		t.Fatal("enrollment ca_pem holds no certificate")
	}
	d.runs, d.answered = map[string]int{}, map[string]bool{}
	o := paho.NewClientOptions().AddBroker("ssl://" + d.e.MQTTAddress).
		SetClientID(d.e.DeviceID).SetUsername(d.e.MQTTUsername).SetPassword(d.e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: pool}).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tk := c.Connect(); !tk.WaitTimeout(e2eTimeout) || tk.Error() != nil {
		t.Fatalf("device %s: connect: %v", d.e.DeviceID, tk.Error())
	}
	d.mu.Lock()
	d.c = c
	d.mu.Unlock()
	t.Cleanup(func() { c.Disconnect(0) })
	if tk := c.Subscribe(d.e.TopicPrefix+"cmd/+", 1, func(c paho.Client, m paho.Message) {
		var cmd command
		if json.Unmarshal(m.Payload(), &cmd) != nil || cmd.Job == "" {
			return
		}
		d.mu.Lock()
		d.runs[cmd.Job]++
		d.mu.Unlock()
		if !d.hold.Load() {
			d.reply(cmd.Job)
		}
	}); !tk.WaitTimeout(e2eTimeout) || tk.Error() != nil {
		t.Fatalf("device %s: subscribe: %v", d.e.DeviceID, tk.Error())
	}
	// The inventory declares reboot and the variable the job's filter
	// selects on; its PUBACK comes once it is applied.
	inv, _ := json.Marshal(map[string]any{"model": model, "functions": []map[string]string{{"name": "reboot"}}})
	if tk := c.Publish(d.e.TopicPrefix+"inventory", 1, false, inv); !tk.WaitTimeout(e2eTimeout) || tk.Error() != nil {
		t.Fatalf("device %s: inventory: %v", d.e.DeviceID, tk.Error())
	}
}

func (d *bulkDevice) reply(job string) {
	body := `{"status":"succeeded"}`
	if d.fail {
		body = `{"status":"failed","error":"disk full"}`
	}
	d.mu.Lock()
	c, again := d.c, d.answered[job]
	d.answered[job] = true
	d.mu.Unlock()
	if again {
		return // released while the command arrived
	}
	c.Publish(d.e.TopicPrefix+"cmd/"+job+"/result", 1, false, body)
}

// release answers the commands d held, and the next ones at once.
func (d *bulkDevice) release() {
	d.hold.Store(false)
	for job := range d.commands() {
		d.reply(job)
	}
}

// commands is what d received: job id → times.
func (d *bulkDevice) commands() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.runs))
	for k, v := range d.runs {
		out[k] = v
	}
	return out
}

// bulkProbe is a probe and its devices: the matching ones in path order
// (the order of the probe's waves), and one the filter does not match.
type bulkProbe struct {
	name  string
	n     *nodeDir
	path  string // its path at HQ
	match []*bulkDevice
	other *bulkDevice
}

// enrollBulk enrolls n matching devices and one other on p; failing are
// the indexes, in path order, of the matching devices that fail.
func (p *bulkProbe) enroll(t *testing.T, n int, failing ...int) {
	t.Helper()
	ctx := context.Background()
	admin := p.n.admin()
	tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "fleet", Uses: n + 1})
	if err != nil {
		t.Fatal(err)
	}
	var ds []*bulkDevice
	for i := range n + 1 {
		e, err := p.n.client("").Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: fmt.Sprintf("%s-hw-%d", p.name, i)})
		if err != nil {
			t.Fatalf("%s: enroll: %v", p.name, err)
		}
		ds = append(ds, &bulkDevice{e: e})
	}
	p.other, ds = ds[n], ds[:n]
	slices.SortFunc(ds, func(a, b *bulkDevice) int { return strings.Compare(a.e.Path, b.e.Path) })
	p.match = ds
	for _, i := range failing {
		p.match[i].fail = true
	}
	for _, d := range p.match {
		d.connect(t, "rk3")
	}
	p.other.connect(t, "rk2")
}

// bulkTruthAt counts the device jobs of bulk job id on n, read through
// its API, and checks each is its device's one job of the job.
func bulkTruthAt(t *testing.T, p *bulkProbe, id string) client.BulkCounters {
	t.Helper()
	var c client.BulkCounters
	seen := map[string]bool{}
	q := client.JobQuery{Limit: 1000}
	for {
		page, err := p.n.admin().ListJobs(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			if j.Bulk != id {
				continue
			}
			if seen[j.Device] {
				t.Errorf("%s: device %s has two jobs of %s", p.name, j.Device, id)
			}
			seen[j.Device] = true
			c.Count(j.State)
		}
		if page.Next == "" {
			return c
		}
		q.Before = page.Next
	}
}

// HQ, two regionals, four probes as real processes; six devices on each
// probe (real MQTT clients), five of which a filter at HQ selects. One
// bulk job issued with strata ctl at HQ: three waves (20 %, 40 %, 40 %:
// 1, 2, 2 devices per probe), max_failures 1 after 1 finished. On p1
// (below eu) the second wave's two devices fail: p1 pauses before its
// third wave and HQ reads the job paused with p1's reason, while p2 beside
// it finishes. p4 (below us) is cut off from us by a UDP proxy once it
// holds its first wave's command: it runs its waves on its own (its one
// failure, in the third wave, within the threshold), and HQ learns it is
// done only when the link heals. Resumed with strata ctl at HQ, p1 runs
// its third wave and the job is done. Every matching device ran the
// command exactly once, the others never, and HQ's counters, per probe
// and summed, equal the device jobs read at each probe.
func TestBulkRolloutEndToEnd(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	hq := initNode(t, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	eu := initNode(t, "eu", "--role", "regional", "--federation-addr", freeUDP(t))
	us := initNode(t, "us", "--role", "regional", "--federation-addr", freeUDP(t))
	probes := []*bulkProbe{
		{name: "p1", path: "/peers/eu/peers/p1"}, {name: "p2", path: "/peers/eu/peers/p2"},
		{name: "p3", path: "/peers/us/peers/p3"}, {name: "p4", path: "/peers/us/peers/p4"},
	}
	for _, p := range probes {
		p.n = initDeviceNode(t, p.name, "--role", "probe")
	}
	p1, p2, p3, p4 := probes[0], probes[1], probes[2], probes[3]
	for _, n := range []*nodeDir{hq, eu, us, p1.n, p2.n, p3.n, p4.n} {
		fastLinks(t, n)
		n.start()
	}
	eu.joinTo(fedAddr(t, hq), hq.peerToken("eu", "operate"))
	us.joinTo(fedAddr(t, hq), hq.peerToken("us", "operate"))
	p1.n.joinTo(fedAddr(t, eu), eu.peerToken("p1", "operate"), "/devices")
	p2.n.joinTo(fedAddr(t, eu), eu.peerToken("p2", "operate"), "/devices")
	p3.n.joinTo(fedAddr(t, us), us.peerToken("p3", "operate"), "/devices")
	toUS, err := udpproxy.New("127.0.0.1:0", fedAddr(t, us))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { toUS.Close() })
	p4.n.joinTo(toUS.Addr(), us.peerToken("p4", "operate"), "/devices")

	p1.enroll(t, 5, 1, 2) // the second wave fails: trips max_failures 1
	p2.enroll(t, 5)
	p3.enroll(t, 5)
	p4.enroll(t, 5, 4) // one failure, in the third wave: within it
	for _, d := range p4.match {
		d.hold.Store(true) // until p4 is cut off
	}
	admin := hq.admin()
	waitConnected(t, admin, "eu", "provider")
	waitConnected(t, admin, "us", "provider")
	waitConnected(t, eu.admin(), "p1", "provider")
	waitConnected(t, eu.admin(), "p2", "provider")
	waitConnected(t, us.admin(), "p3", "provider")
	waitConnected(t, us.admin(), "p4", "provider")
	t.Logf("seven nodes, 24 devices, linked: %v", time.Since(start).Round(time.Millisecond))

	// The job, as an operator issues it.
	out, err := hq.ctl("-o", "json", "jobs", "run", "reboot",
		"--filter", "type=device", "--filter", "var.model=rk3",
		"--waves", "20,40,40", "--max-failures", "1", "--min-finished", "1")
	if err != nil {
		t.Fatalf("ctl jobs run: %v\n%s", err, out)
	}
	var created client.BulkJob
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("ctl jobs run printed %q: %v", out, err)
	}
	id := created.ID

	// p4 got the job and holds its first wave's command: cut it off; once
	// us has lost the link, let p4's devices answer.
	tstest.WaitFor(t, e2eTimeout, "p4's first wave delivered", func() bool { return len(p4.match[0].commands()) == 1 })
	toUS.Blackhole(true)
	tstest.WaitFor(t, e2eTimeout, "p4 cut off from us", func() bool {
		p, _ := peerState(us.admin(), "p4", "provider")
		return p.State != "connected"
	})
	for _, d := range p4.match {
		d.release()
	}

	// p1 trips max_failures in its second wave; HQ reads the job paused
	// with p1's reason; p2 beside it and p3 finish.
	var v *client.BulkJob
	tstest.WaitForErr(t, e2eTimeout, "paused at hq by p1", func() (bool, error) {
		v, err = admin.GetBulkJob(ctx, id)
		return err == nil && v.State == client.BulkPaused && v.Peers[p1.path].Failed == 2 &&
			v.Peers[p2.path].State == client.BulkDone && v.Peers[p3.path].State == client.BulkDone, err
	})
	if !strings.HasPrefix(v.Reason, p1.path+": ") || !strings.Contains(v.Reason, "max_failures") {
		t.Fatalf("reason at hq: %q", v.Reason)
	}
	if pp := v.Peers[p1.path]; pp.State != client.BulkPaused || pp.BulkCounters != (client.BulkCounters{Total: 5, Pending: 2, Succeeded: 1, Failed: 2}) {
		t.Fatalf("p1 at hq: %+v", pp)
	}
	if len(v.Waves) != 3 || v.Waves[2].State == client.BulkDone {
		t.Fatalf("waves at hq: %+v", v.Waves)
	}
	for i, d := range p1.match {
		if n := len(d.commands()); (i < 3 && n != 1) || (i >= 3 && n != 0) {
			t.Fatalf("p1's device %d (wave %d) received %v while paused", i, []int{1, 2, 2, 3, 3}[i], d.commands())
		}
	}

	// Cut off, p4 ran its three waves on its own; HQ does not know yet.
	var p4v *client.BulkJob
	tstest.WaitForErr(t, e2eTimeout, "p4 done while cut off", func() (bool, error) {
		p4v, err = p4.n.admin().GetBulkJob(ctx, id)
		return err == nil && p4v.State == client.BulkDone, err
	})
	p4own := client.BulkCounters{Total: 5, Succeeded: 4, Failed: 1}
	if p4v.Local.BulkCounters != p4own {
		t.Fatalf("p4's own view: %+v", p4v.Local)
	}
	if v, err = admin.GetBulkJob(ctx, id); err != nil || v.Peers[p4.path].State == client.BulkDone || v.Peers[p4.path].Succeeded != 0 {
		t.Fatalf("hq knew p4's results across a partition: %+v %v", v.Peers[p4.path], err)
	}
	if p, _ := peerState(us.admin(), "p4", "provider"); p.State == "connected" {
		t.Fatal("p4's link healed before the proxy did")
	}
	toUS.Blackhole(false)
	waitConnected(t, us.admin(), "p4", "provider")
	tstest.WaitForErr(t, e2eTimeout, "p4 reported at hq once healed", func() (bool, error) {
		v, err = admin.GetBulkJob(ctx, id)
		return err == nil && v.Peers[p4.path].State == client.BulkDone, err
	})
	if v.Peers[p4.path].BulkCounters != p4own || v.State != client.BulkPaused {
		t.Fatalf("after healing, hq: %s, p4 %+v", v.State, v.Peers[p4.path])
	}

	// Resumed by the operator at HQ, p1 runs its third wave.
	if out, err := hq.ctl("jobs", "resume", id); err != nil {
		t.Fatalf("ctl jobs resume: %v\n%s", err, out)
	}
	tstest.WaitForErr(t, e2eTimeout, "done at hq", func() (bool, error) {
		v, err = admin.GetBulkJob(ctx, id)
		return err == nil && v.State == client.BulkDone, err
	})
	if v.Counters != (client.BulkCounters{Total: 20, Succeeded: 17, Failed: 3}) {
		t.Fatalf("counters at hq: %+v", v.Counters)
	}
	for i, w := range v.Waves {
		if w.State != client.BulkDone || w.Size != []int{4, 8, 8}[i] {
			t.Fatalf("waves at hq: %+v", v.Waves)
		}
	}

	// The truth at the probes: every matching device ran the command
	// once, under its one device job; the others never did; HQ's
	// counters are the probes' device jobs.
	var truth client.BulkCounters
	for _, p := range probes {
		own := bulkTruthAt(t, p, id)
		if got := v.Peers[p.path].BulkCounters; got != own {
			t.Errorf("%s: hq %+v, its device jobs %+v", p.name, got, own)
		}
		truth.Add(own)
		for _, d := range p.match {
			if got := d.commands(); len(got) != 1 || got[id+"-"+d.e.DeviceID] != 1 {
				t.Errorf("%s: device %s received %v, want %s once", p.name, d.e.DeviceID, got, id+"-"+d.e.DeviceID)
			}
		}
		if got := p.other.commands(); len(got) != 0 {
			t.Errorf("%s: device %s outside the filter received %v", p.name, p.other.e.DeviceID, got)
		}
	}
	if truth != v.Counters {
		t.Errorf("hq %+v, the probes' device jobs %+v", v.Counters, truth)
	}

	// The failures, as the operator lists them at HQ.
	out, err = hq.ctl("-o", "json", "jobs", "failures", id)
	if err != nil {
		t.Fatalf("ctl jobs failures: %v\n%s", err, out)
	}
	var fp client.BulkFailurePage
	if err := json.Unmarshal([]byte(out), &fp); err != nil {
		t.Fatalf("ctl jobs failures printed %q: %v", out, err)
	}
	want := map[string]bool{p1.match[1].e.DeviceID: true, p1.match[2].e.DeviceID: true, p4.match[4].e.DeviceID: true}
	for _, f := range fp.Failures {
		if !want[f.Device] || f.Error != "disk full" {
			t.Errorf("failure listed at hq: %+v", f)
		}
		delete(want, f.Device)
	}
	if len(want) != 0 {
		t.Errorf("failures not listed at hq: %v (listed %+v)", want, fp.Failures)
	}
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}
