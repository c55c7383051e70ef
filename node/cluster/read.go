package cluster

import (
	"context"
	"fmt"
	"time"
)

// Linearizable reads (docs/cluster.md, "Reads"). A replica's reads are
// local: a follower may be behind the leader by its apply lag, and a
// leader that was just deposed does not know it yet. ReadBarrier makes
// the read that follows it linearizable, with Raft's read-index scheme:
// the leader takes the index it has applied (which covers every write
// acknowledged so far: a write is acknowledged once applied on the
// leader, and a new leader serves only once it applied every earlier
// term's entries), confirms with a quorum that it still leads
// (VerifyLeader), and the replica that reads waits until it has applied
// that index. A follower asks the leader for the index over the
// replicas' channel.

// readPoll is how often a replica waiting for a read index looks at its
// applied index.
const readPoll = time.Millisecond

// ReadBarrier returns once this replica's store holds every write
// acknowledged before the call, and no other leader could have
// acknowledged one it misses. It fails with ErrNotLeader (503 on the
// API: retry) when no leader answers, and with ctx's error.
func (c *Cluster) ReadBarrier(ctx context.Context) error {
	if c.pg != nil {
		return c.pg.readBarrier(ctx) // pg.go
	}
	idx, err := c.readIndex(ctx)
	if err != nil {
		return err
	}
	if c.applied.Load() >= idx {
		return nil
	}
	t := time.NewTicker(readPoll)
	defer t.Stop()
	for c.applied.Load() < idx {
		if err := c.Broken(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting to apply read index %d: %w", idx, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// readIndex is the leader's read index, asked of the leader when this
// replica follows.
func (c *Cluster) readIndex(ctx context.Context) (uint64, error) {
	if c.leaderReady() {
		return c.readIndexHere()
	}
	id, addr := c.Leader()
	if id == "" || id == c.cfg.ID {
		return 0, c.notLeader()
	}
	if err := c.leaderSilent(); err != nil {
		return 0, err // leaderloss.go
	}
	resp, err := c.call(ctx, addr, rpcRequest{Op: "read_index"})
	if err != nil {
		return 0, fmt.Errorf("%w: read index from %s at %s: %v", ErrNotLeader, id, addr, err)
	}
	if resp.Error != "" {
		return 0, codeError(resp.Code, resp.Error)
	}
	return resp.Index, nil
}

// readIndexHere is the read index of this replica, which must lead.
func (c *Cluster) readIndexHere() (uint64, error) {
	if !c.leaderReady() {
		return 0, c.notLeader()
	}
	idx := c.applied.Load()
	if err := c.raft().VerifyLeader().Error(); err != nil {
		return 0, c.raftErr("verify leadership", err)
	}
	return idx, nil
}
