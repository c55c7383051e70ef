package browser

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/console"
)

// demo is a running `strata demo`: HQ, a regional node eu and two probes,
// real tiers joined by tokens, each with its own store under dir.
type demo struct {
	console, user, password string
	hq, probeA              *client.Client
	probeAMQTT              string
}

var (
	demoNodeLine    = regexp.MustCompile(`^\s+(\S+)\s+\S+\s+(https://\S+)\s+strata ctl --config (\S+)`)
	demoDevicesLine = regexp.MustCompile(`^devices: \d+ on (\S+) \(MQTT (\S+)\)`)
)

// startDemo builds strata and runs `strata demo` with two simulated
// devices; it is stopped with SIGINT when t ends (exit status 0 expected).
func startDemo(t *testing.T) *demo {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "strata")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/strata-dm/strata/node/cmd/strata").CombinedOutput(); err != nil {
		t.Fatalf("go build strata: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "demo", "--devices", "2", "--dir", filepath.Join(t.TempDir(), "demo"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(p) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		close(lines)
		done <- cmd.Wait() // after every read, as exec requires
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("strata demo after SIGINT: %v", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("strata demo did not stop after SIGINT")
		}
	})

	d := &demo{}
	nodes := map[string][2]string{} // name → API URL, config
	deadline := time.After(2 * time.Minute)
	for d.probeAMQTT == "" || d.console == "" || d.password == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("strata demo ended:\n%s", stderr.String())
			}
			t.Logf("demo: %s", l)
			if m := demoNodeLine.FindStringSubmatch(l); m != nil {
				nodes[m[1]] = [2]string{m[2], m[3]}
			} else if m := demoDevicesLine.FindStringSubmatch(l); m != nil && m[1] == "probe-a" {
				d.probeAMQTT = m[2]
			} else if k, v, ok := strings.Cut(l, ": "); ok {
				switch k {
				case "console":
					d.console = strings.TrimSuffix(v, "/")
				case "user":
					d.user = v
				case "password":
					d.password = v
				}
			}
		case <-deadline:
			t.Fatal("strata demo did not print its console, login and devices within 2 minutes")
		}
	}
	go func() {
		for range lines { // keep the pipe drained
		}
	}()
	d.hq = adminOf(t, nodes["hq"])
	d.probeA = adminOf(t, nodes["probe-a"])
	return d
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// adminOf is a client of a demo node with its admin token (beside its
// config, as strata ctl finds it).
func adminOf(t *testing.T, n [2]string) *client.Client {
	t.Helper()
	if n[0] == "" {
		t.Fatal("a demo node's line is missing")
	}
	dir := filepath.Dir(n[1])
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "tls/ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(n[0], strings.TrimSpace(string(token)), ca)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTwoTiersBelowHQ drives HQ's console of a real three-tier hierarchy
// (probe-a → eu → hq, as `strata demo` runs it): the Overview shows the
// links and the devices below, the Devices screen finds a device of
// probe-a two tiers down, its Device screen shows a value the device
// publishes on probe-a within 2 s, and a function called there returns
// the device's answer.
func TestTwoTiersBelowHQ(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	if !console.New().Built() {
		missing(t, "the console is not built: run make console")
	}
	dm := startDemo(t)
	// A device of our own on probe-a, speaking MQTT there.
	dev := enrollDevice(t, dm.probeA, dm.probeAMQTT, "", "browser-tiers-1")
	hqPath := "/peers/eu/peers/probe-a" + dev.path
	tstest.WaitForErr(t, 30*time.Second, "HQ mirrors the device two tiers down", func() (bool, error) {
		c, err := dm.hq.GetContext(context.Background(), hqPath)
		return err == nil && len(c.Functions) == 2 && c.Variables["temp"].Value != nil, err
	})

	tab := b.tab(t)
	login(t, tab, dm.console, dm.user, dm.password)
	// Overview: the link to eu is up, and probe-a, two tiers down, has
	// online devices (the Overview's own test, in overview_test.go, takes
	// its screenshot).
	waitText(t, tab, `tr[data-peer="eu"] [data-test=link-state]`, 10*time.Second, func(s string) bool { return s == "connected" })
	waitText(t, tab, `tr[data-node="probe-a"] [data-test=online]`, 10*time.Second, func(s string) bool { return s != "…" && s != "0" })

	// Devices: the subtree of probe-a, online ones; open ours.
	devRoute := "/device" + hqPath
	run(t, tab, "open the Devices screen", chromedp.Click(chromedp.CSS(`header nav a[href="/devices"]`)), chromedp.WaitVisible(chromedp.CSS(`form[data-test=device-filters]`)))
	fill(t, tab, `input[name=path]`, "/peers/eu/peers/probe-a/devices")
	fill(t, tab, `input[name=filters]`, "var.os=linux")
	run(t, tab, "find the device and open it",
		chromedp.Click(chromedp.CSS(`[data-test=search]`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`a[href=%q]`, devRoute))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href=%q]`, devRoute))),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=var-temp]`)),
	)
	waitText(t, tab, `[data-test=stream]`, 10*time.Second, func(s string) bool { return s == "live" })
	start := time.Now()
	dev.publish(t, "telemetry", map[string]any{"temp": 77.25})
	waitText(t, tab, `[data-test=var-temp]`, liveBound, func(s string) bool { return s == "77.25" })
	t.Logf("value shown at HQ %v after the device's publish on probe-a was acknowledged", time.Since(start).Round(time.Millisecond))

	// Call ping there: the job runs on probe-a, the page follows it.
	fill(t, tab, `input[name=ping-count]`, "4")
	run(t, tab, "call ping two tiers down", chromedp.Click(chromedp.CSS(`[data-test=call-ping]`)))
	waitText(t, tab, `[data-test=fn-ping] [data-test=job-state]`, 30*time.Second, func(s string) bool { return s == "succeeded" })
	waitText(t, tab, `[data-test=fn-ping] [data-test=job-result]`, 5*time.Second, func(s string) bool { return strings.Contains(s, `"pong": 4`) })
	shot(t, tab, "device")
	jobs, err := dm.probeA.ListJobs(context.Background(), client.JobQuery{Device: dev.id})
	if err != nil || len(jobs.Jobs) != 1 || string(jobs.Jobs[0].State) != "succeeded" || !strings.HasPrefix(jobs.Jobs[0].CreatedBy, dm.user+"@") {
		t.Fatalf("jobs on probe-a: %+v %v", jobs, err)
	}
}
