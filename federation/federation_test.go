package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

const wait = 20 * time.Second

// Three tiers: a probe without listener publishes to a regional node,
// which republishes to HQ; HQ browses and calls through two hops.
func TestTwoHopsMirrorAndCall(t *testing.T) {
	hq := newTNode(t, "hq", true)
	eu := newTNode(t, "eu", true)
	probe := newTNode(t, "plant7", false)
	probe.put("/devices/pump-12", map[string]string{"temp": "21.5"})
	hq.join(eu, federation.GrantOperate)
	eu.join(probe, federation.GrantOperate, "/devices")

	const at = "/peers/eu/peers/plant7/devices/pump-12"
	tstest.WaitFor(t, wait, "device at HQ", func() bool { return hq.has(at, varIs("temp", "21.5")) })
	probe.put("/devices/pump-12", map[string]string{"temp": "22"})
	probe.event("/devices/pump-12", "overheat")
	tstest.WaitFor(t, wait, "update at HQ", func() bool { return hq.has(at, varIs("temp", "22")) })
	tstest.WaitFor(t, wait, "event at HQ", func() bool {
		evs, err := hq.model.Events(at, model.EventQuery{})
		return err == nil && len(evs) == 1 && evs[0].Name == "overheat"
	})
	c, _ := hq.model.Get(at)
	if c.Tenant != "acme" || c.Type != "device" {
		t.Fatalf("mirrored context: %+v", c)
	}
	// Each mirror's commits are timed, per provider.
	for _, n := range []*tnode{hq, eu} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(n.svc.Collector())
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var commits uint64
		for _, mf := range mfs {
			if mf.GetName() == "strata_federation_mirror_commit_seconds" {
				for _, m := range mf.GetMetric() {
					commits += m.GetHistogram().GetSampleCount()
				}
			}
		}
		if commits == 0 {
			t.Errorf("%s: no mirror commit timed", n.name)
		}
	}

	res, err := hq.svc.Call(context.Background(), federation.CallRequest{
		Path: at, Function: "ping", Args: json.RawMessage(`{"n":1}`),
		Identity: federation.Identity{User: "alice", Tenant: "acme"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Node string   `json:"node"`
		Via  []string `json:"via"`
		User string   `json:"user"`
	}
	json.Unmarshal(res.Result, &out)
	if out.Node != "plant7" || strings.Join(out.Via, ",") != "hq,eu" || out.User != "alice" || res.State != "succeeded" {
		t.Fatalf("call result %+v: %s", res, res.Result)
	}
	if res.Node != "/peers/eu/peers/plant7" {
		t.Fatalf("result node %q", res.Node)
	}
	job, err := hq.svc.Job(context.Background(), federation.Identity{User: "alice"}, res.Node, res.Job)
	if err != nil || job.Job != "j-plant7" || job.State != "running" || job.Node != "/peers/eu/peers/plant7" {
		t.Fatalf("job read through two hops: %+v %v", job, err)
	}
	if _, err := hq.svc.Job(context.Background(), federation.Identity{}, res.Node, "nope"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
	live, err := hq.svc.Get(context.Background(), federation.Identity{User: "alice"}, at)
	if err != nil || live.Path != at || string(live.Variables["temp"].Value) != "22" {
		t.Fatalf("live read: %+v %v", live, err)
	}
	// A path the probe does not publish is not reachable.
	probe.put("/secret/x", nil)
	if _, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/eu/peers/plant7/secret/x", Function: "ping"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("call outside published subtree: %v", err)
	}
	if hq.has("/peers/eu/peers/plant7/secret/x", nil) {
		t.Fatal("unpublished context mirrored")
	}
	tstest.WaitFor(t, wait, "eu caught up", func() bool { p := eu.peer("plant7", "provider"); return p.State == "connected" && p.LagEntries == 0 })
	eu.verifyAll(t)
	hq.verifyAll(t)
	tstest.WaitFor(t, wait, "hq knows plant7 is below eu", func() bool {
		p := hq.peer("eu", "provider")
		return len(p.Below) == 1 && p.Below[0] == "plant7"
	})
}

// A read grant mirrors but refuses calls; a revoked peer is cut off.
func TestGrantAndRevoke(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", map[string]string{"a": "1"})
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "mirror", func() bool { return hq.has("/peers/p1/devices/d1", nil) })
	_, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "ping"})
	if !errors.Is(err, federation.ErrForbidden) {
		t.Fatalf("call with read grant: %v", err)
	}
	if err := hq.svc.Revoke(context.Background(), "p1"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, wait, "revoked on both sides", func() bool {
		return hq.peer("p1", "provider").State == "revoked" && p.peer("hq", "consumer").State == "revoked"
	})
	_, err = hq.svc.Get(context.Background(), federation.Identity{}, "/peers/p1/devices/d1")
	if !errors.Is(err, federation.ErrUnreachable) {
		t.Fatalf("read through a revoked link: %v", err)
	}
}

// A token is used once; a wrong or expired one is refused with a reason.
func TestJoinTokens(t *testing.T) {
	hq := newTNode(t, "hq", true)
	tok, _, err := hq.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: "p1", Grant: federation.GrantOperate})
	if err != nil {
		t.Fatal(err)
	}
	p1 := newTNode(t, "p1", false)
	p1.ups = []federation.Upstream{{Address: hq.svc.Addr(), Token: tok}}
	p1.svc.SetUpstreams(p1.ups)
	tstest.WaitFor(t, wait, "p1 connected", func() bool { return p1.peer("hq", "consumer").State == "connected" })

	// Another node presenting the same token: used already.
	p2 := newTNode(t, "p1", false) // same name, fresh state dir
	p2.ups = []federation.Upstream{{Address: hq.svc.Addr(), Token: tok}}
	p2.svc.SetUpstreams(p2.ups)
	tstest.WaitFor(t, wait, "reuse refused", func() bool {
		st := p2.peer(hq.svc.Addr(), "consumer")
		return st.State == "joining" && strings.Contains(st.LastError, "unknown or already used")
	})
	// A token for another name.
	tok2, _, _ := hq.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: "p9", Grant: federation.GrantRead})
	p3 := newTNode(t, "p3", false)
	p3.ups = []federation.Upstream{{Address: hq.svc.Addr(), Token: tok2}}
	p3.svc.SetUpstreams(p3.ups)
	tstest.WaitFor(t, wait, "name mismatch refused", func() bool {
		return strings.Contains(p3.peer(hq.svc.Addr(), "consumer").LastError, `is for node "p9"`)
	})
	// A token of another federation (its CA fingerprint differs).
	other := newTNode(t, "other", true)
	tok3, _, _ := other.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: "p4", Grant: federation.GrantRead})
	p4 := newTNode(t, "p4", false)
	p4.ups = []federation.Upstream{{Address: hq.svc.Addr(), Token: tok3}}
	p4.svc.SetUpstreams(p4.ups)
	tstest.WaitFor(t, wait, "CA pin refused", func() bool {
		return strings.Contains(p4.peer(hq.svc.Addr(), "consumer").LastError, "CA does not match")
	})
	if _, _, err := hq.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: "hq", Grant: federation.GrantRead}); err == nil {
		t.Fatal("a node joining itself was accepted")
	}
	if _, _, err := hq.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: "x", Grant: "admin"}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("bad grant: %v", err)
	}
}

// A node never mounts a node that already has it below.
func TestLoopRefused(t *testing.T) {
	a := newTNode(t, "a", true)
	b := newTNode(t, "b", true)
	a.join(b, federation.GrantRead)
	tstest.WaitFor(t, wait, "b mounted at a", func() bool { return a.peer("b", "provider").State == "connected" })
	b.join(a, federation.GrantRead)
	tstest.WaitFor(t, wait, "loop refused", func() bool {
		st := a.peer(b.svc.Addr(), "consumer")
		return strings.Contains(st.LastError, "loop")
	})
	if b.has("/peers/a", nil) {
		t.Fatal("b mounted a, which has b below it")
	}
}

// Link down: changes accumulate; on reconnect the mirror resumes from its
// cursor, and after compaction past it gets a snapshot and a gap marker.
func TestResumeAndSnapshot(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	for i := range 50 {
		p.put(fmt.Sprintf("/devices/d%d", i), map[string]string{"v": "0"})
	}
	hq.join(p, federation.GrantOperate)
	tstest.WaitFor(t, wait, "initial sync", func() bool { return hq.has("/peers/p1/devices/d49", nil) })

	// Outage: the provider drops the link and keeps changing.
	p.svc.SetUpstreams(nil)
	tstest.WaitFor(t, wait, "link down", func() bool { return hq.peer("p1", "provider").State == "down" })
	for i := range 50 {
		p.put(fmt.Sprintf("/devices/d%d", i), map[string]string{"v": "1"})
	}
	p.event("/devices/d3", "alarm")
	p.svc.SetUpstreams(p.ups)
	tstest.WaitFor(t, wait, "resumed", func() bool { return hq.has("/peers/p1/devices/d49", varIs("v", "1")) })
	tstest.WaitFor(t, wait, "event after resume", func() bool {
		evs, _ := hq.model.Events("/peers/p1/devices/d3", model.EventQuery{})
		return len(evs) == 1
	})
	if g := hq.peer("p1", "provider").Gaps; g != 0 {
		t.Fatalf("gaps after a resumable outage: %d", g)
	}

	// Outage past compaction: deletes and changes while down, then the
	// provider compacts its log beyond the consumer's cursor.
	p.svc.SetUpstreams(nil)
	tstest.WaitFor(t, wait, "link down again", func() bool { return hq.peer("p1", "provider").State == "down" })
	if _, err := p.model.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/d7"}); err != nil {
		t.Fatal(err)
	}
	p.put("/devices/new", map[string]string{"v": "2"})
	p.event("/devices/d4", "lost-alarm")
	if _, err := p.store.CompactLog(1); err != nil {
		t.Fatal(err)
	}
	p.restart() // with the upstreams: the link comes back

	tstest.WaitFor(t, wait, "snapshot applied", func() bool {
		return hq.has("/peers/p1/devices/new", nil) && !hq.has("/peers/p1/devices/d7", nil)
	})
	tstest.WaitFor(t, wait, "gap recorded", func() bool { return hq.peer("p1", "provider").Gaps == 1 })
	evs, _ := hq.model.Events("/peers/p1", model.EventQuery{})
	if len(evs) != 1 || evs[0].Name != "federation.gap" {
		t.Fatalf("gap marker events: %+v", evs)
	}
	hq.verifyAll(t)
}

// Calls: a link that is down answers at once; deadlines propagate.
func TestCallFailures(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	hq.join(p, federation.GrantOperate)
	tstest.WaitFor(t, wait, "mirror", func() bool { return hq.has("/peers/p1/devices/d1", nil) })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := hq.svc.Call(ctx, federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "slow"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call: %v", err)
	}
	if _, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/nope", Function: "x"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("call on a missing context: %v", err)
	}
	if _, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/zz/devices/d1", Function: "x"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("call to an unknown peer: %v", err)
	}
	p.stop()
	tstest.WaitFor(t, wait, "link down", func() bool { return hq.peer("p1", "provider").State == "down" })
	start := time.Now()
	_, err = hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "ping"})
	if !errors.Is(err, federation.ErrUnreachable) || time.Since(start) > 2*time.Second {
		t.Fatalf("call over a down link: %v after %v", err, time.Since(start))
	}
}

// The harness builds hierarchies of any shape; every leaf's device shows
// at the root with its full path.
func TestTreeHarness(t *testing.T) {
	start := time.Now()
	root, leaves := tree(t, 2, 2)
	for _, l := range leaves {
		l.put("/devices/dev-"+l.name, map[string]string{"x": "1"})
	}
	for _, l := range leaves {
		parent := "n1-0-" + l.name[len(l.name)-3:len(l.name)-2] // n2-<i>-<j>: parent index i
		p := mountedPath([]string{parent, l.name}, "/devices/dev-"+l.name)
		tstest.WaitFor(t, wait, p, func() bool { return root.has(p, nil) })
	}
	t.Logf("mirrored after %v", time.Since(start))
	root.verifyAll(t)
	t.Logf("verified after %v", time.Since(start))
}

// Node certificates are renewed while connected, before they expire, and
// the renewed one is used from the next connection on.
func TestCertificateRenewal(t *testing.T) {
	hq := newTNode(t, "hq", true)
	hq.certValidity = 4 * time.Second
	hq.stop()
	hq.start()
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "connected", func() bool { return p.peer("hq", "consumer").State == "connected" })
	first := p.peer("hq", "consumer").CertExpires
	tstest.WaitFor(t, wait, "renewed", func() bool { return p.peer("hq", "consumer").CertExpires.After(first) })
	// Past the first certificate's expiry, a new connection works.
	tstest.WaitFor(t, wait, "first certificate expired", func() bool { return time.Now().After(first) })
	p.restart()
	tstest.WaitFor(t, wait, "reconnected with the renewed certificate", func() bool {
		return p.peer("hq", "consumer").State == "connected" && hq.peer("p1", "provider").State == "connected"
	})
}

// One provider, two consumers with different grants and subtrees.
func TestTwoConsumers(t *testing.T) {
	hq := newTNode(t, "hq", true)
	rep := newTNode(t, "reporting", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", map[string]string{"v": "1"})
	p.put("/sites/s1", nil)
	hq.join(p, federation.GrantOperate)
	rep.join(p, federation.GrantRead, "/devices")
	tstest.WaitFor(t, wait, "both mirrors", func() bool {
		return hq.has("/peers/p1/devices/d1", nil) && hq.has("/peers/p1/sites/s1", nil) && rep.has("/peers/p1/devices/d1", nil)
	})
	if rep.has("/peers/p1/sites/s1", nil) {
		t.Fatal("reporting mirrors a subtree the provider does not publish to it")
	}
	if _, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "ping"}); err != nil {
		t.Fatalf("operate grant: %v", err)
	}
	if _, err := rep.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "ping"}); !errors.Is(err, federation.ErrForbidden) {
		t.Fatalf("read grant: %v", err)
	}
	p.put("/devices/d1", map[string]string{"v": "2"})
	tstest.WaitFor(t, wait, "both updated", func() bool {
		return hq.has("/peers/p1/devices/d1", varIs("v", "2")) && rep.has("/peers/p1/devices/d1", varIs("v", "2"))
	})
	hq.verifyAll(t)
	rep.verifyAll(t)
	if n := len(p.svc.Peers()); n != 2 {
		t.Fatalf("provider lists %d links", n)
	}
}

// A mirror that differs from its source (here: changed behind the
// federation's back) is reported, then resynchronised from a snapshot
// without losing the events that follow its cursor.
func TestVerifyRepairs(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", map[string]string{"v": "1"})
	p.put("/devices/d2", map[string]string{"v": "1"})
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "mirror", func() bool { return hq.has("/peers/p1/devices/d2", nil) })
	ctx := context.Background()
	if _, err := hq.model.Apply(ctx,
		model.Mutation{Op: model.OpPut, Path: "/peers/p1/devices/d1", Variables: map[string]model.Variable{"v": {Value: json.RawMessage("9"), Type: model.TypeNumber}}},
		model.Mutation{Op: model.OpPut, Path: "/peers/p1/devices/ghost", Type: "device"},
	); err != nil {
		t.Fatal(err)
	}
	res, err := hq.svc.Verify(ctx)
	if err != nil || len(res) != 1 || res[0].Match || !strings.Contains(res[0].Error, "resynchronising") {
		t.Fatalf("verify of a damaged mirror: %+v %v", res, err)
	}
	p.event("/devices/d2", "during-resync")
	tstest.WaitFor(t, wait, "repaired", func() bool {
		return hq.has("/peers/p1/devices/d1", varIs("v", "1")) && !hq.has("/peers/p1/devices/ghost", nil)
	})
	tstest.WaitFor(t, wait, "event kept", func() bool {
		evs, _ := hq.model.Events("/peers/p1/devices/d2", model.EventQuery{})
		return len(evs) == 1
	})
	hq.verifyAll(t)
	if g := hq.peer("p1", "provider").Gaps; g != 0 {
		t.Fatalf("a requested resync counted as a gap: %d", g)
	}
}

// A consumer this node no longer publishes to stops holding back the
// change log's compaction.
func TestLeaveReleasesCompaction(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "cursor stored", func() bool { _, ok := p.svc.CompactFloor(); return ok })
	p.ups = nil
	if err := p.svc.SetUpstreams(nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.svc.CompactFloor(); ok {
		t.Fatal("a consumer left but still holds back compaction")
	}
}

// A large backlog (well beyond the send window and the fold size) is
// applied in full after the link comes back.
func TestLargeBacklog(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d0", nil)
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "mirror", func() bool { return hq.has("/peers/p1/devices/d0", nil) })
	p.svc.SetUpstreams(nil)
	tstest.WaitFor(t, wait, "link down", func() bool { return hq.peer("p1", "provider").State == "down" })
	const n = 70_000 // more than the send window (65,536)
	muts := make([]model.Mutation, 0, 1000)
	for i := range n {
		v, _ := model.NewVariable(json.RawMessage(fmt.Sprint(i)), time.Time{})
		muts = append(muts, model.Mutation{Op: model.OpPut, Path: model.MustPath(fmt.Sprintf("/devices/d%d", i%500)), Type: "device",
			Variables: map[string]model.Variable{"v": v}})
		if len(muts) == cap(muts) {
			if _, err := p.model.Apply(context.Background(), muts...); err != nil {
				t.Fatal(err)
			}
			muts = muts[:0]
		}
	}
	p.svc.SetUpstreams(p.ups)
	tstest.WaitFor(t, 2*time.Minute, "backlog applied", func() bool {
		return hq.has("/peers/p1/devices/d499", varIs("v", fmt.Sprint(n-1)))
	})
	hq.verifyAll(t)
}

// A context whose path is valid at the provider but too deep once mounted
// is left out of the mirror (counted), and the link carries on.
func TestTooDeepWhenMounted(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	deep := ""
	for i := 0; i < model.MaxDepth; i++ {
		deep += fmt.Sprintf("/s%d", i)
	}
	if _, err := p.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: model.MustPath(deep), Type: "device"}); err != nil {
		t.Fatal(err)
	}
	hq.join(p, federation.GrantRead)
	p.put("/devices/after", nil)
	tstest.WaitFor(t, wait, "the rest mirrored", func() bool { return hq.has("/peers/p1/devices/after", nil) })
	// The ancestors that fit (30 segments below the mount) are there; the
	// deeper ones are not.
	fits := "/peers/p1"
	for i := 0; i < model.MaxDepth-2; i++ {
		fits += fmt.Sprintf("/s%d", i)
	}
	if !hq.has(fits, nil) {
		t.Fatal("the ancestors that fit were not mirrored")
	}
	if kids, err := hq.model.Children(model.MustPath(fits), "", 10); err != nil || len(kids) != 0 {
		t.Fatalf("below the depth limit: %+v %v", kids, err)
	}
}
