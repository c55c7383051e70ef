package cluster

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// A partition of one replica from the others, for in-process tests: while
// cut, the replica's end of the replicas' channel refuses every
// connection, in and out, and the connections open when it was cut are
// closed, so Raft and the cluster's RPCs see a silent peer on both sides
// (a partition that cuts both directions). Everything else of the replica
// (its PostgreSQL connections, its API) keeps working.

var errCut = errors.New("cluster: cut off from the other replicas")

// cutOff tracks the channel's connections so a cut can close them.
type cutOff struct {
	on    atomic.Bool
	mu    sync.Mutex
	conns map[*cutConn]struct{}
}

// watch returns raw tracked for a cut, or nil (raw closed) while cut.
func (x *cutOff) watch(raw net.Conn) net.Conn {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.on.Load() {
		raw.Close()
		return nil
	}
	if x.conns == nil {
		x.conns = map[*cutConn]struct{}{}
	}
	c := &cutConn{Conn: raw, x: x}
	x.conns[c] = struct{}{}
	return c
}

// set cuts the replica off (true) or heals the cut (false).
func (x *cutOff) set(on bool) {
	x.mu.Lock()
	x.on.Store(on)
	var open []*cutConn
	if on {
		for c := range x.conns {
			open = append(open, c)
		}
	}
	x.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

type cutConn struct {
	net.Conn
	x    *cutOff
	once sync.Once
}

func (c *cutConn) Close() error {
	c.once.Do(func() {
		c.x.mu.Lock()
		delete(c.x.conns, c)
		c.x.mu.Unlock()
	})
	return c.Conn.Close()
}

// cutOff cuts this replica off the others (true) or heals it (false).
func (c *Cluster) cutOff(on bool) { c.layer.cut.set(on) }
