package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// The replica that TestKilledReplicaLosesNothing kills with SIGKILL runs
// in a process of its own (this test binary, run again): only a real
// kill leaves its files as a crash does, with the store's commits never
// synced and no Close.

const childEnv = "STRATA_CLUSTER_TEST_CHILD"

type childConfig struct {
	ID, Dir, Bind, Join string
	CA, Cert, Key       []byte
	// Wait bounds the join (the catch-up), harnessTimeout when 0.
	Wait time.Duration
}

// TestChildReplica is the replica process: it runs until killed, or
// until its standard input closes.
func TestChildReplica(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("the replica process of TestKilledReplicaLosesNothing")
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		t.Fatal(err)
	}
	tc, err := tls.X509KeyPair(cc.Cert, cc.Key)
	if err != nil {
		t.Fatal(err)
	}
	peak := &anonPeak{}
	go func() { // ends with the process
		for {
			peak.sample()
			time.Sleep(50 * time.Millisecond) // sampling memory, not synchronising
		}
	}()
	cfg := Config{ID: cc.ID, Dir: cc.Dir, Bind: cc.Bind, CAPEM: cc.CA, Cert: tc,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 20 * time.Millisecond,
		ApplyTimeout: 5 * time.Second, JoinTimeout: harnessTimeout}
	if cc.Wait > 0 {
		cfg.JoinTimeout = cc.Wait
	}
	cfg.Store.CacheMB = 8
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: c.Store(), Forward: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(m); err != nil {
		t.Fatal(err)
	}
	if has, err := c.HasState(); err != nil {
		t.Fatal(err)
	} else if !has {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.JoinTimeout)
		err := c.Join(ctx, cc.Join)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("READY %s\n", c.Address())
	io.Copy(io.Discard, os.Stdin)
	m.Close()
	c.Close()
	fmt.Printf("PEAK_ANON %d\n", peak.max())
}

// anonPeak samples the process's anonymous resident memory (its heap and
// stacks, not the files it maps) until the process ends.
type anonPeak struct {
	mu sync.Mutex
	n  int64
}

func (a *anonPeak) sample() {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			a.mu.Lock()
			a.n = max(a.n, kb<<10)
			a.mu.Unlock()
		}
	}
}

func (a *anonPeak) max() int64 {
	a.sample()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// child is a replica process.
type child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
	done  chan struct{}
	mu    sync.Mutex
	lines []string // what it printed
}

// startChild starts replica id in its own process, on dir, listening on
// bind; a replica without raft state joins through join.
func (h *harness) startChild(id, dir, bind, join string) *child {
	h.t.Helper()
	return h.startChildWait(id, dir, bind, join, harnessTimeout)
}

// startChildWait is startChild, waiting up to wait for the replica to be
// ready (joined and caught up).
func (h *harness) startChildWait(id, dir, bind, join string, wait time.Duration) *child {
	t := h.t
	t.Helper()
	pair, err := h.ca.IssueReplica(id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(childConfig{ID: id, Dir: dir, Bind: bind, Join: join,
		CA: h.ca.CertPEM, Cert: pair.CertPEM, Key: pair.KeyPEM, Wait: wait})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChildReplica$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	logf, err := os.OpenFile(filepath.Join(h.root, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- addr
			}
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		cmd.Wait()
	}()
	t.Cleanup(c.kill)
	select {
	case c.addr = <-ready:
	case <-c.done:
		log, _ := os.ReadFile(logf.Name())
		t.Fatalf("replica process %s ended before it was ready:\n%s", id, log)
	case <-time.After(wait):
		t.Fatalf("replica process %s not ready", id)
	}
	return c
}

// stop closes the process's standard input, so that it closes the
// replica, and waits for it to end.
func (c *child) stop() *os.ProcessState {
	c.stdin.Close()
	<-c.done
	return c.cmd.ProcessState
}

// printed returns the value of the line "KEY value" the process printed.
func (c *child) printed(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			return v
		}
	}
	return ""
}

// kill sends SIGKILL and waits for the process to end.
func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

// A replica killed with SIGKILL while leading under load, its store's
// commits never synced, loses nothing: after a restart on the same
// directory it resumes from the index its store holds, and every replica
// holds every acknowledged write, with one change log. Three rounds, each
// killing at a random moment of the load.
func TestKilledReplicaLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replica processes")
	}
	h := newHarness(t, nil)
	reps := h.cluster(2)
	dir := filepath.Join(h.root, "r3")
	bind := "127.0.0.1:0"
	var mu sync.Mutex
	var acked []model.Entry
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for round := range 3 {
		ch := h.startChild("r3", dir, bind, reps[0].addr)
		bind = ch.addr
		// Make it the leader, so that the kill takes the leader.
		tstest.WaitFor(t, harnessTimeout, "r3 leads", func() bool {
			for _, r := range reps {
				if id, _ := r.c.Leader(); id == "r3" {
					return true
				}
			}
			if l := h.leaderOrNil(); l != nil {
				l.c.raft().LeadershipTransferToServer("r3", raft.ServerAddress(ch.addr))
			}
			return false
		})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					// Through the followers, forwarded to the leader.
					es, err := h.tryWrite(put(fmt.Sprintf("/devices/k%d/w%d-%d", round, w, i), "i", fmt.Sprint(i)))
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
		at := count() + 50 + rand.IntN(300)
		tstest.WaitFor(t, harnessTimeout, "writes acknowledged before the kill", func() bool { return count() >= at })
		ch.kill()
		at = count() + 100
		tstest.WaitFor(t, harnessTimeout, "writes acknowledged after the kill", func() bool { return count() >= at })
		close(stop)
		wg.Wait()
	}
	// The last restart runs in this process, to compare its view.
	r3 := &replica{h: h, id: "r3", dir: dir, addr: bind}
	r3.start()
	h.mu.Lock()
	h.reps = append(h.reps, r3)
	h.mu.Unlock()
	t.Cleanup(r3.kill)
	v := h.converged()
	have := map[string]bool{}
	for _, l := range v.Log {
		have[l] = true
	}
	for _, e := range acked {
		if !have[fmt.Sprintf("%d %d %s %s", e.Seq, e.Mutation.Op, e.Mutation.Path, e.Mutation.Tenant)] {
			t.Fatalf("acknowledged entry %d %s lost", e.Seq, e.Mutation.Path)
		}
	}
	t.Logf("%d acknowledged writes over 3 kills of the leader, none lost; %d entries in the log", len(acked), len(v.Log))
}

// A replica whose machine stopped while its store was open unsynced
// finds the store refused at start (store.ErrUnsyncedCrash), replaces it
// with an empty one and gets everything back from the latest snapshot
// and the log after it.
func TestStoreRebuiltAfterMachineCrash(t *testing.T) {
	h := newHarness(t, nil)
	reps := h.cluster(3)
	for i := range 30 {
		h.write(put(fmt.Sprintf("/devices/a%d", i), "i", fmt.Sprint(i)))
	}
	victim := reps[2]
	h.converged()
	if err := victim.c.raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		h.write(put(fmt.Sprintf("/devices/b%d", i), "i", fmt.Sprint(i)))
	}
	h.converged()
	live, err := liveStoreDir(victim.dir)
	if err != nil {
		t.Fatal(err)
	}
	victim.kill()
	// As if the machine had stopped with the store open: its marker
	// names another boot.
	if err := os.WriteFile(filepath.Join(victim.dir, live, store.UnsyncedMarker), []byte("a-boot-before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		h.write(put(fmt.Sprintf("/devices/c%d", i), "i", fmt.Sprint(i)))
	}
	victim.start()
	if got := testutil.ToFloat64(victim.c.metrics.rebuilds); got != 1 {
		t.Fatalf("store rebuilds %v, want 1", got)
	}
	if _, err := os.Stat(filepath.Join(victim.dir, live)); live == victim.c.storeDir || err == nil {
		t.Fatalf("the refused store %s is still there (live %s, stat %v)", live, victim.c.storeDir, err)
	}
	v := h.converged()
	if len(v.Contexts) < 70 {
		t.Fatalf("%d contexts after the rebuild", len(v.Contexts))
	}
}
