package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// freeze stops every process of a test server, the postmaster first (so
// that it starts no more), then its children (each backend is a process
// group of its own), and returns the function that lets them run again. A
// frozen server accepts TCP connections (the kernel does) but never
// answers.
func freeze(t *testing.T, c *pgtest.Cluster) (thaw func()) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(c.Dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	pids := []int{postmaster}
	thawed := false
	thaw = func() {
		if !thawed {
			thawed = true
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	t.Cleanup(thaw) // before the server is stopped
	if err := syscall.Kill(postmaster, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for pid, st := range procStates(t) {
		if st.ppid == postmaster {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids[1:] {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	// Signals are delivered asynchronously: wait until all are stopped.
	tstest.WaitFor(t, 10*time.Second, "the server processes to stop", func() bool {
		states := procStates(t)
		for _, pid := range pids {
			if st, ok := states[pid]; ok && st.state != "T" {
				return false
			}
		}
		return true
	})
	return thaw
}

type procState struct {
	state string
	ppid  int
}

// procStates reads every process's state and parent from /proc.
func procStates(t *testing.T) map[int]procState {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]procState{}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // exited
		}
		// pid (comm) state ppid ...; comm may hold spaces.
		i := strings.LastIndexByte(string(raw), ')')
		fields := strings.Fields(string(raw[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		out[pid] = procState{state: fields[0], ppid: ppid}
	}
	return out
}

// TestReplicaHung: a replica that stops answering costs a read one
// ReplicaReadTimeout, then leaves rotation; reads go to the primary
// until it answers a check again.
func TestReplicaHung(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	// Checks every 50 ms, each bounded by 1 s: the read, which gives up
	// after 300 ms, finds the hang before any check can.
	f := newReplicaFixtureWith(t, func(o *PostgresOptions) { o.ReplicaReadTimeout = readTimeout })
	// A connection in the pool already, so that the read hangs in a
	// query rather than in connecting.
	if _, fromReplica := f.children(t); !fromReplica {
		t.Fatal("not reading from the replica")
	}
	thaw := freeze(t, f.replica)

	start := time.Now()
	names, fromReplica := f.children(t)
	took := time.Since(start)
	if fromReplica || !slices.Equal(names, []string{"a"}) {
		t.Fatalf("children with the replica hung = %v, from replica %v", names, fromReplica)
	}
	if took < readTimeout || took > readTimeout+5*time.Second {
		t.Fatalf("read took %v, want about %v", took, readTimeout)
	}
	st := f.status(t)
	if st.Healthy || !strings.Contains(st.LastError, "timed out") {
		t.Fatalf("status after a hung read = %+v", st)
	}
	// Out of rotation: the next reads go straight to the primary.
	start = time.Now()
	for range 3 {
		if _, fromReplica := f.children(t); fromReplica {
			t.Fatal("read from a replica out of rotation")
		}
	}
	if took := time.Since(start); took >= readTimeout {
		t.Fatalf("reads with the replica out of rotation took %v", took)
	}

	// ReadStale for other readers: the same bound.
	start = time.Now()
	var served string
	err := f.store.ReadStale(context.Background(), func(ctx context.Context, pool *pgxpool.Pool) error {
		served = "replica"
		if pool == f.store.Pool() {
			served = "primary"
		}
		return pool.QueryRow(ctx, `SELECT 1`).Scan(new(int))
	})
	if err != nil || served != "primary" {
		t.Fatalf("ReadStale = %v from %s", err, served)
	}

	thaw()
	// The first successful check brings it back.
	tstest.WaitForErr(t, 20*time.Second, "reads back on the replica", func() (bool, error) {
		if _, fromReplica := f.children(t); fromReplica {
			return true, nil
		}
		return false, errors.New(f.status(t).LastError)
	})
}
