package federation_test

import (
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
)

// A consumer granted read when the provider joined cannot raise its
// grant by saying operate in its welcome: the provider enforces the
// grant it recorded itself at join time.
func TestGrantIsTheProvidersOwn(t *testing.T) {
	hc := newHostileConsumer(t, federation.GrantRead, func() federation.WireWelcome {
		return federation.WireWelcome{Grant: federation.GrantOperate}
	})
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	p.ups = []federation.Upstream{{Address: hc.addr, Token: hc.token}}
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		t.Fatal(err)
	}
	link := hc.next()
	resp := link.request(t, federation.WireRequest{Op: federation.OpCall, Path: "/devices/d1",
		Call: &federation.CallRequest{Function: "reboot"}, Identity: federation.Identity{User: "mallory", System: true}})
	if resp.Code != federation.CodeForbidden {
		t.Fatalf("a call under a read grant was answered %q %q %+v", resp.Code, resp.Error, resp.Result)
	}
	p.local.mu.Lock()
	calls := len(p.local.calls)
	p.local.mu.Unlock()
	if calls != 0 {
		t.Fatalf("the provider ran %d calls under a read grant", calls)
	}
	// Reads are what read allows.
	if resp := link.request(t, federation.WireRequest{Op: federation.OpGet, Path: "/devices/d1"}); resp.Code != "" || resp.Context == nil {
		t.Fatalf("a live read under a read grant: %q %q", resp.Code, resp.Error)
	}
	if g := p.peer("hq", "consumer").Grant; g != federation.GrantRead {
		t.Fatalf("the provider shows grant %q", g)
	}
}

// A welcome can only narrow what flows: when what the provider publishes
// and what the consumer accepted at join do not meet, nothing flows, and a
// welcome naming the whole tree does not make it flow.
func TestWelcomeCannotWidenDisjointGrant(t *testing.T) {
	hc := newHostileConsumer(t, federation.GrantRead, func() federation.WireWelcome {
		return federation.WireWelcome{Grant: federation.GrantRead, Subtrees: []model.Path{"/"}}
	})
	hc.subtrees = []model.Path{"/plant"}
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	p.put("/secret/s1", map[string]string{"k": `"v"`})
	p.ups = []federation.Upstream{{Address: hc.addr, Token: hc.token, Publish: []model.Path{"/devices"}}}
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		t.Fatal(err)
	}
	link := hc.next()
	for _, path := range []model.Path{"/secret/s1", "/devices/d1"} {
		resp := link.request(t, federation.WireRequest{Op: federation.OpGet, Path: path,
			Identity: federation.Identity{User: "mallory", System: true}})
		if resp.Code == "" || resp.Context != nil {
			t.Fatalf("a consumer that accepted /plant read %s from a provider publishing /devices: %+v", path, resp.Context)
		}
	}
	if got := p.peer("hq", "consumer").Subtrees; len(got) != 0 {
		t.Fatalf("the provider shows subtrees %v flowing", got)
	}
}

// A welcome naming a part of what flows narrows the link to that part.
func TestWelcomeNarrows(t *testing.T) {
	hc := newHostileConsumer(t, federation.GrantRead, func() federation.WireWelcome {
		return federation.WireWelcome{Grant: federation.GrantRead, Subtrees: []model.Path{"/devices/d1"}}
	})
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	p.put("/devices/d2", nil)
	p.ups = []federation.Upstream{{Address: hc.addr, Token: hc.token, Publish: []model.Path{"/devices"}}}
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		t.Fatal(err)
	}
	link := hc.next()
	if resp := link.request(t, federation.WireRequest{Op: federation.OpGet, Path: "/devices/d1"}); resp.Code != "" || resp.Context == nil {
		t.Fatalf("a read inside the narrowed subtree: %q %q", resp.Code, resp.Error)
	}
	if resp := link.request(t, federation.WireRequest{Op: federation.OpGet, Path: "/devices/d2"}); resp.Code == "" {
		t.Fatal("a read outside the narrowed subtree was answered")
	}
}
