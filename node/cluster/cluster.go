// Package cluster makes one logical node of several replicas with Raft
// (github.com/hashicorp/raft): the embedded (Badger) mode.
//
// The model's state machine runs on the leader. Each batch it commits
// (its change-log entries with their sequence numbers, contexts, events,
// records) is one Raft log entry; every replica applies the same batches
// to its own Badger store, so every replica holds the same change log
// with the same sequence numbers. Store is the model.Store a replica's
// model runs on: model.Replicated, so each replica's model publishes
// (cache, log tail, Changed, OnCommit hooks) exactly what its replica
// applied, in log order.
//
// Lifecycle: Open opens the local store and listens on the replicas'
// channel; the caller builds its model on Store(); Start starts Raft;
// then Bootstrap (the first replica of a new cluster) or Join (a new
// replica, through any member). Shutdown hands leadership over first;
// Close stops at once (as a crash would, but for the files).
//
// Throughput: the leader's model keeps up to Config.MaxInFlight batches
// in flight (model.Pipelined): it proposes the next batch once Raft's
// leader loop took the previous one, while that one replicates, and
// gathers proposals meanwhile. Few batches in flight (2 by default) make
// big ones: most of what a Raft entry costs (its log append and its apply
// in a store transaction, on every replica) is per entry, not per
// mutation. A batch built on one still in flight names it
// (model.Batch.After), and every replica refuses it unless that batch was
// the last applied, so a batch never applies on state that was lost.
//
// Durability: the Raft log (raftlog.go: a WAL, synced per append) is the durable
// record. The local store does not sync its commits
// (store.BadgerOptions.Unsynced): the last index applied is stored with
// the data, so a restarted replica resumes after it and Raft applies
// again whatever the store lost. After a kill of the process the store
// loses nothing; after a crash of the machine it is not trusted, and
// Open replaces it with an empty one that Raft fills again from the
// latest snapshot and the log (openStore). See docs/cluster.md.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/node/store"
)

// logCacheEntries is how many of the latest Raft log entries a replica
// keeps in memory (raft.LogCache) besides its log on disk.
const logCacheEntries = 64

// wrapRaftLog, when set (by a measuring test), wraps each replica's Raft
// log.
var wrapRaftLog func(raftLog) raftLog

// Config configures one replica.
type Config struct {
	// ID names the replica in the cluster (unique, stable across restarts).
	ID string
	// Dir is the replica's data directory: raft/ (log and snapshots) and
	// the local store.
	Dir string
	// Bind is the replicas' channel listen address ("host:port"; port 0
	// picks one). Advertise is the address the others dial (default: the
	// bound address).
	Bind, Advertise string
	// CAPEM is the node's CA; Cert the replica certificate it issued
	// (certs.IssueReplica).
	CAPEM []byte
	Cert  tls.Certificate
	// Store configures the local Badger store (Dir and InMemory are set
	// here).
	Store store.BadgerOptions
	// Postgres, when set, runs the PostgreSQL mode instead (pg.go): the
	// replicas share its database, and Store is not used.
	Postgres *PostgresMode

	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// Raft timing; zero values take the library's defaults (heartbeat and
	// election 1 s, leader lease 500 ms, commit 50 ms).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// Snapshots: taken every SnapshotInterval when SnapshotThreshold
	// entries were applied since the last; TrailingLogs entries stay in
	// the log after one (library defaults: 120 s, 8192, 10240).
	SnapshotInterval                time.Duration
	SnapshotThreshold, TrailingLogs uint64
	// ApplyTimeout bounds the wait to hand a proposal to Raft (default
	// 10 s); JoinTimeout the wait for a new replica to catch up before it
	// becomes a voter (default 30 min).
	ApplyTimeout, JoinTimeout time.Duration
	// RaftLog is the Raft log's store: RaftLogWAL (the default) or
	// RaftLogBoltDB (the store before; raftlog.go).
	RaftLog string
	// MaxInFlight bounds the batches the leader's model keeps proposed
	// and not yet applied (model.Pipelined; default 2): the next batch is
	// proposed while the previous ones replicate. More batches in flight
	// make smaller ones, each costing a Raft entry on every replica
	// (docs/benchmarks.md, "Raft cluster: commit throughput").
	MaxInFlight int
}

// Validate checks what Open needs.
func (c *Config) Validate() error {
	if err := validID(c.ID); err != nil {
		return err
	}
	switch {
	case c.Dir == "":
		return errors.New("cluster: no data directory")
	case c.Bind == "":
		return errors.New("cluster: no listen address")
	case len(c.CAPEM) == 0 || len(c.Cert.Certificate) == 0:
		return errors.New("cluster: the replicas' channel needs the node CA and a replica certificate")
	}
	return nil
}

// validID checks a replica id: 1 to 64 letters, digits, '.', '_' or '-'.
func validID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("cluster: replica id %q: want 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("cluster: replica id %q: only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// Cluster is one replica: its Raft instance, its local store and its end
// of the replicas' channel. It owns the goroutines it starts (the leader
// watcher, the channel's) and stops them in Close.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	store    *Store
	storeDir string // the live store directory's name (restore.go); FSM goroutine
	fsm      *fsm
	logs     raftLog // the Raft log and stable store (raftlog.go)
	snaps    *raft.FileSnapshotStore
	layer    *streamLayer
	trans    *raft.NetworkTransport
	restore  bool // restore the latest snapshot at start (the store is older)

	pg *pgMode // the PostgreSQL mode (pg.go); nil in the embedded mode

	r       atomic.Pointer[raft.Raft]
	ready   atomic.Bool   // leader, and caught up with the log
	applied atomic.Uint64 // the last index the local store holds
	skipped atomic.Int64  // entries handed to the FSM that the store already held
	model   modelRef      // applies forwarded proposals (Start)

	quit      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	broken    atomic.Pointer[error]
}

// Open opens the replica's local store and raft storage and listens on
// the replicas' channel. Build the model on Store(), then call Start.
func Open(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 30 * time.Minute
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 2
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger.With("component", "cluster", "replica", cfg.ID), quit: make(chan struct{})}
	c.metrics = newMetrics(cfg.Registerer, c)
	ok := false
	defer func() {
		if !ok {
			c.release()
		}
	}()
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "raft"), 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if cfg.Postgres != nil {
		if err := c.openPostgres(); err != nil { // pg.go
			return nil, err
		}
		ok = true
		return c, nil
	}
	var err error
	if c.storeDir, err = liveStoreDir(cfg.Dir); err != nil {
		return nil, err
	}
	db, err := c.openStore()
	if err != nil {
		return nil, err
	}
	c.store = &Store{c: c, db: db, views: map[*store.Badger]int{}, retired: map[*store.Badger]string{}}
	applied, err := db.Applied()
	if err != nil {
		return nil, err
	}
	last, err := db.LastSeq()
	if err != nil {
		return nil, err
	}
	lastID, err := db.AppliedBatch()
	if err != nil {
		return nil, err
	}
	c.applied.Store(applied)
	c.fsm = &fsm{s: c.store, c: c, applied: applied, lastSeq: last, lastID: lastID}
	if c.logs, err = openRaftLog(filepath.Join(cfg.Dir, "raft"), cfg.RaftLog, c.log); err != nil {
		return nil, err
	}
	if wrapRaftLog != nil {
		c.logs = wrapRaftLog(c.logs)
	}
	if c.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "raft"), 2, c.hclog()); err != nil {
		return nil, fmt.Errorf("cluster: open the snapshot store: %w", err)
	}
	if c.restore, err = c.storeBehindSnapshot(applied); err != nil {
		return nil, err
	}
	if err := c.listen(); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// storeBehindSnapshot reports whether the local store is older than the
// latest snapshot (it was lost, or never had what the snapshot holds):
// Raft then restores the snapshot at start. Otherwise the store already
// holds everything up to the snapshot, and Raft resumes after it (entries
// between the store's index and the snapshot's change nothing: a batch
// among them would be in the store).
func (c *Cluster) storeBehindSnapshot(applied uint64) (bool, error) {
	metas, err := c.snaps.List()
	if err != nil || len(metas) == 0 {
		return false, err
	}
	_, rc, err := c.snaps.Open(metas[0].ID)
	if err != nil {
		return false, fmt.Errorf("cluster: open snapshot %s: %w", metas[0].ID, err)
	}
	defer rc.Close()
	h, err := store.ReadSnapshotHeader(rc)
	if err != nil {
		return false, fmt.Errorf("cluster: snapshot %s: %w", metas[0].ID, err)
	}
	if applied < h.Applied {
		c.log.Info("the local store is older than the latest snapshot: restoring it", "store_applied", applied, "snapshot_applied", h.Applied)
		return true, nil
	}
	return false, nil
}

func (c *Cluster) listen() error {
	server, client, err := tlsConfigs(c.cfg.CAPEM, c.cfg.Cert)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.cfg.Bind)
	if err != nil {
		return fmt.Errorf("cluster: listen %s: %w", c.cfg.Bind, err)
	}
	adv := ln.Addr()
	if c.cfg.Advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", c.cfg.Advertise); err != nil {
			ln.Close()
			return fmt.Errorf("cluster: advertise address %s: %w", c.cfg.Advertise, err)
		}
	}
	c.layer = newStreamLayer(ln, adv, server, client, c.serveRPC, func(reason string) {
		c.metrics.refused.WithLabelValues(reason).Inc()
	})
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: c.layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: c.hclog(),
	})
	return nil
}

// Address is the replica's address on the replicas' channel.
func (c *Cluster) Address() string { return c.layer.Addr().String() }

// ListenAddress is the address the replicas' channel is bound to: Address
// unless the advertised address differs (a proxy in front).
func (c *Cluster) ListenAddress() string { return c.layer.ln.Addr().String() }

// ID is the replica's id.
func (c *Cluster) ID() string { return c.cfg.ID }

// Store is the model.Store of this replica's model.
func (c *Cluster) Store() *Store { return c.store }

// Start starts Raft. Entries are applied (and published to the model
// attached to Store) from then on; m, when not nil, applies the
// proposals followers forward while this replica leads.
func (c *Cluster) Start(m applier) error {
	if m != nil {
		c.model.Store(&m)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.ID)
	rc.Logger = c.hclog()
	rc.NoSnapshotRestoreOnStart = !c.restore
	// A proposal is handed to the leader's loop directly (no queue in
	// front of it: BatchApplyCh off), so Propose returns once the loop
	// took it, after the loop's previous log append: while the leader
	// syncs its log, the model gathers the next batch rather than
	// queueing a small one behind it, and the leader appends a batch
	// while the previous one replicates (docs/benchmarks.md).
	rc.BatchApplyCh = false
	setIf(&rc.HeartbeatTimeout, c.cfg.HeartbeatTimeout)
	setIf(&rc.ElectionTimeout, c.cfg.ElectionTimeout)
	setIf(&rc.LeaderLeaseTimeout, c.cfg.LeaderLeaseTimeout)
	setIf(&rc.CommitTimeout, c.cfg.CommitTimeout)
	setIf(&rc.SnapshotInterval, c.cfg.SnapshotInterval)
	setIf(&rc.SnapshotThreshold, c.cfg.SnapshotThreshold)
	setIf(&rc.TrailingLogs, c.cfg.TrailingLogs)
	// The leader sends new entries to the followers from memory rather
	// than reading them back from the log (and decoding them) per send.
	logs, err := raft.NewLogCache(logCacheEntries, c.logs)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	r, err := raft.NewRaft(rc, c.raftFSM(), logs, c.logs, c.snaps, c.trans)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	c.r.Store(r)
	c.startPostgres()
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.watchLeadership(r)
	}()
	go func() {
		defer c.wg.Done()
		c.watchLeaderContact(r) // leaderloss.go
	}()
	return nil
}

func (c *Cluster) raft() *raft.Raft { return c.r.Load() }

// Bootstrap makes this replica a cluster of one voter, itself: `strata
// cluster init`. A replica that already has Raft state is left as it is.
func (c *Cluster) Bootstrap() error {
	r := c.raft()
	if r == nil {
		return errors.New("cluster: not started")
	}
	has, err := raft.HasExistingState(c.logs, c.logs, c.snaps)
	if err != nil {
		return err
	}
	if has {
		return nil
	}
	return r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
		{ID: raft.ServerID(c.cfg.ID), Address: c.trans.LocalAddr(), Suffrage: raft.Voter},
	}}).Error()
}

// watchLeadership keeps ready: true once this replica leads and has
// applied every entry before its term (a barrier), so the batches its
// model builds start where the log is.
func (c *Cluster) watchLeadership(r *raft.Raft) {
	for {
		select {
		case <-c.quit:
			return
		case leader := <-r.LeaderCh():
			c.ready.Store(false)
			c.metrics.leaderChanges.Inc()
			if !leader {
				c.log.Info("no longer the leader")
				continue
			}
			for r.State() == raft.Leader {
				if err := r.Barrier(c.cfg.ApplyTimeout).Error(); err == nil {
					if err := c.takeOver(r); err != nil { // pg.go
						c.log.Warn("not serving writes in this term", "term", r.CurrentTerm(), "err", err)
						break
					}
					c.ready.Store(r.State() == raft.Leader)
					c.log.Info("leading", "term", r.CurrentTerm(), "applied", r.AppliedIndex())
					break
				} else {
					c.log.Warn("leader barrier", "err", err)
				}
				select {
				case <-c.quit:
					return
				default:
				}
			}
		}
	}
}

// untilClosed returns a context derived from ctx that also ends when the
// replica closes; the caller must call cancel.
func (c *Cluster) untilClosed(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-c.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (c *Cluster) leaderReady() bool {
	r := c.raft()
	return r != nil && c.ready.Load() && r.State() == raft.Leader && c.broken.Load() == nil
}

// notLeader is ErrNotLeader, naming the leader when one is known.
func (c *Cluster) notLeader() error {
	if r := c.raft(); r != nil {
		if addr, id := r.LeaderWithID(); id != "" && string(id) != c.cfg.ID {
			return fmt.Errorf("%w (leader %s at %s)", ErrNotLeader, id, addr)
		}
	}
	return ErrNotLeader
}

func (c *Cluster) setApplied(i uint64) { c.applied.Store(i) }

// brokenStore records that the local store failed to apply the log. The
// replica stays up (to be inspected) but neither leads nor serves as up
// to date: Ready reports it.
func (c *Cluster) brokenStore(err error) {
	c.broken.Store(&err)
	c.ready.Store(false)
	if r := c.raft(); r != nil && r.State() == raft.Leader {
		go r.LeadershipTransfer()
	}
}

// Broken returns the error that stopped this replica applying the log,
// or nil.
func (c *Cluster) Broken() error {
	if p := c.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// IsLeader reports whether this replica leads and accepts writes.
func (c *Cluster) IsLeader() bool { return c.leaderReady() }

// Role is "leader" when this replica leads and accepts writes, else
// "follower" (/readyz).
func (c *Cluster) Role() string {
	if c.leaderReady() {
		return "leader"
	}
	return "follower"
}

// Ready reports why the replica cannot serve as part of a cluster with
// quorum: no leader known, or its store failed to apply the log.
func (c *Cluster) Ready() error {
	if err := c.Broken(); err != nil {
		return err
	}
	if id, _ := c.Leader(); id == "" {
		return errors.New("no quorum: no leader known")
	}
	return nil
}

// HasState reports whether this replica has Raft state (it bootstrapped
// or joined before), so needs neither again.
func (c *Cluster) HasState() (bool, error) {
	return raft.HasExistingState(c.logs, c.logs, c.snaps)
}

// Leader returns the leader's id and address, empty when none is known.
func (c *Cluster) Leader() (id, address string) {
	r := c.raft()
	if r == nil {
		return "", ""
	}
	addr, sid := r.LeaderWithID()
	return string(sid), string(addr)
}

// Shutdown leaves gracefully: a leader first hands leadership over (ctx
// bounds the wait), then the replica stops as Close.
func (c *Cluster) Shutdown(ctx context.Context) error {
	if r := c.raft(); r != nil && r.State() == raft.Leader && c.voters() > 1 {
		done := make(chan error, 1)
		go func() { done <- r.LeadershipTransfer().Error() }()
		select {
		case err := <-done:
			if err != nil {
				c.log.Warn("handing leadership over", "err", err)
			}
		case <-ctx.Done():
			c.log.Warn("handing leadership over", "err", ctx.Err())
		}
	}
	return c.Close()
}

func (c *Cluster) voters() int {
	r := c.raft()
	f := r.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// Close stops the replica without handing leadership over: Raft, the
// channel, the local store. Closing twice is safe.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if r := c.raft(); r != nil {
			errs = append(errs, r.Shutdown().Error())
		}
		close(c.quit)
		c.wg.Wait()
		errs = append(errs, c.release())
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// release closes what Open opened, in reverse order.
func (c *Cluster) release() error {
	var errs []error
	if c.trans != nil {
		errs = append(errs, c.trans.Close()) // closes the layer too
	}
	if c.layer != nil {
		errs = append(errs, c.layer.Close()) // a second close is a no-op
	}
	if c.logs != nil {
		errs = append(errs, c.logs.Close())
	}
	if c.store != nil && c.store.db != nil {
		errs = append(errs, c.store.db.Close())
		// Raft has stopped: no snapshot views a replaced store any more.
		c.store.vmu.Lock()
		for db := range c.store.retired {
			errs = append(errs, db.Close())
		}
		clear(c.store.retired)
		c.store.vmu.Unlock()
	}
	if c.pg != nil {
		errs = append(errs, c.pg.close())
	}
	c.metrics.unregister()
	return errors.Join(errs...)
}

// hclog is Raft's logger, writing to the replica's slog.Logger.
func (c *Cluster) hclog() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        "raft",
		Level:       hclog.Info,
		Output:      slogWriter{c.log},
		DisableTime: true,
	})
}

// slogWriter turns hclog's lines ("[LEVEL] name: message: k=v") into slog
// records at the same level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn,
		"[INFO]": slog.LevelInfo, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			level, line = l, strings.TrimSpace(rest)
			break
		}
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}

// setIf sets *dst to v when v is set (positive): the library's default
// stays otherwise.
func setIf[T time.Duration | uint64](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}
