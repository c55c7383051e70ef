package browser

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/node/client"
)

// liveBound is how soon after a device publishes a value the console must
// show it.
const liveBound = 2 * time.Second

// One node, one browser, one device of tenant acme; each subtest opens its
// own tab and logs in as its own user.
func TestConsole(t *testing.T) {
	b := newBrowser(t)
	tn := startNode(t, "hq")
	d := tn.device(t, "acme", "hw-1")
	opUser, opPass := tn.user(t, "olive@acme", "acme", "operator")
	viewUser, viewPass := tn.user(t, "vic@acme", "acme", "viewer")
	devRoute := "/device" + d.path

	t.Run("NotBuiltNeverHidesTheAPI", func(t *testing.T) {
		// /api/... is the API's, even for a browser asking for HTML.
		ctx := b.tab(t)
		run(t, ctx, "open an unknown API path", chromedp.Navigate(tn.url+"/api/v1/nothing"))
		body := eval[string](t, ctx, `document.body.textContent`)
		if !strings.Contains(body, `"not_found"`) {
			t.Fatalf("/api/v1/nothing in a browser: %q", body)
		}
	})

	t.Run("LoginBrowseLiveValue", func(t *testing.T) {
		ctx := b.tab(t)
		login(t, ctx, tn.url, opUser, opPass)
		// Browse: / → devices → the device.
		run(t, ctx, "browse the tree to the device",
			chromedp.WaitVisible(chromedp.CSS(`[data-test=device-counts]`)), // the landing screen
			chromedp.Click(chromedp.CSS(`header nav a[href="/tree"]`)),
			chromedp.WaitVisible(chromedp.CSS(`li[data-path="/devices"]`)),
			chromedp.Click(chromedp.CSS(`li[data-path="/devices"] > button.toggle`)),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`a[href=%q]`, devRoute))),
		)
		shot(t, ctx, "tree")
		run(t, ctx, "open the device",
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href=%q]`, devRoute))),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=var-temp]`)),
		)
		waitText(t, ctx, `[data-test=var-temp]`, 5*time.Second, func(s string) bool { return s == "20.5" })
		// The change stream is open before the device publishes, so the new
		// value can only arrive through it.
		waitText(t, ctx, `[data-test=stream]`, 10*time.Second, func(s string) bool { return s == "live" })
		start := time.Now()
		d.publish(t, "telemetry", map[string]any{"temp": 42.5})
		waitText(t, ctx, `[data-test=var-temp]`, liveBound, func(s string) bool { return s == "42.5" })
		t.Logf("value shown %v after the device's publish was acknowledged", time.Since(start).Round(time.Millisecond))
		// A variable the page has never seen appears too.
		d.publish(t, "telemetry", map[string]any{"load": 0.75})
		waitText(t, ctx, `[data-test=var-load]`, liveBound, func(s string) bool { return s == "0.75" })
	})

	t.Run("CallFunctionAndFollowJob", func(t *testing.T) {
		ctx := b.tab(t)
		login(t, ctx, tn.url, opUser, opPass)
		run(t, ctx, "open the device and call ping",
			chromedp.Navigate(tn.url+devRoute),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=call-ping]`)),
			// The form is built from the argument schema: count is required.
			chromedp.Click(chromedp.CSS(`[data-test=call-ping]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=fn-ping] [data-test=call-error]`)),
		)
		waitText(t, ctx, `[data-test=fn-ping] [data-test=call-error]`, 5*time.Second, func(s string) bool { return strings.Contains(s, "count is required") })
		run(t, ctx, "fill the form and call",
			chromedp.SendKeys(chromedp.CSS(`input[name=ping-count]`), "3"),
			chromedp.Click(chromedp.CSS(`[data-test=call-ping]`)),
		)
		waitText(t, ctx, `[data-test=fn-ping] [data-test=job-state]`, 20*time.Second, func(s string) bool { return s == "succeeded" })
		res := waitText(t, ctx, `[data-test=fn-ping] [data-test=job-result]`, 5*time.Second, func(s string) bool { return strings.Contains(s, `"pong": 3`) })
		// The job the page shows is the node's.
		jobs, err := tn.admin.ListJobs(context.Background(), client.JobQuery{Device: d.id})
		if err != nil || len(jobs.Jobs) != 1 || jobs.Jobs[0].CreatedBy != opUser || string(jobs.Jobs[0].State) != "succeeded" {
			t.Fatalf("jobs at the node: %+v %v (page: %s)", jobs, err, res)
		}
	})

	t.Run("ViewerCannotCall", func(t *testing.T) {
		ctx := b.tab(t)
		login(t, ctx, tn.url, viewUser, viewPass)
		run(t, ctx, "open the device",
			chromedp.Navigate(tn.url+devRoute),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=fn-ping]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=read-only]`)),
		)
		if exists(t, ctx, `[data-test^=call-]`) || exists(t, ctx, `form.fn button`) {
			t.Fatal("a viewer sees a call button")
		}
		// The page hides the button; the node refuses the call all the same,
		// made with the viewer's own session from this tab.
		token, _ := sessionToken(t, ctx)
		status := eval[int](t, ctx, fmt.Sprintf(`fetch(%q, {method: "POST", headers: {Authorization: "Bearer " + %q, "Content-Type": "application/json"}, body: "{}"}).then(r => r.status)`,
			"/api/v1/contexts"+d.path+"/functions/reboot", token))
		if status != http.StatusForbidden {
			t.Fatalf("viewer's call: %d, want 403", status)
		}
		jobs, err := tn.admin.ListJobs(context.Background(), client.JobQuery{Device: d.id, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs.Jobs {
			if j.CreatedBy == viewUser {
				t.Fatalf("a job of the viewer exists: %+v", j)
			}
		}
	})

	t.Run("LogoutRevokesTheToken", func(t *testing.T) {
		ctx := b.tab(t)
		login(t, ctx, tn.url, opUser, opPass)
		token, _ := sessionToken(t, ctx)
		run(t, ctx, "log out",
			chromedp.Click(chromedp.CSS(`[data-test=logout]`)),
			chromedp.WaitVisible(chromedp.CSS(`form[data-test=login]`)),
		)
		shot(t, ctx, "login")
		_, err := tn.admin.WithToken(token).Whoami(context.Background())
		if !isUnauthorized(err) {
			t.Fatalf("the logged-out token still works: %v", err)
		}
		stored := eval[*string](t, ctx, `sessionStorage.getItem("strata.session")`)
		if stored != nil {
			t.Fatalf("session left in storage: %s", *stored)
		}
	})

	t.Run("RevokedSessionReturnsToLogin", func(t *testing.T) {
		ctx := b.tab(t)
		login(t, ctx, tn.url, opUser, opPass)
		_, id := sessionToken(t, ctx)
		if err := tn.admin.RevokeToken(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		// The next request answers 401: the console forgets the session.
		run(t, ctx, "browse after revocation",
			chromedp.Navigate(tn.url+"/tree/devices"),
			chromedp.WaitVisible(chromedp.CSS(`form[data-test=login]`)),
		)
	})
}

func isUnauthorized(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status == http.StatusUnauthorized
}
