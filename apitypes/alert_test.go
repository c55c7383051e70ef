package apitypes

import (
	"encoding/json"
	"testing"
	"time"
)

func TestGoldenAlerts(t *testing.T) {
	v := 80.0
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	checkGolden(t, []golden{
		{"rule", &AlertRule{ID: "r1", Name: "hot", Kind: AlertKindThreshold,
			Selector: AlertSelector{Path: "/devices", Type: "device", Labels: map[string]string{"site": "a"}},
			Var:      "temp", Op: ">", Value: &v, For: "30s", Escalate: []string{"15m"}, Severity: "critical",
			Labels: map[string]string{"team": "ops"}, Tenant: "acme", CreatedBy: "ada", Created: at},
			`{"id":"r1","name":"hot","kind":"threshold","selector":{"path":"/devices","type":"device","labels":{"site":"a"}},` +
				`"var":"temp","op":"\u003e","value":80,"for":"30s","escalate":["15m"],"severity":"critical","labels":{"team":"ops"},` +
				`"tenant":"acme","created_by":"ada","created":"2026-12-07T10:00:00Z"}`},
		{"offline rule", &AlertRule{Name: "gone", Kind: AlertKindOffline, For: "5m"},
			`{"name":"gone","kind":"offline","selector":{},"for":"5m"}`},
		{"alert", &Alert{Path: "/peers/p1/alerts/a1", ID: "a1", Tenant: "acme", Rule: "r1", Severity: "critical",
			Device: "/devices/d1", Labels: map[string]string{"alertname": "hot"}, State: AlertFiring,
			Value: json.RawMessage("95"), Since: at, Acked: true, AckedBy: "ada@hq", Escalation: 1},
			`{"path":"/peers/p1/alerts/a1","id":"a1","tenant":"acme","rule":"r1","severity":"critical","device":"/devices/d1",` +
				`"labels":{"alertname":"hot"},"state":"firing","value":95,"since":"2026-12-07T10:00:00Z","acked":true,` +
				`"acked_by":"ada@hq","silenced":false,"escalation":1}`},
		{"silence", &AlertSilence{Until: at}, `{"until":"2026-12-07T10:00:00Z"}`},
	})
}
