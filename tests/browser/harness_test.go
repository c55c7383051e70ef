// Package browser drives the operator console in a real Chromium (Debian's
// chromium package, headless, through the DevTools protocol with chromedp)
// against a real node started in this process: real TLS, a real Badger
// store in a temporary directory, a device speaking real MQTT (Eclipse
// Paho). Without chromium the tests skip, saying how to install it, except
// under CI=true, where they fail. A failing test saves a screenshot and
// prints its path.
package browser

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/console"
)

// missing skips t, or fails it under CI=true, because something the
// browser tests need is not here.
func missing(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: not skipping)")
	}
	t.Skip(msg)
}

// chromiumPath finds the browser: $STRATA_CHROMIUM, else chromium on PATH.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STRATA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	missing(t, "browser tests need Debian's chromium: run scripts/install-test-deps.sh (or set STRATA_CHROMIUM to a Chromium binary)")
	return ""
}

// testNode is one node serving the console, with its admin client.
type testNode struct {
	n     *node.Node
	url   string // https://127.0.0.1:PORT
	admin *client.Client
	caPEM []byte
}

func startNode(t *testing.T, name string) *testNode {
	t.Helper()
	return startNodeWith(t, name, nil)
}

// startNodeWith starts a node whose config edit changes first (a
// federation listener, upstreams).
func startNodeWith(t *testing.T, name string, edit func(*config.Config)) *testNode {
	t.Helper()
	if !console.New().Built() {
		missing(t, "the console is not built into this test binary: run make console (npm ci && npm run build in node/console/web)")
	}
	dir := t.TempDir()
	id, err := node.WriteIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = name, dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.New(node.Options{Config: cfg, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	url := "https://" + n.APIAddr()
	cl, err := client.New(url, id.AdminToken, id.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{n: n, url: url, admin: cl, caPEM: id.CAPEM}
}

// user creates a user with a password and one grant on /.
func (tn *testNode) user(t *testing.T, name, tenant, role string) (user, password string) {
	t.Helper()
	password = "pw-" + name + "-0123456789"
	u, err := tn.admin.CreateUser(context.Background(), client.NewUser{
		Name: name, Password: password, Tenant: tenant,
		Grants: []client.Grant{{Role: role, Subtree: "/"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return u.Name, password
}

// systemUser creates a system administrator with a password.
func (tn *testNode) systemUser(t *testing.T, name string) (user, password string) {
	t.Helper()
	password = "pw-" + name + "-0123456789"
	u, err := tn.admin.CreateUser(context.Background(), client.NewUser{Name: name, Password: password, System: true})
	if err != nil {
		t.Fatal(err)
	}
	return u.Name, password
}

// device is an enrolled device connected over MQTT/TLS with Paho: it
// declares functions, publishes telemetry and answers "ping" with
// {"pong": <count>}.
type device struct {
	id, path string
	c        mqtt.Client
}

var pingArgs = json.RawMessage(`{"type":"object","properties":{"count":{"type":"integer","minimum":1,"description":"how many"}},"required":["count"]}`)

func (tn *testNode) device(t *testing.T, tenant, hw string) *device {
	t.Helper()
	return enrollDevice(t, tn.admin, tn.n.MQTTAddr("tls"), tenant, hw)
}

// enrollDevice enrolls a device of tenant on the node admin reaches (a
// system administrator's client) and connects it to mqttAddr.
func enrollDevice(t *testing.T, admin *client.Client, mqttAddr, tenant, hw string) *device {
	t.Helper()
	ctx := context.Background()
	tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "g", Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	e, err := admin.Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: hw})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(e.CAPEM))
	d := &device{id: e.DeviceID, path: e.Path}
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + mqttAddr).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	d.c = mqtt.NewClient(opts)
	if tk := d.c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("device connect: %v", tk.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(100) })
	prefix := "strata/" + d.id
	tk := d.c.Subscribe(prefix+"/cmd/+", 1, func(c mqtt.Client, m mqtt.Message) {
		var cmd apitypes.Command
		res := apitypes.CommandResult{Status: "succeeded"}
		if err := json.Unmarshal(m.Payload(), &cmd); err != nil {
			res = apitypes.CommandResult{Status: "failed", Error: err.Error()}
		} else {
			var a struct{ Count int }
			json.Unmarshal(cmd.Args, &a)
			res.Result = json.RawMessage(fmt.Sprintf(`{"pong":%d}`, a.Count))
		}
		b, _ := json.Marshal(res)
		c.Publish(m.Topic()+"/result", 1, false, b)
	})
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribe: %v", tk.Error())
	}
	d.publish(t, "inventory", map[string]any{
		"os": "linux",
		"functions": []map[string]any{
			{"name": "ping", "description": "answers pong", "args": pingArgs},
			{"name": "reboot"},
		},
	})
	d.publish(t, "telemetry", map[string]any{"temp": 20.5})
	tstest.WaitForErr(t, 10*time.Second, "device inventory applied", func() (bool, error) {
		c, err := admin.GetContext(ctx, d.path)
		return err == nil && len(c.Functions) == 2 && c.Variables["temp"].Value != nil, err
	})
	return d
}

// publish sends a QoS 1 message on the device's topic kind, waiting for
// the node's acknowledgement.
func (d *device) publish(t *testing.T, kind string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	tk := d.c.Publish("strata/"+d.id+"/"+kind, 1, false, b)
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publish %s: %v", kind, tk.Error())
	}
}

// browser is one headless Chromium shared by a test's tabs.
type browser struct {
	ctx       context.Context
	artifacts string
}

// newBrowser starts Chromium for t; it is stopped when t ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root
		chromedp.IgnoreCertErrors,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	if err := chromedp.Do(bctx); err != nil {
		cancelB()
		cancelA()
		t.Fatalf("start %s: %v", exe, err)
	}
	t.Cleanup(func() {
		cancelB()
		cancelA()
	})
	dir := os.Getenv("STRATA_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "strata-browser-artifacts")
	}
	return &browser{ctx: bctx, artifacts: dir}
}

// tab opens a new tab (its own sessionStorage: a fresh login) for t. When
// t fails, a screenshot of the tab is saved and its path printed.
func (b *browser) tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot(t, ctx)
		}
		cancel()
	})
	return ctx
}

func (b *browser) screenshot(t *testing.T, ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	if err := os.MkdirAll(b.artifacts, 0o755); err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	name := filepath.Join(b.artifacts, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot of the failing page: %s", name)
}

// run runs browser actions with a deadline, failing t on error.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(rctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// login logs in through the login form and waits for the shell.
func login(t *testing.T, ctx context.Context, base, user, password string) {
	t.Helper()
	run(t, ctx, "log in as "+user,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`form[data-test=login]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form[data-test=login] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=who]`)),
	)
}

// waitText waits, within d, until the text of the element sel matches ok,
// and returns it.
func waitText(t *testing.T, ctx context.Context, sel string, d time.Duration, ok func(string) bool) string {
	t.Helper()
	var last string
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent ?? null`, sel)
	tstest.WaitForErr(t, d, "text of "+sel, func() (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		s, err := chromedp.Run(rctx, chromedp.Evaluate[*string](js))
		if err != nil {
			return false, err
		}
		if s == nil {
			return false, fmt.Errorf("no %s (last text %q)", sel, last)
		}
		last = *s
		return ok(last), fmt.Errorf("text %q", last)
	})
	return last
}

// exists reports whether the page has an element matching sel.
func exists(t *testing.T, ctx context.Context, sel string) bool {
	t.Helper()
	return eval[bool](t, ctx, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// sessionToken reads the console's session from the tab's sessionStorage.
func sessionToken(t *testing.T, ctx context.Context) (token, id string) {
	t.Helper()
	s := eval[struct{ Token, ID string }](t, ctx, `JSON.parse(sessionStorage.getItem("strata.session"))`)
	return s.Token, s.ID
}

// eval evaluates a JavaScript expression in the tab (awaiting a promise)
// and returns its value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(rctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}
