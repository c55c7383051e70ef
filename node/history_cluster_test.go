package node

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// On a cluster history is the leader's work, written as records every
// replica applies: when the leader goes, the next one carries on from the
// cursor record and no acknowledged sample is lost.
func TestHistoryClusterHandover(t *testing.T) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	hist := func(c config.Config) config.Config {
		c.History.Types = []string{"pump"}
		c.History.FlushInterval = config.Duration(200 * time.Millisecond)
		return c
	}
	n1 := startNode(t, hist(replicaConfig(t, idDir, "r1")))
	n2 := startNode(t, hist(replicaConfig(t, idDir, "r2", n1.Cluster().Address())))
	n3 := startNode(t, hist(replicaConfig(t, idDir, "r3", n1.Cluster().Address())))
	nodes := []*Node{n1, n2, n3}
	// One client per replica: polling opens no more connections than
	// it uses (the API closes those beyond max_conns_per_address).
	clients := map[*Node]*client.Client{}
	cl := func(n *Node) *client.Client {
		if c := clients[n]; c != nil {
			return c
		}
		c, err := client.New("https://"+n.APIAddr(), ident.AdminToken, ident.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.CloseIdleConnections)
		clients[n] = c
		return c
	}
	ctx := context.Background()
	leader := func() *Node {
		var lead *Node
		tstest.WaitFor(t, harnessWait, "a leader", func() bool {
			for _, n := range nodes {
				if n.cluster != nil && n.Cluster().IsLeader() {
					lead = n
					return true
				}
			}
			return false
		})
		return lead
	}
	var last time.Time
	var want []int
	put := func(via *Node, from, to int) {
		for i := from; i < to; i++ {
			x := retryLeaderless(t, "put a sample", func() (*client.Context, error) {
				c, _, err := cl(via).PutContext(ctx, "/plant/p1", client.ContextUpdate{Type: "pump",
					Variables: map[string]json.RawMessage{"v": json.RawMessage(fmt.Sprint(i))}})
				return c, err
			})
			if at := x.Variables["v"].Time.Truncate(time.Millisecond); at.After(last) {
				want, last = append(want, i), at
			}
		}
	}
	points := func(n *Node) string {
		h, err := cl(n).History(ctx, "/plant/p1", client.HistoryQuery{Var: "v"})
		if err != nil {
			return err.Error()
		}
		var got []int
		for _, p := range h.Points {
			got = append(got, int(*p.V))
		}
		return fmt.Sprint(got)
	}
	lead := leader()
	put(lead, 0, 20)
	tstest.WaitFor(t, harnessWait, "the samples at the leader", func() bool { return points(lead) == fmt.Sprint(want) })
	// The leader leaves (gracefully: it hands leadership over); the
	// next leader follows the log from the cursor record.
	if err := lead.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	nodes = without(nodes, lead)
	next := leader()
	put(next, 20, 40)
	tstest.WaitForErr(t, harnessWait, "every sample at the new leader", func() (bool, error) {
		got := points(next)
		return got == fmt.Sprint(want), fmt.Errorf("got %s, want %v", got, want)
	})
	// Once flushed, any replica answers from the records.
	for _, n := range nodes {
		tstest.WaitForErr(t, harnessWait, "every sample on "+n.cfg.Cluster.ID, func() (bool, error) {
			got := points(n)
			return got == fmt.Sprint(want), fmt.Errorf("got %s, want %v", got, want)
		})
	}
}

func without(ns []*Node, x *Node) []*Node {
	var out []*Node
	for _, n := range ns {
		if n != x {
			out = append(out, n)
		}
	}
	return out
}
