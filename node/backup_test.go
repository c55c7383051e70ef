package node

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

// A backup asked of a follower of a cluster holds every write the
// cluster acknowledged before it was asked, in either mode: the follower
// takes its view after a read barrier.
func TestClusterBackupFromFollower(t *testing.T) {
	t.Run("badger", func(t *testing.T) { clusterBackup(t, nil) })
	t.Run("postgres", func(t *testing.T) { clusterBackup(t, postgresReplicas(t)) })
}

func clusterBackup(t *testing.T, mode func(*config.Config)) {
	idDir := t.TempDir()
	ident, err := WriteIdentity(idDir, "plant7", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string, join ...string) *Node {
		cfg := replicaConfig(t, idDir, id, join...)
		if mode != nil {
			mode(&cfg)
		}
		return startNode(t, cfg)
	}
	n1 := start("r1")
	n2 := start("r2", n1.Cluster().Address())
	n3 := start("r3", n1.Cluster().Address())
	threeVoters(t, n1, n2, n3)
	leader := clusterLeader(t, n1, n2, n3)
	follower := n2
	if follower == leader {
		follower = n3
	}
	cl := func(n *Node) *client.Client {
		c, err := client.New("https://"+n.APIAddr(), ident.AdminToken, ident.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	for i := range 20 {
		retryLeaderless(t, "put", func() (*client.Context, error) {
			c, _, err := cl(leader).PutContext(ctx, "/sites/line-"+string(rune('a'+i)), client.ContextUpdate{Type: "folder"})
			return c, err
		})
	}
	last := leader.Model().LastSeq()
	// At once, through the follower's API: no wait for it to apply.
	body, err := cl(follower).Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	h, err := store.VerifyBackup(bytes.NewReader(data))
	if err != nil || h.LastSeq < last || h.Node != "plant7" {
		t.Fatalf("backup from a follower: %+v (leader at %d), %v", h, last, err)
	}
	want := store.BackupBadger
	if mode != nil {
		want = store.BackupPostgres
	}
	if h.Store != want {
		t.Fatalf("a backup of a %s store, want %s", h.Store, want)
	}
	if mode != nil {
		return // the PostgreSQL restore is store's and e2e's
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := store.RestoreBadgerBackup(store.BadgerOptions{Dir: dir}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Context("/sites/line-t"); err != nil {
		t.Fatalf("the last write before the backup: %v", err)
	}
}
