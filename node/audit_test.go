package node

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/jobs"
)

// newestAudit returns the newest audit record of op at f, read by its
// system administrator.
func newestAudit(t *testing.T, f *fedNode, op string) (client.AuditRecord, bool) {
	t.Helper()
	recs, err := f.admin.Audit(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Op == op {
			return r, true
		}
	}
	return client.AuditRecord{}, false
}

// Every state-changing operator action made on a node's own API is
// audited, through the real HTTPS API, with who, what and the outcome —
// refusals included.
func TestAuditEveryAction(t *testing.T) {
	ctx := context.Background()
	f := startFedNode(t, "hq", "127.0.0.1:0")
	d1 := string(enrollDevice(t, f.n, "acme", "hw-1", "reboot"))
	admin := f.admin
	ada := tenantClient(t, f, "ada", "acme", auth.RoleAdmin)
	vic := tenantClient(t, f, "vic", "acme", auth.RoleViewer)

	var tokenID, enrollID, jobID string
	cases := []struct {
		name    string
		do      func() error
		user    string
		op      string
		path    string
		target  string // prefix
		outcome string
	}{
		{"put", func() error {
			_, _, err := admin.PutContext(ctx, "/sites/s1", client.ContextUpdate{Type: "folder", Tenant: "acme"})
			return err
		}, "admin", "context.put", "/sites/s1", "", "ok"},
		{"put refused", func() error {
			_, _, err := vic.PutContext(ctx, "/sites/s2", client.ContextUpdate{Type: "folder"})
			return err
		}, "vic", "context.put", "/sites/s2", "", "forbidden"},
		{"put invalid", func() error {
			_, _, err := admin.PutContext(ctx, "/sites/s3", client.ContextUpdate{Type: "folder", Tenant: "Not A Tenant"})
			return err
		}, "admin", "context.put", "/sites/s3", "", "invalid"},
		{"event", func() error {
			_, err := ada.PostEvent(ctx, "/sites/s1", client.NewEvent{Level: "info", Name: "note"})
			return err
		}, "ada", "event.post", "/sites/s1", "", "ok"},
		{"event invalid", func() error {
			_, err := ada.PostEvent(ctx, "/sites/s1", client.NewEvent{Level: "loud", Name: "note"})
			return err
		}, "ada", "event.post", "/sites/s1", "", "invalid"},
		{"delete", func() error { return ada.DeleteContext(ctx, "/sites/s1") }, "ada", "context.delete", "/sites/s1", "", "ok"},
		{"delete missing", func() error { return ada.DeleteContext(ctx, "/sites/none") }, "ada", "context.delete", "/sites/none", "", "not_found"},
		{"user create", func() error {
			_, err := ada.CreateUser(ctx, client.NewUser{Name: "carl", Password: "password-carl"})
			return err
		}, "ada", "user.create", "", "carl@acme", "ok"},
		{"user create refused", func() error {
			_, err := vic.CreateUser(ctx, client.NewUser{Name: "dan", Password: "password-dan"})
			return err
		}, "vic", "user.create", "", "dan", "forbidden"},
		{"user update", func() error {
			_, err := ada.UpdateUser(ctx, "carl@acme", client.UserUpdate{Grants: []client.Grant{{Role: "operator", Subtree: "/"}}})
			return err
		}, "ada", "user.update", "", "carl@acme", "ok"},
		{"user password", func() error {
			_, err := ada.UpdateUser(ctx, "carl@acme", client.UserUpdate{Password: "password-carl-2"})
			return err
		}, "ada", "user.password", "", "carl@acme", "ok"},
		{"token create", func() error {
			tok, err := ada.CreateToken(ctx, client.NewToken{User: "carl@acme", Name: "ci"})
			if err == nil {
				tokenID = tok.ID
			}
			return err
		}, "ada", "token.create", "", "carl@acme/", "ok"},
		{"token revoke", func() error { return ada.RevokeToken(ctx, tokenID) }, "ada", "token.revoke", "", "", "ok"},
		{"token revoke missing", func() error { return ada.RevokeToken(ctx, "nosuchtoken") }, "ada", "token.revoke", "", "nosuchtoken", "not_found"},
		{"user delete", func() error { return ada.DeleteUser(ctx, "carl@acme") }, "ada", "user.delete", "", "carl@acme", "ok"},
		{"enrollment token create", func() error {
			et, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "line1", Tenant: "acme"})
			if err == nil {
				enrollID = et.ID
			}
			return err
		}, "admin", "enrollment_token.create", "", "", "ok"},
		{"enrollment token revoke", func() error { return admin.RevokeEnrollToken(ctx, enrollID) }, "admin", "enrollment_token.revoke", "", "", "ok"},
		{"device revoke", func() error {
			_, err := admin.RevokeDevice(ctx, "nodevice")
			return err
		}, "admin", "device.revoke", "", "nodevice", "not_found"},
		{"call", func() error {
			j, _, err := ada.Call(ctx, d1, "reboot", client.Call{})
			jobID = j.ID
			return err
		}, "ada", "call", d1, "", "pending"},
		{"call refused", func() error {
			_, _, err := vic.Call(ctx, d1, "reboot", client.Call{})
			return err
		}, "vic", "call", d1, "", "forbidden"},
		{"job cancel", func() error {
			_, err := ada.CancelJob(ctx, jobID)
			return err
		}, "ada", "job.cancel", "", "", "ok"},
		{"job cancel again", func() error {
			_, err := ada.CancelJob(ctx, jobID)
			return err
		}, "ada", "job.cancel", "", "", "conflict"},
		{"peer token", func() error {
			_, err := admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "eu", Grant: "operate"})
			return err
		}, "admin", "peer_token.create", "", "eu", "ok"},
		{"peer token refused", func() error {
			_, err := ada.CreatePeerToken(ctx, client.NewPeerToken{Peer: "eu", Grant: "operate"})
			return err
		}, "ada", "peer_token.create", "", "", "forbidden"},
		{"peer revoke", func() error { return admin.RevokePeer(ctx, "nopeer") }, "admin", "peer.revoke", "", "nopeer", "not_found"},
		{"federation reload", func() error {
			_, err := admin.ReloadFederation(ctx)
			return err
		}, "admin", "federation.reload", "", "", "ok"},
		{"federation verify", func() error {
			_, err := admin.VerifyFederation(ctx)
			return err
		}, "admin", "federation.verify", "", "", "ok"},
		{"login", func() error {
			_, err := admin.Login(ctx, "ada", "password-ada", time.Hour)
			return err
		}, "ada", "login", "", "", "ok"},
	}
	for _, c := range cases {
		err := c.do()
		if (err == nil) != (c.outcome == "ok" || c.outcome == "pending") {
			t.Fatalf("%s: %v", c.name, err)
		}
		r, ok := newestAudit(t, f, c.op)
		if !ok {
			t.Fatalf("%s: no %s record", c.name, c.op)
		}
		if r.User != c.user || string(r.Path) != c.path || !strings.HasPrefix(r.Target, c.target) || r.Outcome != c.outcome ||
			r.Consumer != "" || len(r.Via) != 0 || r.Time.IsZero() || r.RequestID == "" || (c.outcome != "ok" && c.outcome != "pending" && r.Error == "") {
			t.Fatalf("%s: audit record %+v, want user %s path %q target %q… outcome %s", c.name, r, c.user, c.path, c.target, c.outcome)
		}
		if c.user == "ada" && r.Tenant != "acme" {
			t.Fatalf("%s: tenant %q", c.name, r.Tenant)
		}
	}
	// The cancelled job's call ended with the job's outcome.
	recs, _ := admin.Audit(ctx, 100)
	for _, r := range recs {
		if r.Op == "call" && r.Job == jobID && r.Outcome != "cancelled" {
			t.Fatalf("the cancelled job's call: %+v", r)
		}
	}
}

// A call's audit record ends with its job's real outcome, not "ok".
func TestAuditCallEndsWithJobOutcome(t *testing.T) {
	ctx := context.Background()
	f := startFedNode(t, "plant7", "")
	d1 := enrollDevice(t, f.n, "acme", "hw-1", "reboot")
	j, status, err := f.admin.Call(ctx, string(d1), "reboot", client.Call{})
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("call: %d %v", status, err)
	}
	if r, ok := newestAudit(t, f, "call"); !ok || r.Job != j.ID || r.Outcome != "pending" {
		t.Fatalf("the call's record: %+v", r)
	}
	if err := f.n.jobs.Report(ctx, d1.Name(), j.ID, jobs.Failed, nil, "disk busy"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, tstest.DefaultTimeout, "the call's record to say failed", func() (bool, error) {
		r, ok := newestAudit(t, f, "call")
		if !ok || r.Job != j.ID {
			return false, errors.New("no record")
		}
		return r.Outcome == "failed" && r.Error == "disk busy" && !r.Updated.IsZero(), nil
	})
	recs, _ := f.admin.Audit(ctx, 100)
	n := 0
	for _, r := range recs {
		if r.Job == j.ID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d records of the call, want one", n)
	}
}

// A call routed through two tiers is audited at each: at hq as the
// operator's own action, at eu as forwarded for hq, at plant7 (the owner)
// with the chain hq>eu, and plant7's record ends with the job's outcome.
func TestAuditViaTwoHops(t *testing.T) {
	ctx := context.Background()
	hq, eu, p7, d1 := threeTiers(t)
	path := "/peers/eu/peers/plant7" + string(d1)
	j, _, err := hq.admin.Call(ctx, path, "reboot", client.Call{})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := newestAudit(t, hq, "call")
	if !ok || r.Path != path || r.User != "admin" || r.Consumer != "" || len(r.Via) != 0 || r.Outcome != "forwarded" ||
		r.Job != j.ID || r.Node != "/peers/eu/peers/plant7" {
		t.Fatalf("at hq: %+v", r)
	}
	r, ok = newestAudit(t, eu, "call")
	if !ok || string(r.Path) != "/peers/plant7"+string(d1) || r.User != "admin" || r.Consumer != "hq" || strings.Join(r.Via, ">") != "hq" ||
		r.Outcome != "forwarded" {
		t.Fatalf("at eu: %+v", r)
	}
	r, ok = newestAudit(t, p7, "call")
	if !ok || string(r.Path) != string(d1) || r.User != "admin" || r.Consumer != "eu" || strings.Join(r.Via, ">") != "hq>eu" ||
		r.Outcome != "pending" || r.Job != j.ID {
		t.Fatalf("at plant7: %+v", r)
	}
	if err := p7.n.jobs.Report(ctx, d1.Name(), j.ID, jobs.Failed, nil, "no power"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "plant7's record to say failed", func() bool {
		r, ok := newestAudit(t, p7, "call")
		return ok && r.Outcome == "failed" && strings.Join(r.Via, ">") == "hq>eu"
	})
	// A refused call through two hops is audited with its outcome too.
	bob := tenantClient(t, hq, "bob", "globex", auth.RoleOperator)
	if _, _, err := bob.Call(ctx, path, "reboot", client.Call{}); apiStatus(err) != http.StatusNotFound {
		t.Fatalf("another tenant's call: %v", err)
	}
	if r, _ := newestAudit(t, hq, "call"); r.User != "bob" || r.Outcome != "not_found" {
		t.Fatalf("the refused call at hq: %+v", r)
	}
	if r, _ := newestAudit(t, p7, "call"); r.User != "bob" || r.Tenant != "globex" || r.Outcome != "not_found" ||
		strings.Join(r.Via, ">") != "hq>eu" {
		t.Fatalf("the refused call at plant7: %+v", r)
	}
}
