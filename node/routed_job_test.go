package node

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/jobs"
)

// threeTiers builds hq ← eu ← plant7 (all operate), plant7 publishing
// /devices with an enrolled device (tenant acme, functions ping and
// reboot) whose path it returns, and waits for
// the device at hq.
func threeTiers(t *testing.T) (hq, eu, p7 *fedNode, d1 model.Path) {
	t.Helper()
	ctx := context.Background()
	hq = startFedNode(t, "hq", "127.0.0.1:0")
	eu = startFedNode(t, "eu", "127.0.0.1:0")
	p7 = startFedNode(t, "plant7", "")
	d1 = enrollDevice(t, p7.n, "acme", "hw-1", "ping", "reboot")
	joinNode(t, eu, hq, "eu", "operate")
	joinNode(t, p7, eu, "plant7", "operate", "/devices")
	tstest.WaitForErr(t, 20*time.Second, "plant7's device at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, "/peers/eu/peers/plant7"+string(d1))
		return err == nil, err
	})
	return hq, eu, p7, d1
}

// A job owned two tiers down reads at hq exactly as its owner shows it,
// with the path as seen from hq.
func TestRoutedJobReadIsTheWholeJob(t *testing.T) {
	ctx := context.Background()
	hq, _, p7, d1 := threeTiers(t)
	path := "/peers/eu/peers/plant7" + string(d1)
	j, status, err := hq.admin.Call(ctx, path, "reboot", client.Call{Args: json.RawMessage(`{"force":true}`)})
	if err != nil || status != http.StatusAccepted || j.Node != "/peers/eu/peers/plant7" {
		t.Fatalf("call through two links: %d %+v %v", status, j, err)
	}
	if err := p7.n.jobs.Report(ctx, d1.Name(), j.ID, jobs.Failed, nil, "disk busy"); err != nil {
		t.Fatal(err)
	}
	own, err := p7.admin.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hq.admin.GetJobOn(ctx, j.Node, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *own
	want.Path = path
	want.Node = "/peers/eu/peers/plant7"
	want.Job = own.ID
	if g, w := mustJSON(t, got), mustJSON(t, &want); g != w {
		t.Fatalf("job at hq:\n got %s\nwant %s", g, w)
	}
	if got.Function != "reboot" || got.Device != d1.Name() || got.CreatedBy != "admin@eu" || got.Created.IsZero() ||
		len(got.History) != 2 || got.State != client.JobFailed || got.Error != "disk busy" {
		t.Fatalf("job at hq: %+v", got)
	}
	// Another tenant's operator at hq does not see it.
	bob := tenantClient(t, hq, "bob", "globex", "operator")
	if _, err := bob.GetJobOn(ctx, j.Node, j.ID); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("another tenant's read: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tenantClient creates user name of tenant (system when tenant is "")
// with role on / at f, and returns a client with a token of it.
func tenantClient(t *testing.T, f *fedNode, name, tenant string, role auth.Role) *client.Client {
	t.Helper()
	ctx := context.Background()
	sys := &auth.Principal{User: "admin", System: true}
	if _, err := f.n.auth.CreateUser(ctx, sys, auth.UserSpec{Name: name, Password: "password-" + name, Tenant: tenant,
		System: tenant == "", Grants: []auth.Grant{{Role: role, Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.n.auth.CreateToken(ctx, sys, name, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f.admin.WithToken(tok)
}
