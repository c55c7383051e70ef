package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
)

// The in-process harness: replicas of one cluster on 127.0.0.1, each with
// its data directory under t.TempDir(), its model on the cluster's store,
// talking over the real replicas' channel (mutual TLS).

// harnessTimeout bounds what a test waits for: an election, a catch-up.
const harnessTimeout = 30 * time.Second

type harness struct {
	t    *testing.T
	ca   *certs.Pair
	root string
	tune func(*Config)
	// noForward leaves followers' models without forwarding.
	noForward bool
	mu        sync.Mutex
	reps      []*replica
}

type replica struct {
	h       *harness
	mu      sync.Mutex // guards m for writers on other goroutines
	id      string
	dir     string
	addr    string // fixed after the first start: the others know it
	c       *Cluster
	m       *model.Model
	entries atomic.Int64 // entries seen by the model's OnCommit hook
}

func newHarness(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	ca, err := certs.NewCA("test node CA")
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, ca: ca, root: t.TempDir(), tune: tune}
}

// cluster starts n replicas: the first bootstraps, the others join.
func (h *harness) cluster(n int) []*replica {
	h.t.Helper()
	first := h.add("r1")
	if err := first.c.Bootstrap(); err != nil {
		h.t.Fatal(err)
	}
	h.leader()
	for i := 2; i <= n; i++ {
		r := h.add(fmt.Sprintf("r%d", i))
		h.join(r, first.addr)
	}
	return h.replicas()
}

func (h *harness) join(r *replica, via string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harnessTimeout)
	defer cancel()
	if err := r.c.Join(ctx, via); err != nil {
		h.t.Fatalf("%s joins: %v", r.id, err)
	}
}

func (h *harness) replicas() []*replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*replica(nil), h.reps...)
}

// add starts a new replica.
func (h *harness) add(id string) *replica {
	h.t.Helper()
	r := &replica{h: h, id: id, dir: filepath.Join(h.root, id), addr: "127.0.0.1:0"}
	r.start()
	h.mu.Lock()
	h.reps = append(h.reps, r)
	h.mu.Unlock()
	h.t.Cleanup(r.kill)
	return r
}

func (r *replica) start() {
	t := r.h.t
	t.Helper()
	cert, err := r.h.ca.IssueReplica(r.id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := cert.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: r.id, Dir: r.dir, Bind: r.addr, CAPEM: r.h.ca.CertPEM, Cert: tc,
		Logger:           tstest.Logger(t).With("replica", r.id),
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 20 * time.Millisecond,
		ApplyTimeout: 5 * time.Second, JoinTimeout: harnessTimeout}
	cfg.Store.CacheMB = 8
	if r.h.tune != nil {
		r.h.tune(&cfg)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", r.id, err)
	}
	m, err := model.New(model.Config{Store: c.ModelStore(), Logger: cfg.Logger, Forward: r.forward(c)})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	r.entries.Store(0)
	m.OnCommit(func(es []model.Entry) { r.entries.Add(int64(len(es))) })
	if err := c.Start(m); err != nil {
		m.Close()
		c.Close()
		t.Fatal(err)
	}
	r.mu.Lock()
	r.c, r.m, r.addr = c, m, c.Address()
	r.mu.Unlock()
}

// model is the replica's model, nil while it is down.
func (r *replica) model() *model.Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m
}

// forward is the model's Forwarder: the cluster, unless the test writes
// only through the leader.
func (r *replica) forward(c *Cluster) model.Forwarder {
	if r.h.noForward {
		return nil
	}
	return c
}

// kill stops the replica without handing leadership over.
func (r *replica) kill() {
	if r.c == nil {
		return
	}
	r.mu.Lock()
	m, c := r.m, r.c
	r.m = nil
	r.mu.Unlock()
	m.Close()
	c.Close()
	r.c = nil
}

func (r *replica) up() bool { return r.c != nil }

// leader waits for a leader that accepts writes and returns it.
func (h *harness) leader() *replica {
	h.t.Helper()
	var l *replica
	tstest.WaitFor(h.t, harnessTimeout, "a leader", func() bool {
		for _, r := range h.replicas() {
			if r.up() && r.c.IsLeader() {
				l = r
				return true
			}
		}
		return false
	})
	return l
}

// leaderOrNil returns a replica that leads and accepts writes, nil when
// none does now.
func (h *harness) leaderOrNil() *replica {
	for _, r := range h.replicas() {
		if r.up() && r.c.IsLeader() {
			return r
		}
	}
	return nil
}

// write applies muts through whichever replica leads, retrying across
// replicas as a client would, until it is acknowledged.
func (h *harness) write(muts ...model.Mutation) []model.Entry {
	h.t.Helper()
	es, err := h.tryWrite(muts...)
	if err != nil {
		h.t.Fatal(err)
	}
	return es
}

// tryWrite is write for goroutines other than the test's.
func (h *harness) tryWrite(muts ...model.Mutation) ([]model.Entry, error) {
	deadline := time.Now().Add(harnessTimeout)
	var last error
	for time.Now().Before(deadline) {
		for _, r := range h.replicas() {
			m := r.model()
			if m == nil {
				continue
			}
			es, err := m.Apply(context.Background(), muts...)
			if err == nil {
				return es, nil
			}
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrStale) && !errors.Is(err, model.ErrClosed) {
				return nil, err
			}
			last = err
		}
		time.Sleep(5 * time.Millisecond) // polling for a leader, not synchronising
	}
	return nil, fmt.Errorf("no replica accepted the write before the deadline (last error: %v)", last)
}

func put(path string, vars ...string) model.Mutation {
	m := model.Mutation{Op: model.OpPut, Path: model.Path(path), Type: "device", Tenant: "t1", Labels: map[string]string{}}
	for i := 0; i+1 < len(vars); i += 2 {
		m.Labels[vars[i]] = vars[i+1]
	}
	return m
}

// view is what a replica's model shows: the log (sequence, op, path,
// tenant), every context, the records of one kind.
type view struct {
	Last     uint64
	Log      []string
	Contexts []string
	Records  map[string]string
}

func (r *replica) view(t *testing.T) view {
	t.Helper()
	v := view{Last: r.m.LastSeq(), Records: map[string]string{}}
	first := uint64(1)
	if st := r.c.Store(); st != nil { // the embedded mode: after a compaction
		var err error
		if first, err = st.Badger().FirstSeq(); err != nil {
			t.Fatal(err)
		}
	}
	for after := first - 1; after < v.Last; {
		es, err := r.m.ReadLog(context.Background(), after, 1000)
		if err != nil {
			t.Fatalf("%s: read log after %d: %v", r.id, after, err)
		}
		for _, e := range es {
			v.Log = append(v.Log, fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant))
			after = e.Seq
		}
	}
	if _, err := r.m.Snapshot("/", func(c *model.Context) error {
		v.Contexts = append(v.Contexts, fmt.Sprintf("%s %s %s v%d %v", c.Path, c.Type, c.Tenant, c.Version, c.Labels))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Records("test", func(k string, val []byte) error {
		v.Records[k] = string(val)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// converged waits until every running replica's model is at the same
// last sequence number as the leader, then checks they show the same.
func (h *harness) converged() view {
	h.t.Helper()
	var want uint64
	tstest.WaitFor(h.t, harnessTimeout, "replicas at the same sequence number", func() bool {
		want = 0
		for _, r := range h.replicas() {
			if r.up() {
				want = max(want, r.m.LastSeq())
			}
		}
		for _, r := range h.replicas() {
			if r.up() && r.m.LastSeq() != want {
				return false
			}
		}
		return true
	})
	var ref view
	var refID string
	for _, r := range h.replicas() {
		if !r.up() {
			continue
		}
		v := r.view(h.t)
		if refID == "" {
			ref, refID = v, r.id
			continue
		}
		if !reflect.DeepEqual(v, ref) {
			h.t.Fatalf("%s and %s differ:\n%s: %+v\n%s: %+v", refID, r.id, refID, ref, r.id, v)
		}
	}
	return ref
}

// followers returns the replicas of reps other than leader, in order.
func followers(reps []*replica, leader *replica) []*replica {
	var fs []*replica
	for _, r := range reps {
		if r != leader {
			fs = append(fs, r)
		}
	}
	return fs
}

// logWaiter reads r's log after what it holds now, waiting for an entry
// (up to harnessTimeout), and sends what it read.
func logWaiter(r *replica) <-chan []model.Entry {
	woke := make(chan []model.Entry, 1)
	m := r.m
	after := m.LastSeq()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), harnessTimeout)
		defer cancel()
		es, _ := m.ReadLog(ctx, after, 100)
		woke <- es
	}()
	return woke
}
