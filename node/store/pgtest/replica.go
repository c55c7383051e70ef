package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// StartReplica starts a streaming replica of c: a base backup
// (pg_basebackup -R, which writes standby.signal and primary_conninfo) in
// a new directory, served on a free 127.0.0.1 port. It returns once the
// replica accepts connections and is in recovery. The replica copies the
// whole cluster, so databases created on c later (NewDatabase) appear on
// it too: use c.DSN's database names with replica.DSN. The caller must Stop
// it; Shutdown and Restart take it down and bring it back on its port.
func (c *Cluster) StartReplica() (*Cluster, error) {
	r, err := newCluster(c.bin, c.durable)
	if err != nil {
		return nil, err
	}
	// -c fast: an immediate checkpoint instead of a spread one.
	cmd := r.command("pg_basebackup", "-R", "-D", r.data(), "-h", "127.0.0.1",
		"-p", strconv.Itoa(c.Port), "-U", c.user, "-X", "stream", "-c", "fast", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(r.Dir)
		return nil, fmt.Errorf("pgtest: pg_basebackup: %v\n%s", err, out)
	}
	if err := r.startOnFreePort(); err != nil {
		os.RemoveAll(r.Dir)
		return nil, err
	}
	if err := r.waitRecovery(); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// waitRecovery waits until the server reports that it is a standby.
func (c *Cluster) waitRecovery() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var standby bool
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby)
			conn.Close(ctx)
		}
		if err == nil && standby {
			return nil
		}
		if err == nil {
			err = errors.New("not in recovery")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: replica on port %d: %w", c.Port, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
