package federation_test

import (
	"testing"

	"github.com/strata-dm/strata/federation"
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
