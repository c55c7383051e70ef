package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/store/pgtest"
)

func TestNodeEndToEnd(t *testing.T) {
	n := initNode(t, "hq")
	n.start()
	ctx := context.Background()
	admin := n.admin()

	who, err := admin.Whoami(ctx)
	if err != nil || who.Name != "admin" || !who.System {
		t.Fatalf("whoami = %+v, %v", who, err)
	}

	// Two tenants, each with an operator who logs in with a password.
	for _, u := range []client.NewUser{
		{Name: "alice", Password: "alice-password", Tenant: "acme", Grants: []client.Grant{{Role: "operator", Subtree: "/"}}},
		{Name: "bob", Password: "bob-password!", Tenant: "globex", Grants: []client.Grant{{Role: "operator", Subtree: "/"}}},
		{Name: "vera", Password: "vera-password", Tenant: "acme", Grants: []client.Grant{{Role: "viewer", Subtree: "/plant"}}},
	} {
		if _, err := admin.CreateUser(ctx, u); err != nil {
			t.Fatalf("create user %s: %v", u.Name, err)
		}
	}
	login := func(user, pass string) *client.Client {
		s, err := n.client("").Login(ctx, user, pass, 0)
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		return n.client(s.Token)
	}
	alice := login("alice", "alice-password")
	bob := login("bob", "bob-password!")
	vera := login("vera", "vera-password")
	if _, err := n.client("").Login(ctx, "alice", "wrong-password", 0); !client.IsCode(err, "unauthorized") {
		t.Fatalf("wrong password: %v", err)
	}

	// An API token for alice, created and revoked.
	tok, err := alice.CreateToken(ctx, client.NewToken{Name: "ci", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ci := n.client(tok.Secret)
	if _, err := ci.Whoami(ctx); err != nil {
		t.Fatalf("new token: %v", err)
	}

	// Tenant isolation over the API, under a shared folder the system
	// administrator made (tenant users create only under a parent they see).
	if _, _, err := admin.PutContext(ctx, "/plant", client.ContextUpdate{Type: "folder"}); err != nil {
		t.Fatal(err)
	}
	if _, created, err := alice.PutContext(ctx, "/plant/pump-1", client.ContextUpdate{Type: "pump", Variables: map[string]json.RawMessage{"temp": json.RawMessage("20.5")}}); err != nil || !created {
		t.Fatalf("alice put: created=%v err=%v", created, err)
	}
	if _, _, err := bob.PutContext(ctx, "/plant/press-1", client.ContextUpdate{Type: "pump"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GetContext(ctx, "/plant/pump-1"); !client.IsCode(err, "not_found") {
		t.Fatalf("bob reads alice's device: %v", err)
	}
	if _, _, err := bob.PutContext(ctx, "/plant/pump-1", client.ContextUpdate{Variables: map[string]json.RawMessage{"temp": json.RawMessage("99")}}); err == nil {
		t.Fatal("bob overwrote alice's device")
	}
	if err := bob.DeleteContext(ctx, "/plant/pump-1"); err == nil {
		t.Fatal("bob deleted alice's device")
	}
	if _, err := bob.Events(ctx, "/plant/pump-1", client.EventQuery{}); err == nil {
		t.Fatal("bob read alice's events")
	}
	tree, err := bob.Tree(ctx, "/plant", client.TreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range tree.Children {
		if c.Name == "pump-1" {
			t.Fatal("bob's tree shows alice's device")
		}
	}
	if _, err := bob.Users(ctx); err == nil {
		t.Fatal("an operator listed users")
	}
	if c, err := vera.GetContext(ctx, "/plant/pump-1"); err != nil || string(c.Variables["temp"].Value) != "20.5" {
		t.Fatalf("vera reads her tenant's device: %+v, %v", c, err)
	}
	if _, _, err := vera.PutContext(ctx, "/plant/pump-1", client.ContextUpdate{Type: "pump"}); !client.IsCode(err, "forbidden") {
		t.Fatalf("viewer wrote: %v", err)
	}
	if err := alice.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.Whoami(ctx); !client.IsCode(err, "unauthorized") {
		t.Fatalf("revoked token still works: %v", err)
	}

	// The command line client reads the config beside it.
	out, err := n.ctl("get", "/plant/press-1")
	if err != nil || !strings.Contains(out, "press-1") {
		t.Fatalf("ctl get: %q, %v", out, err)
	}

	// Concurrent writes; kill -9 while they run; every acknowledged write
	// must be there after the restart.
	killMidWrites(t, n, func() *client.Client { return login("alice", "alice-password") })

	// And a clean stop on SIGTERM.
	n.stop()
}

// The same node on PostgreSQL: init writes the store, serve migrates the
// schema and bootstraps the admin in the database, and kill -9 mid-writes
// loses no acknowledged write (durable means committed on the primary).
func TestNodeOnPostgres(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t) // before start: the node is killed before the database is dropped
	n := initNode(t, "hq", "--store", "postgres", "--dsn", dsn)
	n.start()
	ctx := context.Background()
	if who, err := n.admin().Whoami(ctx); err != nil || who.Name != "admin" {
		t.Fatalf("whoami = %+v, %v", who, err)
	}
	if _, _, err := n.admin().PutContext(ctx, "/plant/pump-1", client.ContextUpdate{Type: "pump"}); err != nil {
		t.Fatal(err)
	}
	// A clean restart finds the database already migrated. (Output is
	// read once its process has exited: the buffer is written until then.)
	first := n.p
	n.stop()
	if out := first.out.String(); !strings.Contains(out, "applied schema migration") || !strings.Contains(out, "opened postgres store") {
		t.Errorf("first start did not log the migration and the store:\n%s", out)
	} else if strings.Contains(out, dsn) {
		t.Errorf("the log holds the dsn:\n%s", out)
	}
	n.start()
	second := n.p
	if _, err := n.admin().GetContext(ctx, "/plant/pump-1"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	killMidWrites(t, n, n.admin)
	if out := second.out.String(); strings.Contains(out, "applied schema migration") {
		t.Errorf("the restart migrated again:\n%s", out)
	}
	n.stop()
}

// killMidWrites runs concurrent writers through the API, kill -9s the node
// while they run, restarts it and checks that every write acknowledged
// before the kill is there. writer returns a client that may write under
// /plant; it is called once before the kill and once after the restart.
func killMidWrites(t *testing.T, n *nodeDir, writer func() *client.Client) {
	t.Helper()
	ctx := context.Background()
	c := writer()
	var mu sync.Mutex
	acked := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				path := fmt.Sprintf("/plant/w%d-%d", w, i)
				_, _, err := c.PutContext(ctx, path, client.ContextUpdate{Type: "pump", Variables: map[string]json.RawMessage{"i": json.RawMessage(fmt.Sprint(i))}})
				if err != nil {
					return // the node is gone
				}
				mu.Lock()
				acked[path] = i
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		k := len(acked)
		mu.Unlock()
		if k >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	n.kill()
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}
	n.start()
	c = writer()
	for path, i := range acked {
		got, err := c.GetContext(ctx, path)
		if err != nil {
			t.Fatalf("acknowledged write %s lost after kill -9: %v", path, err)
		}
		if string(got.Variables["i"].Value) != fmt.Sprint(i) {
			t.Fatalf("%s: i = %s, want %d", path, got.Variables["i"].Value, i)
		}
	}
	t.Logf("%d acknowledged writes survived kill -9", len(acked))
}
