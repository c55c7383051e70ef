package api

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

func TestEvents(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/pump-1", c.alice, `{"type":"device"}`), 201, "")
	levels := []string{"info", "warning", "alert", "info", "alert"}
	var seqs []uint64
	for i, l := range levels {
		r := e.do("POST", "/api/v1/events/devices/pump-1", c.alice, fmt.Sprintf(`{"level":%q,"name":"e%d","payload":{ "i" : %d }}`, l, i, i))
		e.want(r, 201, "")
		var ev model.Event
		r.json(t, &ev)
		if ev.Seq == 0 || ev.Path != "/devices/pump-1" || ev.Level != model.Level(l) || ev.Tenant != "acme" ||
			string(ev.Payload) != fmt.Sprintf(`{"i":%d}`, i) || ev.Time.IsZero() {
			t.Fatalf("event %+v", ev)
		}
		seqs = append(seqs, ev.Seq)
	}
	page := func(q string) eventPage {
		t.Helper()
		r := e.do("GET", "/api/v1/events/devices/pump-1"+q, c.vera, nil)
		e.want(r, 200, "")
		var p eventPage
		r.json(t, &p)
		return p
	}
	p := page("")
	if len(p.Events) != 5 || p.Events[0].Seq != seqs[4] || p.Events[4].Seq != seqs[0] || p.Next != 0 {
		t.Fatalf("all: %+v", p)
	}
	p = page("?limit=2")
	if len(p.Events) != 2 || p.Events[0].Name != "e4" || p.Next != seqs[3] {
		t.Fatalf("page 1: %+v", p)
	}
	p = page(fmt.Sprintf("?limit=2&before=%d", p.Next))
	if len(p.Events) != 2 || p.Events[0].Name != "e2" || p.Events[1].Name != "e1" {
		t.Fatalf("page 2: %+v", p)
	}
	p = page("?level=alert")
	if len(p.Events) != 2 || p.Events[0].Name != "e4" || p.Events[1].Name != "e2" {
		t.Fatalf("alerts: %+v", p)
	}
	p = page("?since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)))
	if len(p.Events) != 0 || p.Events == nil {
		t.Fatalf("future: %+v", p)
	}

	for _, q := range []string{"?limit=0", "?limit=10001", "?before=-1", "?since=yesterday", "?level=fatal"} {
		e.want(e.do("GET", "/api/v1/events/devices/pump-1"+q, c.alice, nil), 400, codeInvalid)
	}
	post := func(body string) resp { return e.do("POST", "/api/v1/events/devices/pump-1", c.alice, body) }
	for _, body := range []string{`{}`, `{"level":"fatal"}`, `{"level":"info","extra":1}`, `{"level":"info","payload":}`,
		`{"level":"info","name":"a\u0001"}`, `{"level":"info","name":"` + strings.Repeat("n", 129) + `"}`,
		`{"level":"info","payload":"` + strings.Repeat("p", model.MaxPayloadSize) + `"}`} {
		e.want(post(body), 400, codeInvalid)
	}
	e.want(post(`{"level":"info","payload":null}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/nothing", c.alice, `{"level":"info"}`), 404, codeNotFound)
	e.want(e.do("GET", "/api/v1/events/devices/nothing", c.alice, nil), 404, codeNotFound)
}

// TestEventsKeepTheirTenant moves a context to another tenant: events
// recorded before stay hidden from the new tenant.
func TestEventsKeepTheirTenant(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	e.want(e.do("PUT", "/api/v1/contexts/devices/x", c.alice, `{}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/x", c.alice, `{"level":"alert","name":"acme-secret"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/x", e.admin, `{"tenant":"globex"}`), 200, "")
	e.want(e.do("POST", "/api/v1/events/devices/x", c.bob, `{"level":"info","name":"globex"}`), 201, "")
	r := e.do("GET", "/api/v1/events/devices/x", c.bob, nil)
	e.want(r, 200, "")
	if strings.Contains(string(r.body), "acme-secret") || !strings.Contains(string(r.body), `"globex"`) {
		t.Fatalf("bob's events: %s", r.body)
	}
}
