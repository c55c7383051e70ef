// Command consolelist measures the console's device list: the first page
// of the Devices screen for a filter over 100,000 devices, in a real
// headless Chromium, beside its baseline, the same search request from
// Go's HTTP client alone, in the same run.
//
//	make console
//	go run ./tests/bench/consolelist -devices 100000 -queries 50
//
// It starts an in-process node on a fresh Badger store (the devices are
// written straight to their keys with LoadContexts before the node opens
// the store, which builds the search index at open), with the console
// built in (it refuses to run without it: make console), loopback HTTPS.
// It creates a system administrator, starts Debian's chromium (headless,
// chromedp), logs in through the login form and opens the Devices
// screen. Each round then measures, in one tab:
//
//   - "none (page load)": a navigation to /devices, whose default query is
//     every device below /; render time is from the navigation's start
//     (performance.timeOrigin) until the table's first row is in the DOM,
//     seen by a MutationObserver installed before any of the page's
//     scripts run;
//   - "site", "site+os", "hostname", "none": the filter typed into the
//     screen's filter field and submitted (the screen's URL does not carry
//     its query); render time is from the submit until the rows of the new
//     answer are in the DOM (a MutationObserver sees the old rows go and
//     the new ones come).
//
// For each, the server time is the /api/v1/search request's duration as
// the browser's Resource Timing saw it (requestStart to responseEnd, on a
// kept-alive connection), and the baseline replays that exact URL, with
// the same user's token, from Go (keep-alive HTTPS), checking that it
// finds the row the browser shows first.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/console"
)

func main() {
	devices := flag.Int("devices", 100_000, "device contexts below /devices")
	queries := flag.Int("queries", 50, "measured rounds: each measures every filter kind once and one page load")
	warmup := flag.Int("warmup", 3, "unmeasured rounds first")
	sites := flag.Int("sites", 100, "sites (label site=plant-N)")
	sorted := flag.Int("sorted", 20, "then, from the Go client: searches of each sorted and counted variant")
	dir := flag.String("dir", "", "node directory (default: a temporary one, removed after)")
	chromium := flag.String("chromium", "", "Chromium binary (default: $STRATA_CHROMIUM, else chromium on PATH)")
	flag.Parse()
	if err := run(*devices, *queries, *warmup, *sites, *sorted, *dir, *chromium); err != nil {
		fmt.Fprintln(os.Stderr, "consolelist:", err)
		os.Exit(1)
	}
}

func run(devices, queries, warmup, sites, sorted int, dir, chromium string) error {
	if !console.New().Built() {
		return fmt.Errorf("the console is not built into this binary: run make console (npm ci && npm run build in node/console/web), then run again")
	}
	exe, err := chromiumPath(chromium)
	if err != nil {
		return err
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "strata-consolelist-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, caPEM, token, err := setup(dir)
	if err != nil {
		return err
	}
	if load, err := avg(); err == nil {
		fmt.Printf("load average at start: %s\n", load)
	}

	t0 := time.Now()
	if err := preload(&cfg, log, devices, sites); err != nil {
		return err
	}
	fmt.Printf("loaded %d devices in %v (without the search index)\n", devices, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	n, err := node.New(node.Options{Config: cfg, Logger: log})
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		n.Shutdown(context.Background())
		return err
	}
	defer n.Shutdown(context.Background())
	fmt.Printf("node started (search index built at open) in %v\n", time.Since(t0).Round(time.Millisecond))
	base := "https://" + n.APIAddr()
	admin, err := client.New(base, token, caPEM)
	if err != nil {
		return err
	}
	const user, password = "bench-admin", "pw-bench-admin-0123456789"
	if _, err := admin.CreateUser(context.Background(), client.NewUser{Name: user, Password: password, System: true}); err != nil {
		return err
	}

	b, err := startBrowser(exe)
	if err != nil {
		return err
	}
	defer b.stop()
	if err := b.login(base, user, password); err != nil {
		return err
	}
	hc, err := newHTTPClient(caPEM, b.token)
	if err != nil {
		return err
	}
	defer hc.close()

	rs, err := rounds(b, hc, base, devices, sites, warmup, queries)
	if err != nil {
		return err
	}
	load, _ := avg()
	rs.print(devices, queries, load)
	if sorted > 0 {
		if err := sortedRounds(hc, base, devices, sites, sorted); err != nil {
			return err
		}
		load, _ = avg()
		fmt.Printf("load average at end: %s\n", load)
	}
	return nil
}

// preload writes the /devices folder through the model and the devices
// straight to their keys, on the store the node will open.
func preload(cfg *config.Config, log *slog.Logger, devices, sites int) error {
	s, err := node.OpenBadger(cfg, log)
	if err != nil {
		return err
	}
	m, err := model.New(model.Config{Store: s, Logger: log})
	if err != nil {
		s.Close()
		return err
	}
	_, err = m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices", Type: model.FolderType})
	m.Close()
	if err == nil {
		err = load(func(cs []*model.Context) error {
			_, err := s.LoadContexts(cs)
			return err
		}, devices, sites)
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

func setup(dir string) (config.Config, []byte, string, error) {
	id, err := node.WriteIdentity(dir, "consolelist")
	if err != nil {
		return config.Config{}, nil, "", err
	}
	cfg := config.Default()
	cfg.Name = "bench"
	cfg.Dir = dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Store.CacheMB = 256
	return cfg, id.CAPEM, id.AdminToken, cfg.Validate()
}

// avg is the machine's load average (/proc/loadavg's first three fields).
func avg() (string, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "", err
	}
	var a, b5, c string
	if _, err := fmt.Sscan(string(b), &a, &b5, &c); err != nil {
		return "", err
	}
	return a + " " + b5 + " " + c, nil
}
