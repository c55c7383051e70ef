package federation_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/internal/tstest"
)

// A mirror decodes and translates what its provider sends only with a
// device-work slot: while the node's slots are all held (by its MQTT
// ingest, say) the link waits, nothing of it is applied, and it catches
// up once a slot is free. The wait is measured.
func TestMirrorWaitsForDeviceWorkSlot(t *testing.T) {
	l := slots.New(1)
	hq := newTNode(t, "hq", true)
	hq.configure = func(c *federation.Config) { c.Slots = l }
	hq.restart()
	p := newTNode(t, "p1", false)
	p.put("/devices/d0", map[string]string{"v": "0"})
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "initial sync", func() bool { return hq.has("/peers/p1/devices/d0", nil) })
	tstest.WaitFor(t, wait, "the mirror's slot given back", func() bool { return l.InUse() == 0 })

	l.Acquire() // every slot held
	p.put("/devices/d1", map[string]string{"v": "1"})
	tstest.WaitFor(t, wait, "the mirror waiting for a slot", func() bool { return l.Waiting() == 1 })
	if hq.has("/peers/p1/devices/d1", nil) {
		t.Fatal("applied while every device-work slot was held")
	}
	l.Release()
	tstest.WaitFor(t, wait, "applied once a slot is free", func() bool { return hq.has("/peers/p1/devices/d1", varIs("v", "1")) })

	reg := prometheus.NewRegistry()
	reg.MustRegister(hq.svc.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var waited uint64
	for _, mf := range mfs {
		if mf.GetName() == "strata_federation_apply_wait_seconds" {
			waited = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if waited < 2 {
		t.Fatalf("strata_federation_apply_wait_seconds counted %d waits, want one per batch applied (at least 2)", waited)
	}
}
