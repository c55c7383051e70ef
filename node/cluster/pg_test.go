package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
	"github.com/strata-dm/strata/tests/tcpproxy"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The PostgreSQL mode in the in-process harness: the replicas share one
// database of the test's PostgreSQL server; each replica's writer
// connects through a fault proxy of its own (pgHarness.proxy), its
// reader directly.

type pgHarness struct {
	*harness
	dsn     string
	mu      sync.Mutex
	proxies map[string]*tcpproxy.Proxy
}

// newPGHarness is newHarness in PostgreSQL mode; tune, when not nil, is
// applied after the mode is set.
func newPGHarness(t *testing.T, tune func(*Config)) *pgHarness {
	t.Helper()
	// Before the replicas: dropped after them.
	return newPGHarnessOn(t, pgtest.Shared(t).NewDatabase(t), tune)
}

// newPGHarnessOn is newPGHarness on the database at dsn.
func newPGHarnessOn(t *testing.T, dsn string, tune func(*Config)) *pgHarness {
	t.Helper()
	ph := &pgHarness{dsn: dsn, proxies: map[string]*tcpproxy.Proxy{}}
	ph.harness = newHarness(t, func(c *Config) {
		c.Postgres = &PostgresMode{
			Store:      store.PostgresOptions{DSN: dsn, ClaimWait: time.Second},
			FollowPoll: 200 * time.Millisecond,
			writerDSN:  ph.writerDSN(c.ID),
		}
		if tune != nil {
			tune(c)
		}
	})
	return ph
}

// writerDSN is the DSN through the replica's writer proxy (made on first
// use; kept across the replica's restarts).
func (ph *pgHarness) writerDSN(id string) string {
	t := ph.t
	u, err := url.Parse(ph.dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := ph.proxy(id)
	if p == nil {
		if p, err = tcpproxy.New("127.0.0.1:0", u.Host); err != nil {
			t.Fatal(err)
		}
		ph.mu.Lock()
		ph.proxies[id] = p
		ph.mu.Unlock()
		t.Cleanup(func() { p.Close() })
	}
	u.Host = p.Addr()
	return u.String()
}

func (ph *pgHarness) proxy(id string) *tcpproxy.Proxy {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.proxies[id]
}

// fence reads the database's fence.
func (ph *pgHarness) fence(r *replica) (uint64, string) {
	ph.t.Helper()
	term, holder, err := r.c.pg.reader.Fence(context.Background())
	if err != nil {
		ph.t.Fatal(err)
	}
	return term, holder
}

// otherLeader waits for a replica other than old to lead, and returns it.
func (ph *pgHarness) otherLeader(old *replica) *replica {
	ph.t.Helper()
	var l *replica
	tstest.WaitFor(ph.t, harnessTimeout, "another replica leading", func() bool {
		for _, r := range ph.replicas() {
			if r != old && r.up() && r.c.IsLeader() {
				l = r
				return true
			}
		}
		return false
	})
	return l
}

// wantEverywhere checks that every running replica's model shows each
// acknowledged entry: in its change log (what its change streams serve)
// and, for a put, through Get.
func (ph *pgHarness) wantEverywhere(acked []model.Entry) {
	ph.t.Helper()
	v := ph.converged()
	have := map[string]bool{}
	for _, l := range v.Log {
		have[l] = true
	}
	for _, e := range acked {
		if !have[fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant)] {
			ph.t.Fatalf("acknowledged entry %d %s lost", e.Seq, e.Mutation.Path)
		}
	}
	for _, r := range ph.replicas() {
		if !r.up() {
			continue
		}
		for _, e := range acked {
			if e.Mutation.Op != model.OpPut {
				continue
			}
			if _, err := r.m.Get(e.Mutation.Path); err != nil {
				ph.t.Errorf("%s: acknowledged %s: %v", r.id, e.Mutation.Path, err)
			}
		}
	}
}

// Writes through any replica reach the one writer; every replica's model
// follows its commits: Get shows them (no stale cache), OnCommit hooks
// and log readers (the change streams) see every entry, in order.
func TestPGReplicasFollowTheWriter(t *testing.T) {
	ph := newPGHarness(t, nil)
	reps := ph.cluster(3)
	leader := ph.leader()
	if term, holder := ph.fence(leader); holder != leader.id || term != leader.c.raft().CurrentTerm() {
		t.Fatalf("fence at term %d of %q; the leader is %s at term %d", term, holder, leader.id, leader.c.raft().CurrentTerm())
	}
	follower := followers(reps, leader)[0]
	// A follower's log reader wakes for what the writer commits.
	woke := logWaiter(follower)
	// Cached on the follower before it changes.
	ph.write(put("/devices/a", "v", "1"))
	tstest.WaitForErr(t, harnessTimeout, "the follower shows /devices/a", func() (bool, error) {
		_, err := follower.m.Get("/devices/a")
		return err == nil, err
	})
	var (
		mu    sync.Mutex
		acked []model.Entry
		wg    sync.WaitGroup
	)
	for w, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				p := fmt.Sprintf("/devices/w%d-%d", w, i)
				// Through this replica: a follower forwards to the leader.
				es, err := r.model().Apply(context.Background(), put(p, "i", fmt.Sprint(i)),
					model.Mutation{Op: model.OpEvent, Path: model.Path(p), Event: &model.Event{Name: "boot", Level: model.LevelInfo}})
				if err != nil {
					t.Errorf("write through %s: %v", r.id, err)
					return
				}
				mu.Lock()
				acked = append(acked, es...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	acked = append(acked, ph.write(put("/devices/a", "v", "2"))...)
	ph.write(model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "test", Key: "k", Value: []byte("v")}})
	ph.wantEverywhere(acked)
	ph.write(model.Mutation{Op: model.OpDelete, Path: "/devices/w0-0"})
	v := ph.converged()
	select {
	case es := <-woke:
		if len(es) == 0 {
			t.Fatal("the follower's log reader woke with nothing")
		}
	case <-time.After(harnessTimeout):
		t.Fatal("the follower's log reader never woke")
	}
	for _, r := range reps {
		if got := r.entries.Load(); got != int64(len(v.Log)) {
			t.Errorf("%s: OnCommit saw %d entries, the log holds %d", r.id, got, len(v.Log))
		}
		if c, err := r.m.Get("/devices/a"); err != nil || c.Labels["v"] != "2" {
			t.Errorf("%s: /devices/a = %+v, %v; want label v=2", r.id, c, err)
		}
		if _, err := r.m.Get("/devices/w0-0"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("%s: a deleted context: %v", r.id, err)
		}
		if r != leader && r.c.pg.writer.FenceStatus().Term != 0 {
			t.Errorf("follower %s claimed the fence", r.id)
		}
		// A linearizable read on any replica shows the last write.
		if err := r.c.ReadBarrier(context.Background()); err != nil {
			t.Fatalf("%s: read barrier: %v", r.id, err)
		}
		if r.m.LastSeq() != v.Last {
			t.Errorf("%s after a read barrier: at %d, the log at %d", r.id, r.m.LastSeq(), v.Last)
		}
	}
	// A follower's store is read-only at the server.
	if err := follower.c.pg.reader.Commit(&model.Batch{Entries: []model.Entry{{Seq: v.Last + 1}}}); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("a commit through a follower's reader: %v", err)
	}
}

// The leader killed abruptly while clients write through every replica:
// another is elected, claims the database with its term before it serves
// a write, and writes; no acknowledged write is lost; the killed replica,
// restarted, follows again.
func TestPGLeaderKilled(t *testing.T) {
	ph := newPGHarness(t, nil)
	ph.cluster(3)
	var (
		mu    sync.Mutex
		acked []model.Entry
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				es, err := ph.tryWrite(put(fmt.Sprintf("/devices/c%d-%d", w, i), "i", fmt.Sprint(i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, es...)
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for round := range 2 {
		tstest.WaitFor(t, harnessTimeout, "writes acknowledged", func() bool { return count() >= 30*(round+1) })
		old := ph.leader()
		oldTerm, _ := ph.fence(old)
		old.kill()
		n := count()
		l := ph.otherLeader(old)
		term, holder := ph.fence(l)
		if holder != l.id || term <= oldTerm || term != l.c.raft().CurrentTerm() {
			t.Fatalf("round %d: fence at term %d of %q; new leader %s at term %d, old term %d", round, term, holder, l.id, l.c.raft().CurrentTerm(), oldTerm)
		}
		if got := testutil.ToFloat64(l.c.pg.claims.WithLabelValues("claimed")); got < 1 {
			t.Fatalf("round %d: the new leader counted %v claims", round, got)
		}
		tstest.WaitFor(t, harnessTimeout, "writes acknowledged by the new leader", func() bool { return count() >= n+20 })
		old.start()
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	ph.wantEverywhere(acked)
}

// partitionWriter cuts r's writer off PostgreSQL (bytes held, as a
// network partition holds them) and starts a write on r's model; it
// returns once the commit is in flight, and the write's outcome on the
// channel.
func (ph *pgHarness) inFlightWrite(r *replica, m model.Mutation) <-chan error {
	ph.t.Helper()
	ph.proxy(r.id).Partition(true)
	// Healed before the replicas stop (cleanups run last first): a
	// replica's model waits for its commit in flight when it closes.
	ph.t.Cleanup(func() { ph.proxy(r.id).Partition(false) })
	out := make(chan error, 1)
	go func() {
		_, err := r.model().Apply(context.Background(), m)
		out <- err
	}()
	tstest.WaitFor(ph.t, harnessTimeout, "the commit in flight", func() bool { return r.c.pg.committing.Load() > 0 })
	return out
}

// A leader's commit in flight when it is deposed (its writer cut off
// PostgreSQL with the commit on the wire, itself cut off the other
// replicas) reaches PostgreSQL after the new leader claimed the
// database: it is refused with ErrFenced, never acknowledged, and writes
// nothing; the deposed replica stops writing and follows again.
func TestPGDeposedInFlightCommitFenced(t *testing.T) {
	ph := newPGHarness(t, nil)
	ph.cluster(3)
	var acked []model.Entry
	for i := range 10 {
		acked = append(acked, ph.write(put(fmt.Sprintf("/devices/a%d", i)))...)
	}
	old := ph.leader()
	oldTerm, _ := ph.fence(old)
	res := ph.inFlightWrite(old, put("/devices/lost"))
	old.c.cutOff(true)
	l := ph.otherLeader(old)
	if term, holder := ph.fence(l); holder != l.id || term <= oldTerm {
		t.Fatalf("fence at term %d of %q after %s was elected", term, holder, l.id)
	}
	// Through the new leader: the deposed one's model holds the next
	// batch behind the commit in flight.
	acked = append(acked, mustApply(t, l, put("/devices/after"))...)
	ph.proxy(old.id).Partition(false) // the commit reaches PostgreSQL
	select {
	case err := <-res:
		if !errors.Is(err, store.ErrFenced) || !errors.Is(err, model.ErrNotLeader) {
			t.Fatalf("the deposed leader's in-flight write: %v; want ErrFenced", err)
		}
	case <-time.After(harnessTimeout):
		t.Fatal("the deposed leader's in-flight write never ended")
	}
	if got := testutil.ToFloat64(old.c.pg.fencedCommits); got != 1 {
		t.Fatalf("fenced commits counted: %v, want 1", got)
	}
	if old.c.IsLeader() {
		t.Fatal("the fenced replica still serves writes")
	}
	old.c.cutOff(false)
	acked = append(acked, ph.write(put("/devices/healed"))...)
	ph.wantEverywhere(acked)
	for _, r := range ph.replicas() {
		if _, err := r.m.Get("/devices/lost"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("%s shows the refused write: %v", r.id, err)
		}
	}
}

// A leader cut off the other replicas keeps believing it leads until its
// lease runs out; meanwhile the others elect a new leader, which claims
// the database. The deposed leader, still sure it leads, cannot commit:
// ErrFenced, nothing written, and it stops serving writes at once.
func TestPGDeposedLeaderStillBelievingCannotCommit(t *testing.T) {
	// r3 will lead with a long lease (heartbeats every 2-4 s, so the
	// others wait 5 s before they call an election while it leads).
	ph := newPGHarness(t, func(c *Config) {
		if c.ID == "r3" {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 20*time.Second, 20*time.Second, 20*time.Second
		}
	})
	reps := ph.cluster(3)
	for _, r := range reps[:2] {
		rc := r.c.raft().ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = 5*time.Second, 5*time.Second
		if err := r.c.raft().ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	old := reps[2]
	l := ph.leader()
	if err := l.c.raft().LeadershipTransferToServer(raft.ServerID(old.id), raft.ServerAddress(old.addr)).Error(); err != nil {
		t.Fatal(err)
	}
	if got := ph.leader(); got != old {
		t.Fatalf("%s leads, not %s", got.id, old.id)
	}
	var acked []model.Entry
	for i := range 5 {
		acked = append(acked, ph.write(put(fmt.Sprintf("/devices/a%d", i)))...)
	}
	old.c.cutOff(true)
	// Cut off, r3 sends no heartbeat: the others may elect at once.
	for _, r := range reps[:2] {
		rc := r.c.raft().ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
		if err := r.c.raft().ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	l = ph.otherLeader(old)
	if _, holder := ph.fence(l); holder != l.id {
		t.Fatalf("the fence names %q, the new leader is %s", holder, l.id)
	}
	if !old.c.IsLeader() {
		t.Fatal("precondition: the cut-off leader stopped believing it leads before the new leader claimed (its lease ran out): nothing to test")
	}
	_, err := old.m.Apply(context.Background(), put("/devices/split-brain"))
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a write on the deposed leader that believes it leads: %v; want ErrFenced", err)
	}
	if old.c.IsLeader() {
		t.Fatal("the fenced replica still serves writes")
	}
	if got := testutil.ToFloat64(old.c.pg.fencedCommits); got != 1 {
		t.Fatalf("fenced commits counted: %v, want 1", got)
	}
	acked = append(acked, mustApply(t, l, put("/devices/after"))...)
	old.c.cutOff(false)
	ph.wantEverywhere(acked)
	for _, r := range ph.replicas() {
		if _, err := r.m.Get("/devices/split-brain"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("%s shows the refused write: %v", r.id, err)
		}
	}
}

func mustApply(t *testing.T, r *replica, muts ...model.Mutation) []model.Entry {
	t.Helper()
	es, err := r.model().Apply(context.Background(), muts...)
	if err != nil {
		t.Fatalf("write through %s: %v", r.id, err)
	}
	return es
}

// The PostgreSQL primary down for every replica: writes fail (not
// acknowledged), Raft keeps its leader, and once the primary is back
// writes go on and every replica's model follows again from where it
// stopped.
func TestPGPrimaryRestart(t *testing.T) {
	if pgtest.BinDir() == "" {
		pgtest.Missing(t)
	}
	srv, err := pgtest.Start() // its own server: the test stops it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ph := newPGHarnessOn(t, srv.NewDatabase(t), nil)
	ph.cluster(3)
	var acked []model.Entry
	for i := range 10 {
		acked = append(acked, ph.write(put(fmt.Sprintf("/devices/a%d", i)))...)
	}
	leader := ph.leader()
	srv.Shutdown()
	if _, err := leader.m.Apply(context.Background(), put("/devices/down")); err == nil {
		t.Fatal("a write was acknowledged with the primary down")
	}
	for _, r := range ph.replicas() {
		if err := r.c.Ready(); err != nil {
			t.Fatalf("%s not ready with the primary down: %v", r.id, err)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	tstest.WaitForErr(t, harnessTimeout, "a write once the primary is back", func() (bool, error) {
		es, err := ph.tryWrite(put("/devices/back"))
		if err == nil {
			acked = append(acked, es...)
		}
		return err == nil, err
	})
	ph.wantEverywhere(acked)
	for _, r := range ph.replicas() {
		if _, err := r.m.Get("/devices/down"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("%s shows the write refused while the primary was down: %v", r.id, err)
		}
	}
}

// A leader whose writer cannot reach PostgreSQL (a silent link: its
// commit hangs) while the others can hands leadership over after the
// writer timeout; the new leader claims and writes, and the old leader's
// hung commit, once its link heals, is refused by the fence.
func TestPGLeaderCutOffPrimaryHandsOver(t *testing.T) {
	ph := newPGHarness(t, func(c *Config) { c.Postgres.WriterTimeout = time.Second })
	ph.cluster(3)
	var acked []model.Entry
	for i := range 5 {
		acked = append(acked, ph.write(put(fmt.Sprintf("/devices/a%d", i)))...)
	}
	old := ph.leader()
	res := ph.inFlightWrite(old, put("/devices/hung"))
	l := ph.otherLeader(old)
	if _, holder := ph.fence(l); holder != l.id {
		t.Fatalf("the fence names %q, the new leader is %s", holder, l.id)
	}
	acked = append(acked, mustApply(t, l, put("/devices/after"))...)
	ph.proxy(old.id).Partition(false)
	select {
	case err := <-res:
		if !errors.Is(err, store.ErrFenced) {
			t.Fatalf("the old leader's hung write: %v; want ErrFenced", err)
		}
	case <-time.After(harnessTimeout):
		t.Fatal("the old leader's hung write never ended")
	}
	ph.wantEverywhere(acked)
	for _, r := range ph.replicas() {
		if _, err := r.m.Get("/devices/hung"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("%s shows the refused write: %v", r.id, err)
		}
	}
}
