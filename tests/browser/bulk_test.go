package browser

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
)

// setInput types v into the input sel as a user would (the console reads
// input events).
func setInput(t *testing.T, ctx context.Context, sel, v string) {
	t.Helper()
	run(t, ctx, "set "+sel, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event("input", {bubbles: true})); e.dispatchEvent(new Event("change", {bubbles: true})); })()`,
		sel, v)))
}

// A bulk job from the console: an operator filters the device list to the
// online devices, runs ping on them in two waves with a health gate
// (online after the job) and watches the job end with both devices
// succeeded (the disconnected device, outside the filter, is not
// selected); a viewer sees the job, its waves and nodes, and no button,
// and the node refuses the viewer's post.
func TestBulkJobConsole(t *testing.T) {
	ctx := context.Background()
	b := newBrowser(t)
	hq := startNode(t, "hq")
	d1 := hq.device(t, "acme", "hw-bulk-1")
	d2 := hq.device(t, "acme", "hw-bulk-2")
	gone := hq.device(t, "acme", "hw-bulk-3")
	hq.device(t, "globex", "hw-bulk-4") // another tenant's: never selected
	gone.c.Disconnect(100)
	tstest.WaitForErr(t, 10*time.Second, "the disconnected device offline", func() (bool, error) {
		c, err := hq.admin.GetContext(ctx, gone.path)
		return err == nil && string(c.Variables["online"].Value) == "false", err
	})
	opUser, opPass := hq.user(t, "olive@acme", "acme", "operator")
	viewUser, viewPass := hq.user(t, "vic@acme", "acme", "viewer")
	gusUser, gusPass := hq.user(t, "gus@globex", "globex", "operator")

	var jobID string
	t.Run("OperatorRunsOnFilteredList", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, opUser, opPass)
		run(t, tab, "filter the devices to the online ones",
			chromedp.Navigate(hq.url+"/devices"),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=device-filters]`)),
			chromedp.SetValue(chromedp.CSS(`select[name=online]`), "true"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("select[name=online]").dispatchEvent(new Event("change", {bubbles: true}))`),
			chromedp.Click(chromedp.CSS(`[data-test=search]`)),
		)
		tstest.WaitFor(t, 10*time.Second, "the two online devices listed", func() bool {
			return eval[int](t, tab, `document.querySelectorAll("[data-test=device-list] tbody tr").length`) == 2 &&
				exists(t, tab, fmt.Sprintf(`tr[data-path=%q]`, d1.path)) && exists(t, tab, fmt.Sprintf(`tr[data-path=%q]`, d2.path))
		})
		run(t, tab, "open the run form",
			chromedp.Click(chromedp.CSS(`[data-test=run-on-devices]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=run-bulk]`)),
		)
		target := waitText(t, tab, `[data-test=run-target]`, 5*time.Second, func(s string) bool { return s != "" })
		if !strings.Contains(target, `"var.online":"true"`) || !strings.Contains(target, `"type":"device"`) {
			t.Fatalf("run target %s, want the list's filter", target)
		}
		setInput(t, tab, `input[name=function]`, "ping")
		setInput(t, tab, `input[name=args]`, `{"count": 3}`)
		setInput(t, tab, `input[name=waves]`, "50,50")
		setInput(t, tab, `input[name=max_failures]`, "1")
		// A health gate: each device counts as succeeded once it is seen
		// online after its job.
		run(t, tab, "the health gate", chromedp.Click(chromedp.CSS(`input[name=health_online]`)))
		setInput(t, tab, `input[name=health_within]`, "1m")
		run(t, tab, "run", chromedp.Click(chromedp.CSS(`[data-test=run-bulk-submit]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-waves]`)))
		jobID = strings.TrimPrefix(eval[string](t, tab, `location.pathname`), "/jobs/")
		if !strings.HasPrefix(jobID, "b") || len(jobID) != 21 {
			t.Fatalf("opened %q, want a bulk job", jobID)
		}
		waitText(t, tab, `[data-test=job-state]`, 20*time.Second, func(s string) bool { return s == "done" })
		waitText(t, tab, `[data-test=bulk-counters] [data-test=progress-count]`, 5*time.Second, func(s string) bool { return s == "2/2" })
		waitText(t, tab, `[data-test=bulk-counters]`, 5*time.Second, func(s string) bool { return strings.Contains(s, "succeeded 2, failed 0") })
		if n := eval[int](t, tab, `document.querySelectorAll("[data-test=bulk-waves] tbody tr").length`); n != 2 {
			t.Fatalf("%d waves shown, want 2", n)
		}
		waitText(t, tab, `[data-test=bulk-failures] tbody`, 5*time.Second, func(s string) bool { return s == "no failures" })
		shot(t, tab, "bulk-job")
		// The node's truth: both online devices ran ping once and
		// succeeded; the offline one was not selected.
		j, err := hq.admin.GetBulkJob(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != "done" || j.Counters.Total != 2 || j.Counters.Succeeded != 2 || j.Target.Filter["var.online"] != "true" || j.CreatedBy != opUser ||
			!strings.Contains(string(j.Rollout), `"health":{"online":true,"within":"1m"}`) {
			t.Fatalf("bulk job at the node: %+v", j)
		}
		jobs, err := hq.admin.ListJobs(ctx, client.JobQuery{Device: gone.id, Limit: 10})
		if err != nil || len(jobs.Jobs) != 0 {
			t.Fatalf("the offline device has jobs %+v (%v)", jobs, err)
		}
		// Listed on the Jobs screen with its progress.
		row := fmt.Sprintf(`[data-test=bulk-jobs] tr[data-bulk=%q]`, jobID)
		run(t, tab, "the jobs list", chromedp.Navigate(hq.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(row)))
		waitText(t, tab, row+` [data-test=progress-count]`, 5*time.Second, func(s string) bool { return s == "2/2" })
		shot(t, tab, "bulk-jobs")
	})
	if jobID == "" {
		t.Fatal("no bulk job")
	}

	t.Run("ViewerSeesNoButtons", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, viewUser, viewPass)
		row := fmt.Sprintf(`[data-test=bulk-jobs] tr[data-bulk=%q]`, jobID)
		run(t, tab, "open the bulk job from the list",
			chromedp.Click(chromedp.CSS(`[data-test=nav-jobs]`)),
			chromedp.WaitVisible(chromedp.CSS(row)),
			chromedp.Click(chromedp.CSS(row+` a.mono`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-peers]`)),
		)
		waitText(t, tab, `[data-test=job-state]`, 5*time.Second, func(s string) bool { return s == "done" })
		for _, sel := range []string{`[data-test=bulk-actions]`, `[data-test=bulk-pause]`, `[data-test=bulk-resume]`, `[data-test=bulk-cancel]`, `[data-test=bulk-retry]`} {
			if exists(t, tab, sel) {
				t.Fatalf("a viewer sees %s", sel)
			}
		}
		token, _ := sessionToken(t, tab)
		for _, action := range []string{"pause", "cancel", "retry"} {
			status := eval[int](t, tab, fmt.Sprintf(`fetch(%q, {method: "POST", headers: {Authorization: "Bearer " + %q}}).then(r => r.status)`,
				"/api/v1/jobs/"+jobID+"/"+action, token))
			if status != http.StatusForbidden {
				t.Fatalf("viewer's %s: %d, want 403", action, status)
			}
		}
		status := eval[int](t, tab, fmt.Sprintf(`fetch("/api/v1/jobs", {method: "POST", headers: {Authorization: "Bearer " + %q, "Content-Type": "application/json"}, body: %q}).then(r => r.status)`,
			token, `{"function":"ping","args":{"count":1},"target":{"filter":{"path":"/","type":"device"}}}`))
		if status != http.StatusForbidden {
			t.Fatalf("viewer's bulk job: %d, want 403", status)
		}
		run(t, tab, "the devices list", chromedp.Navigate(hq.url+"/devices"), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-path=%q]`, d1.path))))
		if exists(t, tab, `[data-test=run-on-devices]`) {
			t.Fatal("a viewer sees Run on these devices")
		}
	})

	t.Run("OtherTenantSeesNothing", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, hq.url, gusUser, gusPass)
		run(t, tab, "the jobs list", chromedp.Navigate(hq.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`[data-test=bulk-jobs]`)))
		waitText(t, tab, `[data-test=bulk-jobs] tbody`, 5*time.Second, func(s string) bool { return s == "no bulk jobs" })
		run(t, tab, "the job itself", chromedp.Navigate(hq.url+"/jobs/"+jobID), chromedp.WaitVisible(chromedp.CSS(`[data-test=job-error-msg]`)))
		if exists(t, tab, `[data-test=bulk-waves]`) {
			t.Fatal("a globex operator sees acme's bulk job")
		}
	})
}
