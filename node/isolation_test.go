package node

import (
	"context"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
)

// With every device-work slot held, as when device traffic keeps them
// all busy, the operator API still answers, while a device's telemetry
// waits: read by nobody, neither stored nor acknowledged. Once a slot is
// free it is stored, then acknowledged.
func TestAPIServedWithDeviceWorkSaturated(t *testing.T) {
	ctx := context.Background()
	p := startProbe(t, "probe")
	d := enrollSim(t, p.n, "", "hw-1", "s1", "linux")
	d.connect(t, p.n)
	work := p.n.work
	if work.Size() < 1 {
		t.Fatalf("device-work slots: %d, want bounded by default", work.Size())
	}
	tstest.WaitFor(t, harnessWait, "the device's reader idle, without a slot", func() bool { return work.InUse() == 0 })
	for range work.Size() {
		work.Acquire()
	}
	held := work.Size()
	defer func() {
		for range held {
			work.Release()
		}
	}()

	tk := d.cl.Publish(d.e.TopicPrefix+"telemetry", 1, false, `{"temp": 21}`)
	tstest.WaitFor(t, harnessWait, "the device's connection waiting for a slot", func() bool { return work.Waiting() >= 1 })

	rctx, cancel := context.WithTimeout(ctx, harnessWait)
	defer cancel()
	c, err := p.admin.GetContext(rctx, string(d.e.Path))
	if err != nil {
		t.Fatalf("GET %s with the device work saturated: %v", d.e.Path, err)
	}
	if _, ok := c.Variables["temp"]; ok {
		t.Fatal("telemetry stored while every device-work slot was held")
	}
	if tk.WaitTimeout(0) {
		t.Fatal("telemetry acknowledged while every device-work slot was held")
	}

	for range held {
		work.Release()
	}
	held = 0
	if !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("telemetry not acknowledged once slots were free: %v", tk.Error())
	}
	c, err = p.admin.GetContext(rctx, string(d.e.Path))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Variables["temp"]; !ok {
		t.Fatal("telemetry acknowledged, not stored")
	}
}
