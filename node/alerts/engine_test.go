package alerts

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func rule(t *testing.T, spec string) *Rule {
	t.Helper()
	r, err := ParseRule([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	r.Spec.ID = "r1"
	return r
}

func testEngine(rs ...*Rule) *engine {
	e := newEngine("p1")
	n := 0
	e.newID = func(time.Time) string { n++; return fmt.Sprintf("a%d", n) }
	for _, r := range rs {
		e.rules[r.Spec.ID] = r
	}
	return e
}

func dev(tenant string, labels map[string]string) *model.Context {
	return &model.Context{Path: "/devices/d1", Type: "device", Tenant: tenant, Labels: labels}
}

func num(x float64, at time.Time) map[string]model.Variable {
	b, _ := json.Marshal(x)
	return map[string]model.Variable{"temp": {Value: b, Type: model.TypeNumber, Time: at}}
}

func state(t *testing.T, ms []model.Mutation, i int) string {
	t.Helper()
	if i >= len(ms) {
		t.Fatalf("mutation %d of %d", i, len(ms))
	}
	if ms[i].Op == model.OpDelete {
		return "deleted"
	}
	return stringVar(ms[i].Variables["state"])
}

// The lifecycle of a threshold alert with a fake clock: pending when the
// condition begins, firing only once it held `for`, one alert per rule and
// device while active, resolved when it ends; a condition that ends
// before `for` leaves nothing.
func TestThresholdLifecycle(t *testing.T) {
	r := rule(t, `{"name":"hot","kind":"threshold","var":"temp","op":">","value":80,"for":"30s","labels":{"team":"ops"}}`)
	e := testEngine(r)
	d := dev("acme", nil)

	if ms := e.observe(d, num(70, t0), nil); len(ms) != 0 {
		t.Fatalf("below the threshold: %v", ms)
	}
	ms := e.observe(d, num(85, t0.Add(time.Second)), nil)
	if state(t, ms, 0) != apitypes.AlertPending || ms[0].Path != "/alerts/a1" || ms[0].Tenant != "acme" || ms[0].Type != AlertType {
		t.Fatalf("pending: %+v", ms)
	}
	l := ms[0].Labels
	if l[LabelRule] != "r1" || l[LabelDevice] != "/devices/d1" || l[LabelSeverity] != "warning" || l["team"] != "ops" || l[LabelNode] != "p1" {
		t.Fatalf("labels %v", l)
	}
	if stringVar(ms[0].Variables["since"]) != t0.Add(time.Second).Format(time.RFC3339Nano) {
		t.Fatalf("since %s", ms[0].Variables["since"].Value)
	}
	// Still above: no second alert (de-duplication), no write.
	if ms := e.observe(d, num(90, t0.Add(2*time.Second)), nil); len(ms) != 0 {
		t.Fatalf("again: %v", ms)
	}
	if ms := e.tick(t0.Add(30 * time.Second)); len(ms) != 0 {
		t.Fatalf("fired before for: %v", ms)
	}
	ms = e.tick(t0.Add(31 * time.Second))
	if state(t, ms, 0) != apitypes.AlertFiring || ms[0].Path != "/alerts/a1" {
		t.Fatalf("firing: %+v", ms)
	}
	if ms := e.tick(t0.Add(40 * time.Second)); len(ms) != 0 {
		t.Fatalf("fired twice: %v", ms)
	}
	ms = e.observe(d, num(60, t0.Add(50*time.Second)), nil)
	if state(t, ms, 0) != apitypes.AlertResolved || ms[0].Path != "/alerts/a1" {
		t.Fatalf("resolved: %+v", ms)
	}
	if p, f := e.counts(); p+f != 0 {
		t.Fatalf("still active: %d %d", p, f)
	}
	// Again above: a new alert.
	ms = e.observe(d, num(99, t0.Add(60*time.Second)), nil)
	if state(t, ms, 0) != apitypes.AlertPending || ms[0].Path != "/alerts/a2" {
		t.Fatalf("new alert: %+v", ms)
	}
	// Ends before for: the pending alert is deleted, never fired.
	ms = e.observe(d, num(10, t0.Add(70*time.Second)), nil)
	if state(t, ms, 0) != "deleted" || ms[0].Path != "/alerts/a2" {
		t.Fatalf("pending ended: %+v", ms)
	}
}

func TestThresholdZeroForFiresAtOnce(t *testing.T) {
	e := testEngine(rule(t, `{"name":"low","kind":"threshold","var":"temp","op":"<=","value":0}`))
	if ms := e.observe(dev("", nil), num(0, t0), nil); state(t, ms, 0) != apitypes.AlertFiring {
		t.Fatalf("%+v", ms)
	}
}

// A tenant's rule sees only its tenant's devices; the selector's labels
// and path hold.
func TestRuleSelects(t *testing.T) {
	r := rule(t, `{"name":"hot","kind":"threshold","var":"temp","op":">","value":1,"selector":{"labels":{"site":"a"}}}`)
	r.Spec.Tenant = "acme"
	e := testEngine(r)
	for _, c := range []*model.Context{
		dev("globex", map[string]string{"site": "a"}),
		dev("acme", map[string]string{"site": "b"}),
		{Path: "/peers/p/devices/d1", Type: "device", Tenant: "acme", Labels: map[string]string{"site": "a"}},
		{Path: "/other/d1", Type: "device", Tenant: "acme", Labels: map[string]string{"site": "a"}},
		{Path: "/devices/d1", Type: "gateway", Tenant: "acme", Labels: map[string]string{"site": "a"}},
	} {
		if ms := e.observe(c, num(5, t0), nil); len(ms) != 0 {
			t.Errorf("%s %s %v: %v", c.Path, c.Tenant, c.Labels, ms)
		}
	}
	if ms := e.observe(dev("acme", map[string]string{"site": "a"}), num(5, t0), nil); len(ms) != 1 {
		t.Fatalf("own device: %v", ms)
	}
}

func TestOfflineRule(t *testing.T) {
	e := testEngine(rule(t, `{"name":"gone","kind":"offline","for":"1m"}`))
	d := dev("", nil)
	off := map[string]model.Variable{"online": {Value: json.RawMessage("false"), Type: model.TypeBool, Time: t0}}
	if ms := e.observe(d, off, nil); state(t, ms, 0) != apitypes.AlertPending {
		t.Fatalf("%+v", ms)
	}
	if ms := e.tick(t0.Add(time.Minute)); state(t, ms, 0) != apitypes.AlertFiring {
		t.Fatalf("%+v", ms)
	}
	on := map[string]model.Variable{"online": {Value: json.RawMessage("true"), Type: model.TypeBool, Time: t0.Add(2 * time.Minute)}}
	if ms := e.observe(d, on, nil); state(t, ms, 0) != apitypes.AlertResolved {
		t.Fatalf("%+v", ms)
	}
}

func TestEventRule(t *testing.T) {
	e := testEngine(rule(t, `{"name":"heat","kind":"event","event":"overheat*","level":"warning","for":"5m"}`))
	d := dev("", nil)
	if ms := e.event(d, &model.Event{Name: "overheat.cpu", Level: model.LevelInfo, Time: t0}, t0); len(ms) != 0 {
		t.Fatalf("info matched: %v", ms)
	}
	if ms := e.event(d, &model.Event{Name: "reboot", Level: model.LevelAlert, Time: t0}, t0); len(ms) != 0 {
		t.Fatalf("other name matched: %v", ms)
	}
	if ms := e.event(d, &model.Event{Name: "overheat.cpu", Level: model.LevelAlert, Time: t0}, t0); state(t, ms, 0) != apitypes.AlertFiring {
		t.Fatalf("%+v", ms)
	}
	if ms := e.event(d, &model.Event{Name: "overheat.gpu", Level: model.LevelWarning, Time: t0.Add(4 * time.Minute)}, t0); len(ms) != 1 || ms[0].Type != "" || ms[0].Variables["last_event"].Time != t0.Add(4*time.Minute) {
		t.Fatalf("second event: %+v, want only last_event written on the same alert", ms)
	}
	if ms := e.tick(t0.Add(8 * time.Minute)); len(ms) != 0 {
		t.Fatalf("resolved early: %v", ms)
	}
	if ms := e.tick(t0.Add(9 * time.Minute)); state(t, ms, 0) != apitypes.AlertResolved {
		t.Fatalf("%+v", ms)
	}
}

func TestRateRule(t *testing.T) {
	e := testEngine(rule(t, `{"name":"climb","kind":"rate","var":"temp","op":">","value":1,"window":"10s"}`))
	d := dev("", nil)
	if ms := e.observe(d, num(10, t0), nil); len(ms) != 0 {
		t.Fatalf("one sample: %v", ms)
	}
	if ms := e.observe(d, num(15, t0.Add(10*time.Second)), nil); len(ms) != 0 {
		t.Fatalf("0.5/s: %v", ms)
	}
	if ms := e.observe(d, num(40, t0.Add(20*time.Second)), nil); state(t, ms, 0) != apitypes.AlertFiring {
		t.Fatalf("2.5/s over the window: %+v", ms)
	}
	if ms := e.observe(d, num(41, t0.Add(30*time.Second)), nil); state(t, ms, 0) != apitypes.AlertResolved {
		t.Fatalf("0.1/s: %+v", ms)
	}
}

// Deleting a rule resolves its alerts; a device deleted resolves its own.
func TestRuleAndDeviceGone(t *testing.T) {
	r := rule(t, `{"name":"hot","kind":"threshold","var":"temp","op":">","value":1}`)
	e := testEngine(r)
	e.observe(dev("", nil), num(5, t0), nil)
	_, ms := e.setRules(map[string]*Rule{}, t0.Add(time.Minute))
	if state(t, ms, 0) != apitypes.AlertResolved {
		t.Fatalf("%+v", ms)
	}
	e.setRules(map[string]*Rule{"r1": r}, t0)
	e.observe(dev("", nil), num(5, t0), nil)
	if ms := e.forget("/devices/d1", t0.Add(time.Minute)); state(t, ms, 0) != apitypes.AlertResolved {
		t.Fatalf("%+v", ms)
	}
}

func TestParseRuleRefuses(t *testing.T) {
	for _, s := range []string{
		``, `[]`, `{"name":"x","kind":"threshold","var":"t","op":">"}`,
		`{"name":"x","kind":"threshold","var":"t","op":"=>","value":1}`,
		`{"name":"x","kind":"nope"}`,
		`{"name":"x","kind":"offline","for":"-1s"}`,
		`{"name":"x","kind":"offline","selector":{"path":"/peers/p1"}}`,
		`{"name":"x","kind":"offline","selector":{"path":"/a/../b"}}`,
		`{"name":"x","kind":"offline","labels":{"rule":"x"}}`,
		`{"name":"x","kind":"event","event":"["}`,
		`{"name":"x","kind":"offline","extra":1}`,
		`{"name":"x","kind":"offline"} {}`,
		`{"name":"","kind":"offline"}`,
	} {
		if _, err := ParseRule([]byte(s)); err == nil {
			t.Errorf("accepted %s", s)
		}
	}
}

// Escalation with a fake clock: each step reached while the alert fires
// unacknowledged labels it with the step; an ack stops it; a resolved
// alert escalates no more.
func TestEscalation(t *testing.T) {
	e := testEngine(rule(t, `{"name":"hot","kind":"threshold","var":"temp","op":">","value":80,"for":"1m","escalate":["10m","1h"]}`))
	d := dev("", nil)
	e.observe(d, num(90, t0), nil)
	if ms := e.tick(t0.Add(time.Minute)); len(ms) != 1 || state(t, ms, 0) != apitypes.AlertFiring {
		t.Fatalf("fired: %+v", ms)
	}
	if ms := e.tick(t0.Add(10 * time.Minute)); len(ms) != 0 {
		t.Fatalf("escalated before its step: %+v", ms)
	}
	ms := e.tick(t0.Add(11 * time.Minute))
	if len(ms) != 1 || ms[0].Labels[LabelEscalation] != "1" || stringVar(ms[0].Variables["escalated_at"]) != t0.Add(11*time.Minute).Format(time.RFC3339Nano) {
		t.Fatalf("step 1: %+v", ms)
	}
	if ms := e.tick(t0.Add(12 * time.Minute)); len(ms) != 0 {
		t.Fatalf("step 1 again: %+v", ms)
	}
	e.acked("a1")
	if ms := e.tick(t0.Add(2 * time.Hour)); len(ms) != 0 {
		t.Fatalf("escalated once acknowledged: %+v", ms)
	}
	// A second alert, not acknowledged, jumps to the last step reached.
	e.observe(d, num(10, t0.Add(3*time.Hour)), nil)
	e.observe(d, num(90, t0.Add(3*time.Hour)), nil)
	e.tick(t0.Add(3*time.Hour + time.Minute))
	ms = e.tick(t0.Add(5 * time.Hour))
	if len(ms) != 1 || ms[0].Path != "/alerts/a2" || ms[0].Labels[LabelEscalation] != "2" {
		t.Fatalf("both steps at once: %+v", ms)
	}
	if _, err := ParseRule([]byte(`{"name":"x","kind":"offline","escalate":["1h","10m"]}`)); err == nil {
		t.Fatal("steps out of order accepted")
	}
}
