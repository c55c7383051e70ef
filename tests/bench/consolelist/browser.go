package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium with one tab.
type browser struct {
	ctx            context.Context
	cancelAlloc    context.CancelFunc
	cancelBrowser  context.CancelFunc
	token, session string
}

func chromiumPath(flagged string) (string, error) {
	if flagged != "" {
		return flagged, nil
	}
	if p := os.Getenv("STRATA_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium: install Debian's chromium (scripts/install-test-deps.sh), or pass -chromium or set STRATA_CHROMIUM")
}

func startBrowser(exe string) (*browser, error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // may run as root
		chromedp.IgnoreCertErrors,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	b := &browser{ctx: bctx, cancelAlloc: cancelA, cancelBrowser: cancelB}
	if err := chromedp.Do(bctx); err != nil {
		b.stop()
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	// Before any of a document's scripts: record when the device table's
	// first row enters the DOM (performance.now(), from the navigation's
	// start).
	err := chromedp.Do(bctx, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: rowsAtScript})
		return chromedp.Void{}, err
	})
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

const rowsAtScript = `(() => {
  if (window.__rowsAtInstalled) return;
  window.__rowsAtInstalled = true;
  const mo = new MutationObserver(() => {
    if (window.__rowsAt === undefined && document.querySelector("table[data-test=device-list] tbody tr")) {
      window.__rowsAt = performance.now();
      mo.disconnect();
    }
  });
  mo.observe(document, { childList: true, subtree: true });
})()`

func (b *browser) stop() {
	b.cancelBrowser()
	b.cancelAlloc()
}

func (b *browser) do(d time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

func eval[T any](b *browser, js string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// login logs in through the login form and keeps the session's token.
func (b *browser) login(base, user, password string) error {
	err := b.do(30*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`form[data-test=login]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form[data-test=login] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=who]`)),
	)
	if err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	s, err := eval[struct{ Token string }](b, `JSON.parse(sessionStorage.getItem("strata.session"))`)
	if err != nil {
		return err
	}
	if s.Token == "" {
		return fmt.Errorf("no session token in sessionStorage after login")
	}
	b.token = s.Token
	return nil
}

// sample is one measured first page as the browser saw it.
type sample struct {
	Render float64 // ms, until the rows are in the DOM
	Server float64 // ms, the search request's requestStart..responseEnd
	URL    string  // the search request's URL
	First  string  // the first row's path
	Rows   int
	Error  string
}

// The search request's entry of Resource Timing, read after the rows.
const searchEntryJS = `const es = performance.getEntriesByType("resource").filter((e) => e.name.includes("/api/v1/search?"));
  const e = es[es.length - 1];
  const rows = document.querySelectorAll("table[data-test=device-list] tbody tr");
  const out = { Rows: rows.length, First: rows.length ? rows[0].dataset.path : "" };
  if (e) { out.Server = e.responseEnd - e.requestStart; out.URL = e.name; }`

// pageLoad navigates to /devices (its default query) and measures from
// the navigation's start.
func (b *browser) pageLoad(base string) (sample, error) {
	if err := b.do(60*time.Second, chromedp.Navigate(base+"/devices")); err != nil {
		return sample{}, err
	}
	s, err := eval[sample](b, `new Promise((resolve) => {
  const t = Date.now();
  const f = () => {
    const err = document.querySelector("[data-test=devices-error]");
    if (window.__rowsAt === undefined && !err && Date.now() - t < 30000) return setTimeout(f, 5); // the time is the observer's
    `+searchEntryJS+`
    out.Render = window.__rowsAt ?? -1;
    if (window.__rowsAt === undefined) out.Error = err ? err.textContent : "no rows after 30 s";
    resolve(out);
  };
  f();
})`)
	if err == nil && s.Error != "" {
		err = fmt.Errorf("page load: %s", s.Error)
	}
	return s, err
}

// submit types line into the screen's filter field, submits the form and
// measures from the submit until the new answer's rows are in the DOM.
func (b *browser) submit(line string) (sample, error) {
	l, _ := json.Marshal(line)
	performanceClear := `performance.clearResourceTimings();`
	s, err := eval[sample](b, `(async (line) => {
  const input = document.querySelector("input[name=filters]");
  input.value = line;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  await new Promise((r) => setTimeout(r, 0)); // the screen's state takes the field's value
  `+performanceClear+`
  const tbody = document.querySelector("table[data-test=device-list] tbody");
  let emptied = false, timer;
  const rendered = new Promise((resolve, reject) => {
    const mo = new MutationObserver(() => {
      const n = tbody.querySelectorAll("tr").length;
      if (n === 0) emptied = true;
      const err = document.querySelector("[data-test=devices-error]");
      if ((emptied && n > 0) || err) {
        const t = performance.now();
        mo.disconnect();
        clearTimeout(timer);
        err ? reject(new Error(err.textContent)) : resolve(t);
      }
    });
    mo.observe(tbody.parentElement.parentElement, { childList: true, subtree: true, characterData: true });
    timer = setTimeout(() => (mo.disconnect(), reject(new Error("no rows after 30 s"))), 30000);
  });
  const t0 = performance.now();
  document.querySelector("form[data-test=device-filters]").requestSubmit();
  const t1 = await rendered;
  `+searchEntryJS+`
  out.Render = t1 - t0;
  return out;
})(`+string(l)+`)`)
	return s, err
}
