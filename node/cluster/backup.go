package cluster

import (
	"context"
	"sync"

	"github.com/strata-dm/strata/node/store"
)

// Backup takes a backup view of the replica's store (docs/operations.md,
// "Backups") once it holds every write acknowledged before the call (a
// read barrier), so a backup asked of any replica holds them all. In
// embedded mode the view counts as a snapshot view of the local store: a
// store a snapshot install replaces meanwhile stays open until the view
// is closed. In PostgreSQL mode the backup is the database's.
func (c *Cluster) Backup(ctx context.Context, node string) (store.BackupSource, error) {
	if err := c.ReadBarrier(ctx); err != nil {
		return nil, err
	}
	if c.pg != nil {
		return c.pg.reader.Backup(ctx, node)
	}
	s := c.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	db := s.db
	b, err := db.Backup(node)
	if err != nil {
		return nil, err
	}
	s.vmu.Lock()
	s.views[db]++
	s.vmu.Unlock()
	return &replicaBackup{BackupSource: b, s: s, db: db}, nil
}

type replicaBackup struct {
	store.BackupSource
	s    *Store
	db   *store.Badger
	once sync.Once
}

func (b *replicaBackup) Close() error {
	var err error
	b.once.Do(func() {
		err = b.BackupSource.Close()
		b.s.unview(b.db)
	})
	return err
}
