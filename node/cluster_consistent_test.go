package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

// Consistent reads through a follower that lags (the leader's entries to
// it held by a partition): a plain read there misses writes acknowledged
// through the leader — a context, a job, a token — while a read with
// ?consistent=true never answers without them: it waits for the
// follower to apply them, and once the partition heals it shows them,
// the new token authenticates and another tenant is still refused.
func TestNodeClusterConsistentReads(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	n1 := startNode(t, replicaConfig(t, idDir, "r1"))
	n2 := startNode(t, replicaConfig(t, idDir, "r2", n1.Cluster().Address()))
	n3, px := startBehindProxy(t, replicaConfig(t, idDir, "r3", n1.Cluster().Address()))
	threeVoters(t, n1, n2, n3)

	ctx := context.Background()
	hc := httpsClient(t, ident.CAPEM)
	get := func(n *Node, path, token string, q url.Values) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "https://"+n.APIAddr()+path+"?"+q.Encode(), nil)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, body, err
	}
	consistent := url.Values{"consistent": {"true"}}
	// cget is get retried while the answer is 503 (no leader confirmed
	// the read: an election on a loaded machine), as a client retries.
	cget := func(n *Node, path, token string, q url.Values) (int, []byte) {
		t.Helper()
		var st int
		var body []byte
		tstest.WaitForErr(t, harnessWait, "an answer other than 503 to GET "+path, func() (bool, error) {
			var err error
			st, body, err = get(n, path, token, q)
			return err == nil && st != http.StatusServiceUnavailable, fmt.Errorf("%d %s %v", st, body, err)
		})
		return st, body
	}
	admin := func(n *Node) *client.Client {
		c, err := client.New("https://"+n.APIAddr(), ident.AdminToken, ident.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var leader *Node
	tstest.WaitFor(t, harnessWait, "r1 or r2 leads", func() bool {
		leader = nil
		for _, n := range []*Node{n1, n2} {
			if n.Cluster().IsLeader() {
				leader = n
			}
		}
		return leader != nil
	})
	// A tenant user, to check isolation after the partition.
	retryLeaderless(t, "folder", func() (*client.Context, error) {
		c, _, err := admin(leader).PutContext(ctx, "/sites", client.ContextUpdate{Type: "folder"})
		return c, err
	})
	globex := retryLeaderless(t, "globex user", func() (*client.CreatedToken, error) {
		if _, err := admin(leader).CreateUser(ctx, client.NewUser{Name: "gina", Password: "correct horse battery", Tenant: "globex",
			Grants: []client.Grant{{Role: "admin", Subtree: "/"}}}); err != nil && !client.IsCode(err, "conflict") {
			return nil, err
		}
		return admin(leader).CreateToken(ctx, client.NewToken{User: "gina", Name: "g"})
	})

	px.Partition(true)
	retryLeaderless(t, "write through the leader", func() (*client.Context, error) {
		c, _, err := admin(leader).PutContext(ctx, "/sites/fresh", client.ContextUpdate{Type: "folder", Tenant: "acme"})
		return c, err
	})
	tok := retryLeaderless(t, "token through the leader", func() (*client.CreatedToken, error) {
		return admin(leader).CreateToken(ctx, client.NewToken{Name: "fresh"})
	})
	// The follower lags: its plain reads miss both.
	if st, body, err := get(n3, "/api/v1/contexts/sites/fresh", ident.AdminToken, nil); err != nil || st != http.StatusNotFound {
		t.Fatalf("a plain read on the lagging follower: %d %s %v; want 404 (the test needs it to lag)", st, body, err)
	}
	if st, _, err := get(n3, "/api/v1/whoami", tok.Secret, nil); err != nil || st != http.StatusUnauthorized {
		t.Fatalf("the new token on the lagging follower, plain read: %d %v; want 401", st, err)
	}
	// A consistent read does not answer without them: it waits (here
	// until the client gives up), or answers 503 if no leader confirms
	// the read meanwhile.
	for _, path := range []string{"/api/v1/contexts/sites/fresh", "/api/v1/tree", "/api/v1/tokens"} {
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		req, _ := http.NewRequestWithContext(short, "GET", "https://"+n3.APIAddr()+path+"?consistent=true", nil)
		req.Header.Set("Authorization", "Bearer "+ident.AdminToken)
		res, err := hc.Do(req)
		cancel()
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("a consistent read of %s on the lagging follower answered %d %s", path, res.StatusCode, body)
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a consistent read of %s on the lagging follower: %v", path, err)
		}
	}

	px.Partition(false)
	tstest.WaitForErr(t, harnessWait, "a consistent read of /sites/fresh on the follower", func() (bool, error) {
		st, body, err := get(n3, "/api/v1/contexts/sites/fresh", ident.AdminToken, consistent)
		return err == nil && st == http.StatusOK, fmt.Errorf("%d %s %v", st, body, err)
	})
	// From now on every consistent read on the follower reflects what was
	// acknowledged before it; the first answers carry it.
	if st, body := cget(n3, "/api/v1/tree", ident.AdminToken, url.Values{"consistent": {"true"}, "path": {"/sites"}}); st != http.StatusOK ||
		!json.Valid(body) || !bytes.Contains(body, []byte(`"fresh"`)) {
		t.Fatalf("consistent tree on the follower: %d %s", st, body)
	}
	if st, body := cget(n3, "/api/v1/whoami", tok.Secret, consistent); st != http.StatusOK {
		t.Fatalf("the new token, consistent read on the follower: %d %s", st, body)
	}
	// Another tenant, consistent or not, sees nothing of acme's.
	for _, q := range []url.Values{nil, consistent} {
		if st, body := cget(n3, "/api/v1/contexts/sites/fresh", globex.Secret, q); st != http.StatusNotFound {
			t.Fatalf("globex reads acme's context on the follower (%v): %d %s", q, st, body)
		}
	}
	// A write made while the follower is whole shows at once in a
	// consistent read there, whichever replica took it.
	for i, via := range []*Node{leader, n3} {
		p := fmt.Sprintf("/sites/after-%d", i)
		retryLeaderless(t, "write "+p, func() (*client.Context, error) {
			c, _, err := admin(via).PutContext(ctx, p, client.ContextUpdate{Type: "folder"})
			return c, err
		})
		for _, n := range []*Node{n1, n2, n3} {
			if st, body := cget(n, "/api/v1/contexts"+p, ident.AdminToken, consistent); st != http.StatusOK {
				t.Fatalf("consistent read of %s on %s: %d %s", p, n.cfg.Cluster.ID, st, body)
			}
		}
	}
}

// startBehindProxy starts the replica of cfg with its replica channel
// reached through a proxy (its advertised address), so that a test can
// cut it off from the others; it waits long for heartbeats, so that it
// keeps following the leader through a partition instead of standing
// for election.
func startBehindProxy(t *testing.T, cfg config.Config) (*Node, *tcpproxy.Proxy) {
	t.Helper()
	px, err := tcpproxy.New("127.0.0.1:0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	cfg.Cluster.Advertise = px.Addr()
	cfg.Cluster.HeartbeatTimeout = config.Duration(time.Minute)
	cfg.Cluster.ElectionTimeout = config.Duration(time.Minute)
	n, err := New(Options{Config: cfg, Logger: tstest.Logger(t).With("replica", cfg.Cluster.ID)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	px.SetTarget(n.Cluster().ListenAddress())
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n, px
}
