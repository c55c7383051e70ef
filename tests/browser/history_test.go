package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/client"
)

// The device page charts a numeric variable's history over the range
// chosen, from the history API with its step; a viewer of the device's
// tenant sees it.
func TestHistoryChart(t *testing.T) {
	b := newBrowser(t)
	tn := startNode(t, "hq")
	d := tn.device(t, "acme", "hw-1")
	viewUser, viewPass := tn.user(t, "vic@acme", "acme", "viewer")
	// An hour of a tank level, one sample every 10 s, written with their
	// times as a device that was offline would send them.
	now := time.Now()
	for i := range 360 {
		at := now.Add(-time.Hour + time.Duration(i)*10*time.Second)
		v := 20 + 3*math.Sin(float64(i)/40)
		vv, err := model.NewVariable(json.RawMessage(fmt.Sprintf("%.2f", v)), at)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tn.n.Model().Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: model.Path(d.path),
			Variables: map[string]model.Variable{"level": vv}}); err != nil {
			t.Fatal(err)
		}
	}
	tstest.WaitForErr(t, 10*time.Second, "the history kept", func() (bool, error) {
		h, err := tn.admin.History(context.Background(), d.path, client.HistoryQuery{Var: "level", Step: "15s"})
		return err == nil && len(h.Points) >= 200, err
	})

	ctx := b.tab(t)
	login(t, ctx, tn.url, viewUser, viewPass)
	run(t, ctx, "open the device",
		chromedp.Navigate(tn.url+"/device"+d.path),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=history-line]`)),
	)
	count := waitText(t, ctx, `[data-test=history-count]`, 5*time.Second, func(s string) bool { return strings.Contains(s, "avg per 15s") })
	segs := eval[int](t, ctx, `document.querySelector("[data-test=history-line]").getAttribute("d").split(/[ML]/).length - 1`)
	if segs < 200 {
		t.Fatalf("the 1h chart draws %d points (%s)", segs, count)
	}
	shot(t, ctx, "device-history")
	run(t, ctx, "show 24 hours",
		chromedp.Click(chromedp.CSS(`[data-test=history-range-24h]`)),
	)
	waitText(t, ctx, `[data-test=history-count]`, 5*time.Second, func(s string) bool { return strings.Contains(s, "avg per 5m") })
	if segs := eval[int](t, ctx, `document.querySelector("[data-test=history-line]").getAttribute("d").split(/[ML]/).length - 1`); segs < 10 || segs > 20 {
		t.Fatalf("the 24h chart draws %d points, want an hour in 5-minute steps", segs)
	}
}
