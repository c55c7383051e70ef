package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/cluster"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/store"
)

// A node with cluster.id set is one replica of a Raft cluster
// (docs/cluster.md): its model runs on the cluster's replicated store,
// its writes on a follower are forwarded to the leader, and what it keeps
// in memory follows the log it applies: the auth cache forgets the users
// and tokens a batch changes (at once, inside the commit), and, on a
// goroutine of the node's (followReplica), the jobs service takes the
// job records, the broker closes the sessions of devices revoked through
// another replica, and the federation closes the links of providers
// revoked through another replica.

// Interface guard: the replicated store serves the node as a store does.
var _ nodeStore = (*cluster.Store)(nil)

// bootstrapLeaderWait bounds the wait of a replica that bootstraps a new
// cluster for its own leadership, to create the first admin.
const bootstrapLeaderWait = time.Minute

// openCluster opens this replica over the data directory; its model is
// built on clusterStore(n.cluster) and started by startCluster.
func (n *Node) openCluster(cfg *config.Config) error {
	dataDir := cfg.Path(cfg.DataDir)
	pg := cfg.Store.Kind == config.StorePostgres
	if _, err := os.Stat(filepath.Join(dataDir, "MANIFEST")); err == nil && !pg {
		return fmt.Errorf("cluster: %s holds the store of a single node; making it a replica is not built yet: start the replica on an empty data_dir", dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	var key []byte
	var mode *cluster.PostgresMode
	if pg {
		// The PostgreSQL mode: data_dir holds only Raft's state.
		mode = &cluster.PostgresMode{Store: PostgresOptions(cfg, n.log)}
	} else if k, err := encryptionKey(cfg); err != nil {
		return err
	} else {
		key = k
	}
	caPEM, err := os.ReadFile(cfg.Path(cfg.MQTT.CACert))
	if err != nil {
		return fmt.Errorf("cluster: the node CA: %w", err)
	}
	tc, err := replicaCertificate(cfg)
	if err != nil {
		return err
	}
	cl := cfg.Cluster
	n.cluster, err = cluster.Open(cluster.Config{
		ID: cl.ID, Dir: dataDir, Bind: cl.Addr, Advertise: cl.Advertise,
		CAPEM: caPEM, Cert: tc,
		Store:    store.BadgerOptions{EncryptionKey: key, CacheMB: cfg.Store.CacheMB},
		Postgres: mode,
		Logger:   n.log, Registerer: n.reg,
		HeartbeatTimeout: cl.HeartbeatTimeout.D(), ElectionTimeout: cl.ElectionTimeout.D(),
		LeaderLeaseTimeout: cl.LeaderLeaseTimeout.D(),
		SnapshotInterval:   cl.SnapshotInterval.D(), SnapshotThreshold: cl.SnapshotThreshold, TrailingLogs: cl.TrailingLogs,
		RaftLog: cl.RaftLog,
	})
	return err
}

// clusterStore is the store the replica's model runs on: the replicated
// Badger store, or, in PostgreSQL mode, the shared database.
func clusterStore(c *cluster.Cluster) nodeStore {
	if s := c.PostgresStore(); s != nil {
		return s
	}
	return c.Store()
}

// Interface guard: in PostgreSQL mode too.
var _ nodeStore = (*cluster.PGStore)(nil)

// replicaCertificate loads the replica's certificate, issuing it first
// when its files do not exist and the node CA's key is at hand.
func replicaCertificate(cfg *config.Config) (tls.Certificate, error) {
	certFile, keyFile := cfg.Path(cfg.Cluster.TLSCert), cfg.Path(cfg.Cluster.TLSKey)
	if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
		ca, err := certs.LoadPair(cfg.Path(cfg.MQTT.CACert), cfg.Path(cfg.MQTT.CAKey))
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("cluster: no replica certificate at %s, and the node CA cannot issue one: %w", certFile, err)
		}
		hosts := certs.ServerHosts()
		for _, a := range []string{cfg.Cluster.Advertise, cfg.Cluster.Addr} {
			if h, _, err := net.SplitHostPort(a); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
				hosts = append(hosts, h)
			}
		}
		p, err := ca.IssueReplica(cfg.Cluster.ID, hosts)
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := p.WriteFiles(certFile, keyFile); err != nil {
			return tls.Certificate{}, err
		}
	}
	p, err := certs.LoadPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: replica certificate: %w", err)
	}
	return p.TLSCertificate()
}

// startCluster starts Raft under the model and, on a replica's first
// start, bootstraps a new cluster (waiting to lead it, so that the first
// admin can be created) or joins one in the background.
func (n *Node) startCluster() (bootstrapAdmin bool, err error) {
	n.follow = &followQueue{wake: make(chan struct{}, 1)}
	n.model.OnCommit(func(es []model.Entry) {
		for i := range es {
			if r := es[i].Mutation.Record; r != nil {
				n.auth.InvalidateRecord(r.Kind, r.Key)
			}
		}
		n.follow.add(es)
	})
	n.model.OnReset(func(last uint64) {
		// A snapshot replaced the store: no commit hook saw its changes.
		n.auth.InvalidateAll()
		n.follow.reset(last)
	})
	if err := n.cluster.Start(n.model); err != nil {
		return false, err
	}
	has, err := n.cluster.HasState()
	if err != nil {
		return false, err
	}
	cl := n.cfg.Cluster
	switch {
	case cl.Bootstrap && !has:
		if err := n.cluster.Bootstrap(); err != nil {
			return false, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		fallthrough
	case cl.Bootstrap && n.model.LastSeq() == 0:
		// The first admin is not created yet (it is the log's first
		// entry): wait to lead, once. A bootstrapped replica restarting
		// with a log serves at once, whoever leads.
		deadline := time.Now().Add(bootstrapLeaderWait)
		for !n.cluster.IsLeader() {
			if time.Now().After(deadline) {
				n.log.Warn("cluster: not leading yet; the first admin is created by the replica that bootstrapped, at its next start")
				return false, nil
			}
			time.Sleep(20 * time.Millisecond) // waiting for an election, once, at start
		}
		return true, nil
	case !has && len(cl.Join) > 0:
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.joinCluster(cl.Join)
		}()
	}
	return false, nil
}

// followQueue holds the applied job and device records the node has not
// handled yet. The commit hook adds to it without blocking;
// followReplica takes from it.
type followQueue struct {
	mu sync.Mutex
	es []model.Entry
	// resetAt, when not 0, is the last sequence number of a snapshot that
	// replaced the store since the last take: the records it holds are to
	// be followed again, before es (entries applied after it).
	resetAt uint64
	wake    chan struct{}
}

// followKinds are the record kinds followReplica hands on.
var followKinds = []string{jobs.KindJob, devices.KindDevice, federation.KindPeer}

// reset drops the queued entries, which the snapshot ending at last
// supersedes, and has followReplica read the store's records instead.
func (q *followQueue) reset(last uint64) {
	q.mu.Lock()
	q.es, q.resetAt = nil, max(last, 1)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *followQueue) add(es []model.Entry) {
	added := false
	q.mu.Lock()
	for i := range es {
		if r := es[i].Mutation.Record; r != nil && slices.Contains(followKinds, r.Kind) {
			q.es = append(q.es, es[i])
			added = true
		}
	}
	q.mu.Unlock()
	if added {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *followQueue) take() (resetAt uint64, es []model.Entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	resetAt, es = q.resetAt, q.es
	q.resetAt, q.es = 0, nil
	return resetAt, es
}

// followReplica hands the applied job and device records to the jobs
// service and the broker, until the node stops.
func (n *Node) followReplica() {
	for {
		select {
		case <-n.stop:
			return
		case <-n.follow.wake:
		}
		resetAt, es := n.follow.take()
		if resetAt != 0 {
			n.refollow(resetAt)
		}
		n.followEntries(es)
	}
}

// followEntries hands applied records to the jobs service, the
// federation and the broker.
func (n *Node) followEntries(es []model.Entry) {
	if len(es) == 0 {
		return
	}
	if n.jobs != nil {
		n.jobs.Follow(es)
	}
	if n.fed != nil {
		n.fed.Follow(es)
	}
	for i := range es {
		r := es[i].Mutation.Record
		if r.Kind == devices.KindDevice && es[i].Mutation.Op == model.OpPutRecord &&
			n.broker != nil && devices.RevokedRecord(r.Value) {
			n.broker.Disconnect(r.Key)
		}
	}
}

// refollowChunk bounds the records refollow hands on at once.
const refollowChunk = 1024

// refollow hands on the followed records of the store, as puts at the
// sequence number of the snapshot that replaced it (last): the jobs
// service takes the jobs queued or finished meanwhile, the broker closes
// the sessions of devices revoked meanwhile (only revoked devices are
// handed on), the federation the links of providers revoked meanwhile.
// The records are read first and handed on after the walk: the services
// read the store too, which must not happen inside a walk.
func (n *Node) refollow(last uint64) {
	n.log.Info("cluster: following the records of an installed snapshot", "last_seq", last)
	for _, kind := range followKinds {
		var es []model.Entry
		err := n.store.Records(kind, func(key string, value []byte) error {
			if kind == devices.KindDevice && !devices.RevokedRecord(value) {
				return nil
			}
			r := &model.Record{Kind: kind, Key: key, Value: slices.Clone(value)}
			es = append(es, model.Entry{Seq: last, Mutation: model.Mutation{Op: model.OpPutRecord, Record: r}})
			return nil
		})
		if err != nil {
			n.log.Error("cluster: reading the records of an installed snapshot", "kind", kind, "err", err)
		}
		for len(es) > 0 {
			k := min(len(es), refollowChunk)
			n.followEntries(es[:k])
			es = es[k:]
		}
	}
}

// joinCluster asks the members in via, in turn, to add this replica,
// until one does or the node stops.
func (n *Node) joinCluster(via []string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 0; ; attempt++ {
		addr := via[attempt%len(via)]
		err := n.cluster.Join(ctx, addr)
		if err == nil {
			n.log.Info("cluster: joined", "via", addr)
			return
		}
		n.log.Warn("cluster: join", "via", addr, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// clusterAPI is the API's view of the replica; a nil interface (not a nil
// pointer in one) when the node is not a cluster.
func (n *Node) clusterAPI() api.Cluster {
	if n.cluster == nil {
		return nil
	}
	return n.cluster
}

// Cluster exposes the replica (nil when the node is not a cluster), for
// in-process harnesses.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }
