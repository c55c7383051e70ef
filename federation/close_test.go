package federation_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
)

// federationGoroutines lists the goroutines running code of package
// federation (not its tests).
func federationGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "strata/federation.") && !strings.Contains(g, "federationGoroutines") {
			out = append(out, g)
		}
	}
	return out
}

// Close returns only when every goroutine of the service has ended
// (request handlers included, even one still finishing its work), and
// closing twice, also concurrently, is safe.
func TestCloseWaitsForEverything(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", nil)
	hq.join(p, federation.GrantOperate)
	tstest.WaitFor(t, wait, "mirrored", func() bool { return hq.has("/peers/p1/devices/d1", nil) })

	// A call the provider is still running when it closes.
	callDone := make(chan error, 1)
	go func() {
		_, err := hq.svc.Call(context.Background(), federation.CallRequest{Path: "/peers/p1/devices/d1", Function: "slow"})
		callDone <- err
	}()
	tstest.WaitFor(t, wait, "the call running on the provider", func() bool {
		p.local.mu.Lock()
		defer p.local.mu.Unlock()
		return len(p.local.calls) == 1
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.svc.Close()
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hq.svc.Close()
		}()
	}
	wg.Wait()
	<-callDone
	// A goroutine that has done its work and signalled its owner may
	// still be returning: a leak is one that stays.
	for deadline := time.Now().Add(5 * time.Second); ; runtime.Gosched() {
		gs := federationGoroutines()
		if len(gs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of package federation outlived Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
		}
	}
	// Once more, after the fact.
	if err := p.svc.Close(); err != nil {
		t.Fatal(err)
	}
}
