package node

import (
	"context"
	"fmt"

	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/store"
)

// Online backups of the node's store (docs/operations.md, "Backups"),
// served by the API (POST /api/v1/backup, node/api/backup.go).

// BeginBackup takes a backup view of the store now; it holds every write
// acknowledged before the call. On a replica of a cluster the view is
// taken once the replica holds every write the cluster acknowledged
// before the call (a read barrier).
func (n *Node) BeginBackup(ctx context.Context) (api.Backup, error) {
	var (
		src store.BackupSource
		err error
	)
	switch s := n.store.(type) {
	case *store.Badger:
		src, err = s.Backup(n.cfg.Name)
	case *store.Postgres:
		src, err = s.Backup(ctx, n.cfg.Name)
	default:
		if n.cluster == nil {
			return nil, fmt.Errorf("node: the store (%T) takes no backups", n.store)
		}
		src, err = n.cluster.Backup(ctx, n.cfg.Name)
	}
	if err != nil {
		return nil, err
	}
	return backupView{src}, nil
}

type backupView struct{ store.BackupSource }

func (b backupView) LastSeq() uint64 { return b.Header().LastSeq }
