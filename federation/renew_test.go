package federation_test

import (
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
)

// A link that drops while a renewal awaits its answer does not stop
// renewal: the next connection asks again, and the answer is kept.
func TestRenewalAfterLinkDrop(t *testing.T) {
	hc := newHostileConsumer(t, federation.GrantRead, func() federation.WireWelcome { return federation.WireWelcome{Grant: federation.GrantRead} })
	// The joined certificate has a day of its 30 left: renewal is due.
	expires := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	hc.setIssue(func(csr []byte, node string) ([]byte, error) {
		return hc.agedCert(csr, node, expires.Add(-30*24*time.Hour), expires)
	})
	p := newTNode(t, "p1", false)
	p.ups = []federation.Upstream{{Address: hc.addr, Token: hc.token}}
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		t.Fatal(err)
	}
	first := hc.next()
	nextRenew(t, first.frames(t), nil)
	first.conn.CloseWithError(0, "dropped before answering")

	second := hc.next()
	r := nextRenew(t, second.frames(t), nil)
	renewed, err := federation.SignCSR(hc.ca.Cert, hc.ca.Key, r.CSR, "p1", 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := federation.WriteFrame(second.ctrl, federation.KindRenewed, federation.WireRenewed{Cert: renewed.Raw}); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, wait, "the renewed certificate in use", func() bool {
		return p.peer("hq", "consumer").CertExpires.Equal(renewed.NotAfter)
	})
}
