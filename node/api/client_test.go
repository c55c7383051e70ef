package api

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/client"
)

// TestClientCompatibility drives the API with node/client, which was
// written against docs/api.md: every shape must decode as it expects.
func TestClientCompatibility(t *testing.T) {
	e := newEnv(t)
	admin := tlsClient(t, e.api.Handler(), e.admin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if err := admin.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateUser(ctx, client.NewUser{Name: "alice", Password: "alice-password", Tenant: "acme",
		Grants: []client.Grant{{Role: "operator", Subtree: "/"}}}); err != nil {
		t.Fatal(err)
	}
	s, err := admin.Login(ctx, "alice", "alice-password", time.Hour)
	if err != nil || s.User.Name != "alice" || s.Token == "" {
		t.Fatalf("login: %+v, %v", s, err)
	}
	if _, err := admin.Login(ctx, "alice", "wrong-password", 0); !client.IsCode(err, client.CodeUnauthorized) {
		t.Fatalf("bad login: %v", err)
	}
	alice := admin.WithToken(s.Token)
	me, err := alice.Whoami(ctx)
	if err != nil || me.Name != "alice" || me.TokenID != s.ID || me.Tenant != "acme" {
		t.Fatalf("whoami: %+v, %v", me, err)
	}

	stream, err := alice.Changes(ctx, "/devices", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()

	e.sharedFolders("/devices") // a tenant user creates under a folder it sees
	x, created, err := alice.PutContext(ctx, "devices/pump-1", client.ContextUpdate{Type: "device",
		Labels: map[string]string{"site": "north"}, Variables: map[string]json.RawMessage{"temp": json.RawMessage("21.5")}})
	if err != nil || !created || x.Tenant != "acme" || string(x.Variables["temp"].Value) != "21.5" || x.Variables["temp"].Type != "number" {
		t.Fatalf("put: %+v, %v, %v", x, created, err)
	}
	if _, created, err = alice.PutContext(ctx, "/devices/pump-1", client.ContextUpdate{Labels: map[string]string{"site": ""}}); err != nil || created {
		t.Fatalf("update: %v, %v", created, err)
	}
	x, err = alice.GetContext(ctx, "/devices/pump-1")
	if err != nil || len(x.Labels) != 0 || x.Version == 0 {
		t.Fatalf("get: %+v, %v", x, err)
	}
	if _, err := alice.GetContext(ctx, "/devices/../devices/pump-1"); !client.IsCode(err, client.CodeInvalid) {
		t.Fatalf("dot-dot path: %v", err)
	}
	tree, err := alice.Tree(ctx, "/devices", client.TreeOptions{Depth: 2, Limit: 10})
	if err != nil || len(tree.Children) != 1 || tree.Children[0].Name != "pump-1" || tree.Children[0].Tenant != "acme" {
		t.Fatalf("tree: %+v, %v", tree, err)
	}
	ev, err := alice.PostEvent(ctx, "/devices/pump-1", client.NewEvent{Level: "alert", Name: "hot", Payload: json.RawMessage(`{"t":99}`)})
	if err != nil || ev.Seq == 0 || ev.Level != "alert" {
		t.Fatalf("post event: %+v, %v", ev, err)
	}
	page, err := alice.Events(ctx, "/devices/pump-1", client.EventQuery{Limit: 1, Level: "alert", Since: time.Now().Add(-time.Hour)})
	if err != nil || len(page.Events) != 1 || page.Events[0].Seq != ev.Seq || page.Next != ev.Seq {
		t.Fatalf("events: %+v, %v", page, err)
	}

	// The stream saw the folder, the put, the update and the event.
	var ops []string
	for len(ops) < 4 {
		ch, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, string(ch.Op)+" "+ch.Path)
	}
	want := []string{"put /devices", "put /devices/pump-1", "put /devices/pump-1", "event /devices/pump-1"}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("stream: %v, want %v", ops, want)
		}
	}
	if stream.LastSeq() != ev.Seq {
		t.Fatalf("stream cursor %d, want %d", stream.LastSeq(), ev.Seq)
	}

	tok, err := alice.CreateToken(ctx, client.NewToken{Name: "ci", TTL: time.Hour})
	if err != nil || tok.Secret == "" || tok.User != "alice" {
		t.Fatalf("create token: %+v, %v", tok, err)
	}
	toks, err := alice.Tokens(ctx, "")
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens: %+v, %v", toks, err)
	}
	if err := alice.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WithToken(tok.Secret).Whoami(ctx); !client.IsCode(err, client.CodeUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	us, err := admin.Users(ctx)
	if err != nil || len(us) != 2 {
		t.Fatalf("users: %+v, %v", us, err)
	}
	no := false
	if u, err := admin.UpdateUser(ctx, "alice", client.UserUpdate{Grants: []client.Grant{}, Disabled: &no}); err != nil ||
		len(u.Grants) != 1 || u.Grants[0].Role != string(auth.RoleViewer) {
		t.Fatalf("update user: %+v, %v", u, err)
	}
	if u, err := admin.GetUser(ctx, "alice"); err != nil || u.Name != "alice" {
		t.Fatalf("get user: %+v, %v", u, err)
	}
	if err := alice.DeleteContext(ctx, "/devices/pump-1"); !client.IsCode(err, client.CodeForbidden) {
		t.Fatalf("viewer deleted: %v", err)
	}
	if err := admin.DeleteContext(ctx, "/devices"); !client.IsCode(err, client.CodeConflict) {
		t.Fatalf("delete with children: %v", err)
	}
	if err := admin.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Whoami(ctx); !client.IsCode(err, client.CodeUnauthorized) {
		t.Fatalf("deleted user's token: %v", err)
	}
}

// tlsClient serves h over TLS on a loopback port for the test and returns a
// node/client for it with token.
func tlsClient(t *testing.T, h http.Handler, token string) *client.Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := client.New(srv.URL, token, ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}
