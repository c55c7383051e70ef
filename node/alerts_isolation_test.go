package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/client"
)

// userClient makes a user on node n (through admin) and returns a client
// with a token of theirs, and the token's id.
func userClient(t *testing.T, p *probeNode, name, tenant, role string) (*client.Client, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.admin.CreateUser(ctx, client.NewUser{Name: name, Password: "password-" + name, Tenant: tenant,
		Grants: []client.Grant{{Role: role, Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}
	tok, err := p.admin.CreateToken(ctx, client.NewToken{User: name, Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return p.admin.WithToken(tok.Secret), tok.ID
}

func setTemp(t *testing.T, n *Node, p model.Path, v float64) {
	t.Helper()
	b, _ := json.Marshal(v)
	vr, err := model.NewVariable(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.model.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p,
		Variables: map[string]model.Variable{"temp": vr}}); err != nil {
		t.Fatal(err)
	}
}

// Tenants, roles and tokens hold for rules and alerts, at the node that
// owns them and through the links: another tenant's rule or alert
// answers as a missing one, a viewer cannot act, a revoked token is
// refused, a tenant's rule sees only its tenant's devices, a consumer
// granted read cannot act on alerts below it, and the owner checks the
// operator's tenant itself.
func TestAlertsIsolation(t *testing.T) {
	ctx := context.Background()
	hq := startAlertNode(t, "hq", "127.0.0.1:0", nil)
	rep := startAlertNode(t, "rep", "127.0.0.1:0", nil)
	p1 := startAlertNode(t, "p1", "", nil)
	a1 := enrollSim(t, p1.n, "acme", "a1", "s", "linux")
	g1 := enrollSim(t, p1.n, "globex", "g1", "s", "linux")
	joinNode(t, &p1.fedNode, &hq.fedNode, "p1", "operate", "/devices")
	joinNode(t, &p1.fedNode, &rep.fedNode, "p1", "read", "/devices")

	acmeP1, _ := userClient(t, p1, "acme-op", "acme", "operator")
	acmeViewP1, _ := userClient(t, p1, "acme-view", "acme", "viewer")
	globexP1, _ := userClient(t, p1, "globex-op", "globex", "operator")

	// Rules: a tenant's rule is its tenant's.
	hot := client.AlertRule{Name: "acme-hot", Kind: "threshold", Var: "temp", Op: ">", Value: ptr(50.0)}
	if _, err := acmeViewP1.CreateAlertRule(ctx, hot); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer made a rule: %v", err)
	}
	other := hot
	other.Tenant = "globex"
	if _, err := acmeP1.CreateAlertRule(ctx, other); apiStatus(err) != http.StatusBadRequest {
		t.Fatalf("a rule for another tenant: %v", err)
	}
	ar, err := acmeP1.CreateAlertRule(ctx, hot)
	if err != nil || ar.Tenant != "acme" || ar.CreatedBy != "acme-op" {
		t.Fatalf("acme's rule: %+v %v", ar, err)
	}
	if rs, err := globexP1.AlertRules(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("globex lists %+v %v", rs, err)
	}
	if _, err := globexP1.GetAlertRule(ctx, ar.ID); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("globex reads acme's rule: %v", err)
	}
	if err := globexP1.DeleteAlertRule(ctx, ar.ID); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("globex deletes acme's rule: %v", err)
	}
	if err := acmeViewP1.DeleteAlertRule(ctx, ar.ID); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer deletes a rule: %v", err)
	}
	if rs, err := acmeViewP1.AlertRules(ctx); err != nil || len(rs) != 1 {
		t.Fatalf("acme's viewer lists %+v %v", rs, err)
	}
	// Both devices run hot: acme's rule alerts acme's device only.
	setTemp(t, p1.n, a1.e.Path, 70)
	setTemp(t, p1.n, g1.e.Path, 70)
	acmeAlert := waitAlert(t, p1.admin, string(a1.e.Path), "firing")
	// A system rule (of every tenant) alerts globex's device too.
	sys, err := p1.admin.CreateAlertRule(ctx, client.AlertRule{Name: "any-hot", Kind: "threshold", Var: "temp", Op: ">", Value: ptr(60.0)})
	if err != nil {
		t.Fatal(err)
	}
	globexAlert := waitAlert(t, p1.admin, string(g1.e.Path), "firing")
	if globexAlert.Rule != sys.ID || globexAlert.Tenant != "globex" {
		t.Fatalf("globex's alert: %+v", globexAlert)
	}
	tstest.WaitForErr(t, alertWait, "both rules' alerts of acme's device", func() (bool, error) {
		p, err := p1.admin.Alerts(ctx, client.AlertQuery{State: "firing"})
		return err == nil && len(p.Alerts) == 3, err
	})

	// At HQ.
	acmeHQ, acmeTok := userClient(t, hq, "acme-op", "acme", "operator")
	acmeViewHQ, _ := userClient(t, hq, "acme-view", "acme", "viewer")
	globexHQ, _ := userClient(t, hq, "globex-op", "globex", "operator")
	mirrored := "/peers/p1" + acmeAlert.Path
	tstest.WaitForErr(t, alertWait, "the alerts at hq", func() (bool, error) {
		p, err := hq.admin.Alerts(ctx, client.AlertQuery{Path: "/peers/p1", State: "firing"})
		return err == nil && len(p.Alerts) == 3, err
	})
	if p, err := globexHQ.Alerts(ctx, client.AlertQuery{}); err != nil || len(p.Alerts) != 1 || p.Alerts[0].Tenant != "globex" {
		t.Fatalf("globex lists at hq: %+v %v", p, err)
	}
	if _, err := globexHQ.AckAlert(ctx, mirrored); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("globex acks acme's alert: %v", err)
	}
	if _, err := globexP1.AckAlert(ctx, acmeAlert.Path); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("globex acks acme's alert at p1: %v", err)
	}
	if _, err := acmeViewHQ.AckAlert(ctx, mirrored); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer acks: %v", err)
	}
	if _, err := acmeViewHQ.SilenceAlert(ctx, mirrored, time.Now().Add(time.Hour)); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("a viewer silences: %v", err)
	}
	// The owner checks the tenant itself: a request over the link for
	// another tenant's operator finds nothing.
	body := []byte(`{"action":"ack"}`)
	if _, err := hq.n.Federation().Alert(ctx, federation.Identity{User: "mallory", Tenant: "globex"}, model.Path(mirrored), body); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a globex identity over the link: %v", err)
	}
	// A consumer granted read cannot act on alerts below it.
	tstest.WaitForErr(t, alertWait, "the alert at rep", func() (bool, error) {
		_, err := rep.admin.GetContext(ctx, mirrored)
		return err == nil, err
	})
	if _, err := rep.admin.AckAlert(ctx, mirrored); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("ack through a read grant: %v", err)
	}
	sil, err := acmeHQ.SilenceAlert(ctx, mirrored, time.Now().Add(time.Hour))
	if err != nil || !sil.Silenced || sil.Path != mirrored {
		t.Fatalf("silence from hq: %+v %v", sil, err)
	}
	ack, err := acmeHQ.AckAlert(ctx, mirrored)
	if err != nil || !ack.Acked || ack.AckedBy != "acme-op@hq" {
		t.Fatalf("ack from hq: %+v %v", ack, err)
	}
	// A revoked token is refused.
	if err := hq.admin.RevokeToken(ctx, acmeTok); err != nil {
		t.Fatal(err)
	}
	if _, err := acmeHQ.AckAlert(ctx, mirrored); apiStatus(err) != http.StatusUnauthorized {
		t.Fatalf("a revoked token: %v", err)
	}
	// A mirror cannot reach this node's own alerts: HQ has none of its
	// own, only the provider's under its mount.
	if p, err := hq.admin.Alerts(ctx, client.AlertQuery{Path: "/alerts"}); err != nil || len(p.Alerts) != 0 {
		t.Fatalf("hq's own alerts: %+v %v", p, err)
	}
	// Deleting a rule resolves its alerts.
	if err := acmeP1.DeleteAlertRule(ctx, ar.ID); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, alertWait, "acme's alert resolved", func() (bool, error) {
		p, err := p1.admin.Alerts(ctx, client.AlertQuery{State: "resolved"})
		return err == nil && len(p.Alerts) == 1 && p.Alerts[0].Rule == ar.ID, err
	})
}
