package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/client"
)

// A rollout's health gate issued at HQ is decided at the probe that owns
// the devices, from their contexts there: the device online (its MQTT
// connection) with the new firmware passes; one with the old firmware,
// and one that never reported it, fail after within, each with its
// bulk.failure event at the probe, listed at HQ. HQ's counters are the
// gated ones, while every device job itself succeeded.
func TestBulkHealthGateAcrossTiers(t *testing.T) {
	ctx := context.Background()
	hq := startFedNode(t, "hq", "127.0.0.1:0")
	p1 := startProbe(t, "p1")
	var ds []*simDevice
	for i := range 3 {
		ds = append(ds, enrollSim(t, p1.n, "acme", fmt.Sprintf("h-%d", i), "plant-9", "android"))
	}
	slices.SortFunc(ds, func(a, b *simDevice) int { return strings.Compare(string(a.e.Path), string(b.e.Path)) })
	for i, fw := range []string{`"2.1.0"`, `"2.0.9"`} {
		v, err := model.NewVariable(json.RawMessage(fw), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p1.n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: ds[i].e.Path, Variables: map[string]model.Variable{"fw": v}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range ds {
		d.connect(t, p1.n)
	}
	joinNode(t, &p1.fedNode, hq, "p1", "operate", "/devices")
	at := "/peers/p1" + string(ds[2].e.Path)
	tstest.WaitForErr(t, bulkWait, at+" at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, at)
		return err == nil, err
	})

	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: "reboot",
		Target:  client.BulkTarget{Filter: map[string]string{"path": "/peers/p1", "label.site": "plant-9"}},
		Rollout: json.RawMessage(`{"health":{"online":true,"vars":{"fw":"2.1.0"},"within":"2s"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	done := waitBulk(t, hq.admin, b.ID, client.BulkDone)
	want := client.BulkCounters{Total: 3, Succeeded: 1, Failed: 2}
	if done.Counters != want || done.Peers["/peers/p1"].BulkCounters != want {
		t.Fatalf("at hq: %+v", done)
	}
	if truth := bulkTruth(t, p1.n, b.ID); truth != (client.BulkCounters{Total: 3, Succeeded: 3}) {
		t.Fatalf("the probe's device jobs: %+v", truth)
	}
	var fs *client.BulkFailurePage
	tstest.WaitForErr(t, bulkWait, "two failures at hq", func() (bool, error) {
		fs, err = hq.admin.BulkFailures(ctx, b.ID, "", 10)
		return err == nil && len(fs.Failures) == 2, err
	})
	errs := map[string]string{}
	for _, f := range fs.Failures {
		if f.Node != "/peers/p1" || f.Job != bulk.AttemptJobID(b.ID, f.Device, 0) {
			t.Fatalf("failure %+v", f)
		}
		errs[f.Device] = f.Error
	}
	if errs[ds[1].e.DeviceID] != `health gate: fw is "2.0.9", want "2.1.0" after 2s` ||
		errs[ds[2].e.DeviceID] != `health gate: fw is not set, want "2.1.0" after 2s` {
		t.Fatalf("failures at hq: %v", errs)
	}
}
