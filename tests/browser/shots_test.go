package browser

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// shotWidth and shotHeight are the viewport of the screenshots in
// docs/console: the screen as an operator sees it, not the whole page.
const (
	shotWidth  = 1280
	shotHeight = 800
)

// shot saves a PNG of the tab's viewport as $STRATA_CONSOLE_SCREENSHOTS/name.png
// for docs/console.md, once the test has seen the screen show what it
// should. Without the variable it does nothing. The tab's viewport is
// restored afterwards, so the test goes on as it would without.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("STRATA_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx,
		chromedp.EmulateViewport(shotWidth, shotHeight),
		// Let the page lay out and paint at the new size.
		chromedp.Evaluate[chromedp.Void](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r())))`, chromedp.EvalAwaitPromise),
	); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := chromedp.Do(sctx, chromedp.ResetViewport()); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of %s: %s (%d bytes)", name, file, len(png))
}
