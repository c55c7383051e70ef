package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

const alertWait = 30 * time.Second

// startAlertNode starts a node like startProbe (MQTT for devices), with
// a federation listener when fedAddr is given, its config changed by mod.
func startAlertNode(t *testing.T, name, fedAddr string, mod func(*config.Config)) *probeNode {
	t.Helper()
	dir := t.TempDir()
	id, err := WriteIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = name, dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.Federation.Addr = fedAddr
	cfg.Alerts.EvalInterval = config.Duration(20 * time.Millisecond)
	if mod != nil {
		mod(&cfg)
	}
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	p := &probeNode{fedNode: fedNode{file: file}, token: id.AdminToken, ca: id.CAPEM}
	p.start(t)
	return p
}

// webhook is a receiver of notifications that keeps them in order.
type webhook struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []alerts.WebhookMessage
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m alerts.WebhookMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("webhook: %v: %s", err, b)
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) got() []alerts.WebhookMessage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// waitMessages waits for the n-th notification and returns them all.
func (w *webhook) waitMessages(t *testing.T, n int) []alerts.WebhookMessage {
	t.Helper()
	tstest.WaitFor(t, alertWait, "notifications", func() bool { return len(w.got()) >= n })
	return w.got()
}

func (d *simDevice) telemetry(t *testing.T, body string) {
	t.Helper()
	d.mu.Lock()
	cl := d.cl
	d.mu.Unlock()
	if tk := cl.Publish(d.e.TopicPrefix+"telemetry", 1, false, body); !tk.WaitTimeout(harnessWait) || tk.Error() != nil {
		t.Fatalf("telemetry: %v", tk.Error())
	}
}

// waitAlert waits until cl lists exactly one alert of device (a path as
// the owner has it) in state, and returns it.
func waitAlert(t *testing.T, cl *client.Client, device, state string) client.Alert {
	t.Helper()
	var found client.Alert
	tstest.WaitForErr(t, alertWait, "alert of "+device+" "+state, func() (bool, error) {
		p, err := cl.Alerts(context.Background(), client.AlertQuery{State: state})
		if err != nil {
			return false, err
		}
		n := 0
		for _, a := range p.Alerts {
			if a.Device == device {
				found = a
				n++
			}
		}
		return n == 1, nil
	})
	return found
}

// A threshold alert raised at a probe from MQTT telemetry shows at HQ,
// two links up, with its original time; an ack from HQ reaches the
// probe; the webhook at HQ gets exactly one notification per change of
// its group, none again after HQ restarts; an alert raised while the
// probe is cut off reaches HQ with its original time once the link
// heals.
func TestAlertsAcrossTiers(t *testing.T) {
	ctx := context.Background()
	hook := newWebhook(t)
	zero, wait, interval := config.Duration(0), config.Duration(100*time.Millisecond), config.Duration(100*time.Millisecond)
	hq := startAlertNode(t, "hq", "127.0.0.1:0", func(c *config.Config) {
		c.Alerts.Receivers = []config.AlertReceiver{{Name: "ops", Webhook: &config.AlertWebhook{URL: hook.srv.URL}}}
		c.Alerts.Routes = []config.AlertRoute{{Receiver: "ops", Match: map[string]string{"severity": "critical"},
			GroupBy: []string{"alertname"}, GroupWait: &wait, GroupInterval: &interval, RepeatInterval: &zero}}
	})
	eu := startFedNode(t, "eu", "127.0.0.1:0")
	p1 := startAlertNode(t, "p1", "", nil)
	d1 := enrollSim(t, p1.n, "acme", "d1", "plant-7", "linux")
	d2 := enrollSim(t, p1.n, "acme", "d2", "plant-7", "linux")
	d3 := enrollSim(t, p1.n, "acme", "d3", "plant-7", "linux")
	for _, d := range []*simDevice{d1, d2, d3} {
		d.connect(t, p1.n)
	}
	joinNode(t, eu, &hq.fedNode, "eu", "operate")
	joinNode(t, &p1.fedNode, eu, "p1", "operate", "/devices") // /alerts flows up anyway
	rule, err := p1.admin.CreateAlertRule(ctx, client.AlertRule{Name: "hot", Kind: "threshold", Var: "temp", Op: ">",
		Value: ptr(80.0), For: "200ms", Severity: "critical", Labels: map[string]string{"team": "ops"}})
	if err != nil {
		t.Fatal(err)
	}

	// d1 runs hot: pending, then firing at the probe.
	d1.telemetry(t, `{"temp": 95}`)
	at1 := waitAlert(t, p1.admin, string(d1.e.Path), "firing")
	if at1.Rule != rule.ID || at1.Tenant != "acme" || at1.Labels["team"] != "ops" || at1.Labels["node"] != "p1" ||
		string(at1.Value) != "95" || at1.Since.IsZero() {
		t.Fatalf("alert at p1: %+v", at1)
	}
	// It shows at HQ under the mounts, with its original time.
	hq1 := waitAlert(t, hq.admin, string(d1.e.Path), "firing")
	if hq1.Path != "/peers/eu/peers/p1"+at1.Path || !hq1.Since.Equal(at1.Since) || hq1.Tenant != "acme" {
		t.Fatalf("alert at hq: %+v, at p1 %+v", hq1, at1)
	}
	msgs := hook.waitMessages(t, 1)
	if m := msgs[0]; m.Status != "firing" || len(m.Alerts) != 1 || m.Alerts[0].Path != hq1.Path || m.GroupLabels["alertname"] != "hot" || m.Node != "hq" {
		t.Fatalf("first notification: %+v", m)
	}

	// Ack from HQ: goes down two links, made at p1 by HQ's operator.
	acked, err := hq.admin.AckAlert(ctx, hq1.Path)
	if err != nil || !acked.Acked || acked.AckedBy != "admin@eu" || acked.Path != hq1.Path {
		t.Fatalf("ack from hq: %+v %v", acked, err)
	}
	c, err := p1.admin.GetContext(ctx, at1.Path)
	if err != nil || string(c.Variables["acked"].Value) != "true" {
		t.Fatalf("at p1 after the ack: %+v %v", c, err)
	}
	tstest.WaitFor(t, alertWait, "the ack at hq", func() bool {
		a := waitAlert(t, hq.admin, string(d1.e.Path), "firing")
		return a.Acked
	})

	// d1 cools down: resolved, notified once.
	d1.telemetry(t, `{"temp": 20}`)
	waitAlert(t, hq.admin, string(d1.e.Path), "resolved")
	msgs = hook.waitMessages(t, 2)
	if m := msgs[1]; m.Status != "resolved" || len(m.Alerts) != 1 || m.Alerts[0].Status != "resolved" {
		t.Fatalf("second notification: %+v", m)
	}
	// d2 runs hot: the group changes once more; the resolved d1 is not
	// notified again.
	d2.telemetry(t, `{"temp": 91}`)
	msgs = hook.waitMessages(t, 3)
	if m := msgs[2]; len(m.Alerts) != 1 || m.Alerts[0].Labels["device"] != string(d2.e.Path) {
		t.Fatalf("third notification: %+v", m)
	}

	// HQ restarts: what it notified is not notified again; the next
	// change is.
	hcfg, err := config.Load(hq.file)
	if err != nil {
		t.Fatal(err)
	}
	hcfg.Federation.Addr = hq.n.FederationAddr() // eu dials it again
	writeConfig(t, hq.file, hcfg)
	hq.restart(t)
	d3.telemetry(t, `{"temp": 99}`)
	msgs = hook.waitMessages(t, 4)
	if len(msgs) != 4 {
		t.Fatalf("notifications: %+v", msgs)
	}
	var devs []string
	for _, a := range msgs[3].Alerts {
		devs = append(devs, a.Labels["device"])
	}
	slices.Sort(devs)
	want := []string{string(d2.e.Path), string(d3.e.Path)}
	slices.Sort(want)
	if !slices.Equal(devs, want) {
		t.Fatalf("fourth notification (the group's firing alerts): %v, want %v", devs, want)
	}

	// p1 is cut off: d1 runs hot again there; once healed, HQ shows the
	// new alert with the time it began at p1.
	if err := p1.n.Federation().SetLinksActive(false); err != nil {
		t.Fatal(err)
	}
	d1.telemetry(t, `{"temp": 120}`)
	cut := waitAlert(t, p1.admin, string(d1.e.Path), "firing")
	if err := p1.n.Federation().SetLinksActive(true); err != nil {
		t.Fatal(err)
	}
	healed := waitAlert(t, hq.admin, string(d1.e.Path), "firing")
	if healed.Path != "/peers/eu/peers/p1"+cut.Path || !healed.Since.Equal(cut.Since) || cut.Path == at1.Path {
		t.Fatalf("after the heal: %+v, at p1 %+v", healed, cut)
	}
}

func ptr[T any](v T) *T { return &v }

// An alert not acknowledged at its probe in time escalates: the label
// escalation flows up with it, and HQ's route for escalated alerts
// pages once.
func TestAlertEscalatesUp(t *testing.T) {
	ctx := context.Background()
	duty := newWebhook(t)
	zero := config.Duration(0)
	hq := startAlertNode(t, "hq", "127.0.0.1:0", func(c *config.Config) {
		c.Alerts.Receivers = []config.AlertReceiver{{Name: "duty", Webhook: &config.AlertWebhook{URL: duty.srv.URL}}}
		c.Alerts.Routes = []config.AlertRoute{{Receiver: "duty", Match: map[string]string{"escalation": "1"},
			GroupWait: &zero, GroupInterval: &zero, RepeatInterval: &zero}}
	})
	p1 := startAlertNode(t, "p1", "", nil)
	d1 := enrollSim(t, p1.n, "acme", "d1", "plant-7", "linux")
	joinNode(t, &p1.fedNode, &hq.fedNode, "p1", "operate", "/devices")
	if _, err := p1.admin.CreateAlertRule(ctx, client.AlertRule{Name: "hot", Kind: "threshold", Var: "temp", Op: ">",
		Value: ptr(80.0), Escalate: []string{"100ms"}}); err != nil {
		t.Fatal(err)
	}
	setTemp(t, p1.n, d1.e.Path, 90)
	var a client.Alert
	tstest.WaitFor(t, alertWait, "the escalated alert at hq", func() bool {
		a = waitAlert(t, hq.admin, string(d1.e.Path), "firing")
		return a.Escalation == 1
	})
	msgs := duty.waitMessages(t, 1)
	if m := msgs[0]; len(m.Alerts) != 1 || m.Alerts[0].Path != a.Path || m.Alerts[0].Labels["escalation"] != "1" {
		t.Fatalf("paged: %+v", m)
	}
}
