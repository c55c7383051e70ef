package browser

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
)

// TestDeviceList filters the Devices screen, pages it, and exports the
// query as CSV: the file holds every match of every page (more than one
// page of the export's own reads), exactly what the API's search finds,
// and for a tenant user nothing of another tenant.
func TestDeviceList(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	tn := startNode(t, "hq")
	ctx := context.Background()
	tn.device(t, "acme", "hw-acme")
	tn.device(t, "globex", "hw-globex")
	opUser, opPass := tn.user(t, "olive@acme", "acme", "operator")

	// 1,015 sensors of acme under /sites: 1,005 at lyon (more than one page of the export's reads), 10 at paris.
	for _, p := range []string{"/sites", "/sites/lyon"} {
		if _, _, err := tn.admin.PutContext(ctx, p, client.ContextUpdate{Type: "folder"}); err != nil {
			t.Fatal(err)
		}
	}
	const lyon, paris = 1005, 10
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < lyon+paris; i += 8 {
				site := "lyon"
				if i >= lyon {
					site = "paris"
				}
				_, _, err := tn.admin.PutContext(ctx, fmt.Sprintf("/sites/lyon/s-%04d", i), client.ContextUpdate{
					Type: "sensor", Tenant: "acme", Labels: map[string]string{"site": site, "line": fmt.Sprint(i % 3)},
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}

	t.Run("FilterPageAndExportCSV", func(t *testing.T) {
		tab := b.tab(t)
		dl := t.TempDir()
		login(t, tab, tn.url, opUser, opPass)
		run(t, tab, "filter the device list",
			chromedp.Click(chromedp.CSS(`header nav a[href="/devices"]`)),
			chromedp.WaitVisible(chromedp.CSS(`form[data-test=device-filters]`)),
		)
		fill(t, tab, `input[name=type]`, "sensor")
		fill(t, tab, `input[name=filters]`, "site=lyon var.nothing=null")
		run(t, tab, "search",
			chromedp.Click(chromedp.CSS(`[data-test=search]`)),
		)
		// var.nothing=null matches no context: the filter is the node's.
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 0 shown" })
		fill(t, tab, `input[name=filters]`, "site=lyon")
		run(t, tab, "drop the impossible filter",
			chromedp.Click(chromedp.CSS(`[data-test=search]`)),
		)
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 100 shown" })
		if n := eval[int](t, tab, `document.querySelectorAll("[data-test=device-list] tbody tr").length`); n != 100 {
			t.Fatalf("%d rows on the first page, want 100", n)
		}
		shot(t, tab, "devices")
		first := eval[string](t, tab, `document.querySelector("[data-test=device-list] tbody tr").dataset.path`)
		if first != "/sites/lyon/s-0000" {
			t.Fatalf("first row %q", first)
		}
		run(t, tab, "next page", chromedp.Click(chromedp.CSS(`[data-test=next-page]`)))
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 2: 100 shown" })
		first = eval[string](t, tab, `document.querySelector("[data-test=device-list] tbody tr").dataset.path`)
		if first != "/sites/lyon/s-0100" {
			t.Fatalf("first row of page 2 %q", first)
		}
		// Add the label line as a column, then export the whole query.
		run(t, tab, "choose a column and export",
			chromedp.Click(chromedp.CSS(`details.columns summary`)),
			chromedp.Click(chromedp.CSS(`input[name="col-label.line"]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=device-list] td[data-col="label.line"]`)),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
					Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl,
				})
				return err
			}),
			chromedp.Click(chromedp.CSS(`[data-test=export-csv]`)),
		)
		rows := readCSV(t, filepath.Join(dl, "devices.csv"))
		want := searchAll(t, tn.admin.WithToken(sessionTokenOf(t, tab)), client.SearchQuery{Type: "sensor", Labels: map[string]string{"site": "lyon"}})
		if len(want) != lyon {
			t.Fatalf("the API finds %d, want %d", len(want), lyon)
		}
		if !slices.Equal(rows[0], []string{"path", "type", "tenant", "var.online", "label.line"}) {
			t.Fatalf("CSV header %q", rows[0])
		}
		if len(rows)-1 != len(want) {
			t.Fatalf("CSV has %d rows, the API %d", len(rows)-1, len(want))
		}
		for i, c := range want {
			r := rows[i+1]
			if r[0] != c.Path || r[1] != c.Type || r[2] != c.Tenant || r[3] != "" || r[4] != c.Labels["line"] {
				t.Fatalf("CSV row %d %q, API %s %s %s line=%s", i+1, r, c.Path, c.Type, c.Tenant, c.Labels["line"])
			}
		}
	})

	// The query is the URL's: a bookmark opens the filtered list, a search
	// writes the URL, and back brings the previous list back.
	t.Run("QueryInURL", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, tn.url, opUser, opPass)
		run(t, tab, "open a filtered list by its URL",
			chromedp.Navigate(tn.url+"/devices?path=/sites&type=sensor&q=site%3Dparis&limit=25"),
		)
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 10 shown" })
		paths := eval[[]string](t, tab, `[...document.querySelectorAll("[data-test=device-list] tbody tr")].map(r => r.dataset.path)`)
		for i, p := range paths {
			if want := fmt.Sprintf("/sites/lyon/s-%04d", lyon+i); p != want {
				t.Fatalf("row %d %q, want %q", i, p, want)
			}
		}
		if got := eval[[]string](t, tab, `["path", "type", "filters"].map(n => document.querySelector("input[name=" + n + "]").value)`); !slices.Equal(got, []string{"/sites", "sensor", "site=paris"}) {
			t.Fatalf("the form shows %q", got)
		}

		fill(t, tab, `input[name=filters]`, "site=paris  line=1")
		run(t, tab, "search", chromedp.Click(chromedp.CSS(`[data-test=search]`)))
		// s-1006, s-1009, s-1012.
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 3 shown" })
		want := "/devices?path=%2Fsites&type=sensor&q=site%3Dparis+line%3D1&limit=25"
		if got := eval[string](t, tab, `location.pathname + location.search`); got != want {
			t.Fatalf("URL after search %q, want %q", got, want)
		}
		// The URL alone gives the same list: reload it.
		run(t, tab, "reload", chromedp.Reload())
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 3 shown" })
		if v := eval[string](t, tab, `document.querySelector("input[name=filters]").value`); v != "site=paris line=1" {
			t.Fatalf("filters after reload %q", v)
		}

		// history.back, not chromedp.NavigateBack: that waits for a page
		// load, and a pushed URL's entry is the same document.
		eval[bool](t, tab, `(history.back(), true)`)
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 10 shown" })
		if v := eval[string](t, tab, `document.querySelector("input[name=filters]").value`); v != "site=paris" {
			t.Fatalf("filters after back %q", v)
		}
		eval[bool](t, tab, `(history.forward(), true)`)
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 3 shown" })
	})

	// Sorting is the node's, by the URL's sort or a click on a header, and
	// the number of matches is shown beside the page.
	t.Run("SortAndCount", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, tn.url, opUser, opPass)
		rows := func() []string {
			return eval[[]string](t, tab, `[...document.querySelectorAll("[data-test=device-list] tbody tr")].map(r => r.dataset.path.slice(-4))`)
		}
		run(t, tab, "open a list sorted by a label, descending",
			chromedp.Navigate(tn.url+"/devices?path=/sites&type=sensor&q=site%3Dparis&sort=-label.line&limit=25"),
		)
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 10 shown" })
		// line = i % 3: 2 first, then 1, then 0, each by path.
		if got, want := rows(), []string{"1007", "1010", "1013", "1006", "1009", "1012", "1005", "1008", "1011", "1014"}; !slices.Equal(got, want) {
			t.Fatalf("sorted by -label.line: %q, want %q", got, want)
		}
		waitText(t, tab, `[data-test=match-count]`, 10*time.Second, func(s string) bool { return s == "10 matching" })
		run(t, tab, "sort by path", chromedp.Click(chromedp.CSS(`th[data-sort=path]`)))
		waitText(t, tab, `th[data-sort=path]`, 10*time.Second, func(s string) bool { return s == "path ▲" })
		tstest.WaitFor(t, 10*time.Second, "rows by path", func() bool {
			got := rows()
			return len(got) == 10 && got[0] == "1005" && got[9] == "1014"
		})
		run(t, tab, "sort by path, descending", chromedp.Click(chromedp.CSS(`th[data-sort=path]`)))
		waitText(t, tab, `th[data-sort=path]`, 10*time.Second, func(s string) bool { return s == "path ▼" })
		tstest.WaitFor(t, 10*time.Second, "rows by path descending", func() bool {
			got := rows()
			return len(got) == 10 && got[0] == "1014" && got[9] == "1005"
		})
		if got := eval[string](t, tab, `location.search`); !strings.Contains(got, "sort=-path") {
			t.Fatalf("URL after sorting %q", got)
		}
	})

	t.Run("TenantSeesOnlyItsDevices", func(t *testing.T) {
		tab := b.tab(t)
		login(t, tab, tn.url, opUser, opPass)
		run(t, tab, "list devices", chromedp.Navigate(tn.url+"/devices"))
		waitText(t, tab, `[data-test=page-info]`, 10*time.Second, func(s string) bool { return s == "page 1: 1 shown" })
		if tenant := eval[string](t, tab, `document.querySelector("[data-test=device-list] tbody tr td:nth-child(2)").textContent`); tenant != "acme" {
			t.Fatalf("acme's operator lists a device of %q", tenant)
		}
		// The count is the tenant's too: globex's device is not in it.
		waitText(t, tab, `[data-test=match-count]`, 10*time.Second, func(s string) bool { return s == "1 matching" })
		// Naming another tenant is refused by the node, and the page says so.
		fill(t, tab, `input[name=tenant]`, "globex")
		run(t, tab, "ask for globex",
			chromedp.Click(chromedp.CSS(`[data-test=search]`)),
		)
		waitText(t, tab, `[data-test=devices-error]`, 10*time.Second, func(s string) bool { return s != "" })
		if exists(t, tab, `[data-test=device-list] tbody tr`) {
			t.Fatal("rows shown for another tenant")
		}
	})
}

// fill sets the value of the input sel as typing would (an input event).
func fill(t *testing.T, ctx context.Context, sel, v string) {
	t.Helper()
	eval[bool](t, ctx, fmt.Sprintf(`(e => { e.value = %q; e.dispatchEvent(new Event("input", {bubbles: true})); return true })(document.querySelector(%q))`, v, sel))
}

func sessionTokenOf(t *testing.T, ctx context.Context) string {
	tok, _ := sessionToken(t, ctx)
	return tok
}

// readCSV waits for the browser to finish writing name and parses it.
func readCSV(t *testing.T, name string) [][]string {
	t.Helper()
	var rows [][]string
	tstest.WaitForErr(t, 20*time.Second, "the CSV download", func() (bool, error) {
		f, err := os.Open(name)
		if err != nil {
			return false, err
		}
		defer f.Close()
		rows, err = csv.NewReader(f).ReadAll()
		return err == nil && len(rows) > 0, err
	})
	return rows
}

// searchAll reads every page of q.
func searchAll(t *testing.T, c *client.Client, q client.SearchQuery) []client.Context {
	t.Helper()
	var out []client.Context
	for {
		p, err := c.Search(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Contexts...)
		if p.Next == "" {
			return out
		}
		q.After = p.Next
	}
}
