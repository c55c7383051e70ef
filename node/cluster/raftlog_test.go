package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// The Raft log stores (raftlog.go): raft.LogStore's and
// raft.StableStore's contract, next to raft.InmemStore; crashes of a
// process appending, truncating and compacting; the BoltDB log copied
// into a WAL.

// logData is entry index's payload in generation gen (a generation is
// what a tail truncation replaces): its own, of a length that varies.
func logData(index, gen uint64) []byte {
	head := fmt.Sprintf("%d/%d/", index, gen)
	return append([]byte(head), bytes.Repeat([]byte{byte('a' + index%26)}, int(index*7919%1500))...)
}

func logEntries(first, last, gen uint64) []*raft.Log {
	var ls []*raft.Log
	for i := first; i <= last; i++ {
		ls = append(ls, &raft.Log{Index: i, Term: gen, Type: raft.LogCommand, Data: logData(i, gen),
			Extensions: []byte("x"), AppendedAt: time.Unix(1700000000, int64(i)).UTC()})
	}
	return ls
}

// genOf is the generation an entry read back was written in, checking
// its payload.
func genOf(t *testing.T, l *raft.Log) uint64 {
	t.Helper()
	var i, g uint64
	if _, err := fmt.Sscanf(string(l.Data), "%d/%d/", &i, &g); err != nil || i != l.Index || !bytes.Equal(l.Data, logData(i, g)) || l.Term != g {
		t.Fatalf("entry %d: payload %.40q… (term %d) is not its own", l.Index, l.Data, l.Term)
	}
	return g
}

func openKind(t *testing.T, dir, kind string) raftLog {
	t.Helper()
	s, err := openRaftLog(dir, kind, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func smallSegments(t *testing.T) {
	old := segmentBytes
	segmentBytes = 64 << 10
	t.Cleanup(func() { segmentBytes = old })
}

// Each store behaves as raft.InmemStore does where raft relies on it,
// before and after a reopen.
func TestRaftLogContract(t *testing.T) {
	smallSegments(t)
	for _, kind := range []string{RaftLogWAL, RaftLogBoltDB} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			s := openKind(t, dir, kind)
			defer func() { s.Close() }()
			ref := raft.NewInmemStore()
			both := func(f func(st raft.LogStore) error) {
				t.Helper()
				if err := f(ref); err != nil {
					t.Fatal(err)
				}
				if err := f(s); err != nil {
					t.Fatal(err)
				}
			}
			same := func(what string) {
				t.Helper()
				rf, _ := ref.FirstIndex()
				rl, _ := ref.LastIndex()
				f, err := s.FirstIndex()
				if err != nil {
					t.Fatal(err)
				}
				l, err := s.LastIndex()
				if err != nil {
					t.Fatal(err)
				}
				if f != rf || l != rl {
					t.Fatalf("%s: first, last %d, %d; want %d, %d", what, f, l, rf, rl)
				}
				for i := uint64(0); i <= rl+2; i++ {
					var want, got raft.Log
					werr := ref.GetLog(i, &want)
					gerr := s.GetLog(i, &got)
					if !errors.Is(werr, raft.ErrLogNotFound) && werr != nil {
						t.Fatal(werr)
					}
					if errors.Is(werr, raft.ErrLogNotFound) {
						if !errors.Is(gerr, raft.ErrLogNotFound) {
							t.Fatalf("%s: entry %d: %v (index %d), want raft.ErrLogNotFound", what, i, gerr, got.Index)
						}
						continue
					}
					if gerr != nil {
						t.Fatalf("%s: entry %d: %v", what, i, gerr)
					}
					if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
						!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
						t.Fatalf("%s: entry %d: %+v, want %+v", what, i, got, want)
					}
				}
			}
			reopen := func() {
				t.Helper()
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openKind(t, dir, kind)
			}
			same("empty")
			both(func(st raft.LogStore) error { return st.StoreLogs(logEntries(1, 300, 1)) })
			both(func(st raft.LogStore) error { return st.StoreLog(logEntries(301, 301, 1)[0]) })
			same("appended")
			// A compaction from the head, across sealed segments.
			both(func(st raft.LogStore) error { return st.DeleteRange(1, 120) })
			same("head deleted")
			// A conflict: the tail replaced by a later term's entries.
			both(func(st raft.LogStore) error { return st.DeleteRange(250, 301) })
			same("tail deleted")
			both(func(st raft.LogStore) error { return st.StoreLogs(logEntries(250, 400, 2)) })
			same("tail replaced")
			reopen()
			same("reopened")
			both(func(st raft.LogStore) error { return st.DeleteRange(121, 399) })
			same("all but the last deleted")
			// Raft's removeOldLogs after installing a snapshot.
			both(func(st raft.LogStore) error { return st.DeleteRange(400, 400) })
			same("all deleted")
			both(func(st raft.LogStore) error { return st.StoreLogs(logEntries(1000, 1010, 3)) })
			same("appended after a snapshot")
			reopen()
			same("reopened again")

			// The stable store: a missing key is nil or zero, with no
			// error or raft's "not found".
			for _, k := range []string{"CurrentTerm", "LastVoteCand"} {
				v, err := s.Get([]byte(k))
				if v != nil || err != nil && err.Error() != "not found" {
					t.Fatalf("Get(%s) on a new store: %q, %v", k, v, err)
				}
				n, err := s.GetUint64([]byte(k))
				if n != 0 || err != nil && err.Error() != "not found" {
					t.Fatalf("GetUint64(%s) on a new store: %d, %v", k, n, err)
				}
			}
			if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
				t.Fatal(err)
			}
			if err := s.Set([]byte("LastVoteCand"), []byte("r2")); err != nil {
				t.Fatal(err)
			}
			reopen()
			if n, err := s.GetUint64([]byte("CurrentTerm")); n != 7 || err != nil {
				t.Fatalf("CurrentTerm after a reopen: %d, %v", n, err)
			}
			if v, err := s.Get([]byte("LastVoteCand")); string(v) != "r2" || err != nil {
				t.Fatalf("LastVoteCand after a reopen: %q, %v", v, err)
			}
		})
	}
}

// The WAL takes an append after a gap as the start of a new log (raft
// writes one only after a snapshot that covers what came before).
func TestRaftLogWALGap(t *testing.T) {
	s := openKind(t, t.TempDir(), RaftLogWAL)
	defer s.Close()
	if err := s.StoreLogs(logEntries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(logEntries(20, 25, 1)); err != nil {
		t.Fatal(err)
	}
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	var e raft.Log
	if f != 20 || l != 25 || !errors.Is(s.GetLog(5, &e), raft.ErrLogNotFound) {
		t.Fatalf("after a gap: first %d, last %d", f, l)
	}
}

// Close releases the WAL's files: the same process opens it again at
// once (the meta database's lock is released).
func TestRaftLogWALCloseReleases(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		done := make(chan error, 1)
		go func() {
			s, err := openRaftLog(dir, RaftLogWAL, slog.New(slog.DiscardHandler))
			if err == nil {
				err = errors.Join(s.StoreLogs(logEntries(uint64(i*5+1), uint64(i*5+5), 1)), s.Close())
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(harnessTimeout):
			t.Fatalf("open %d: still waiting (a lock left by Close?)", i)
		}
	}
}

// A second open of a log in use fails at once (a second process on the
// same data directory).
func TestRaftLogInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := openFileLog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openFileLog(dir, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	s, err = openFileLog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// A replica's BoltDB log and stable keys are copied into a WAL at its
// first open with RaftLogWAL; its raft.db is kept aside, and BoltDB can
// no longer be selected.
func TestRaftLogMigratesBoltDB(t *testing.T) {
	dir := t.TempDir()
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFileName)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.StoreLogs(logEntries(1, 1000, 4)); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	b.SetUint64([]byte("CurrentTerm"), 9)
	b.SetUint64([]byte("LastVoteTerm"), 8)
	b.Set([]byte("LastVoteCand"), []byte("r3"))
	b.Close()
	// A copy interrupted earlier left a partial WAL aside.
	os.MkdirAll(filepath.Join(dir, migratingName), 0o700)
	os.WriteFile(filepath.Join(dir, migratingName, "junk"), []byte("partial"), 0o600)

	s := openKind(t, dir, "")
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != 101 || l != 1000 {
		t.Fatalf("copied log: first %d, last %d", f, l)
	}
	for i := f; i <= l; i++ {
		var e raft.Log
		if err := s.GetLog(i, &e); err != nil {
			t.Fatal(err)
		}
		genOf(t, &e)
	}
	if n, _ := s.GetUint64([]byte("CurrentTerm")); n != 9 {
		t.Fatalf("CurrentTerm %d", n)
	}
	if n, _ := s.GetUint64([]byte("LastVoteTerm")); n != 8 {
		t.Fatalf("LastVoteTerm %d", n)
	}
	if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "r3" {
		t.Fatalf("LastVoteCand %q", v)
	}
	s.Close()
	for _, name := range []string{boltFileName + boltMigratedExt, walDirName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{boltFileName, migratingName} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left: %v", name, err)
		}
	}
	if _, err := openRaftLog(dir, RaftLogBoltDB, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("BoltDB selected over a WAL")
	}
	openKind(t, dir, RaftLogWAL).Close()
}

// The crash tests: a process of its own (this test binary again) works
// on a WAL with small segments and prints what returned; the test kills
// it with SIGKILL at a random moment and checks the WAL it left.

const raftLogChildEnv = "STRATA_RAFTLOG_TEST_CHILD"

// TestRaftLogChild is that process. It prints, one a line:
//
//	ACK first last gen     StoreLogs of first..last returned
//	TRUNCATING from gen    DeleteRange(from, last) called; appends after it are of gen
//	TRUNC from gen         it returned
//	HEADING to             DeleteRange(first, to-1) called
//	HEAD to                it returned
func TestRaftLogChild(t *testing.T) {
	dir := os.Getenv(raftLogChildEnv)
	if dir == "" {
		t.Skip("the process of the Raft log's crash tests")
	}
	smallSegments(t)
	s, err := openRaftLog(dir, RaftLogWAL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	last, _ := s.LastIndex()
	gen := uint64(1)
	if last > 0 {
		var l raft.Log
		if err := s.GetLog(last, &l); err != nil {
			t.Fatal(err)
		}
		gen = l.Term
	}
	for {
		first, _ := s.FirstIndex()
		switch r := rand.IntN(20); {
		case r == 0 && last > first+10:
			// A conflict: truncate the tail, up to 3 segments back.
			from := last - uint64(rand.IntN(int(min(last-first, 150))))
			gen++
			say("TRUNCATING %d %d", from, gen)
			if err := s.DeleteRange(from, last); err != nil {
				t.Fatal(err)
			}
			say("TRUNC %d %d", from, gen)
			last = from - 1
		case r == 1 && last > first+300:
			to := first + uint64(rand.IntN(200))
			say("HEADING %d", to)
			if err := s.DeleteRange(first, to-1); err != nil {
				t.Fatal(err)
			}
			say("HEAD %d", to)
		default:
			n := uint64(1 + rand.IntN(40))
			if err := s.StoreLogs(logEntries(last+1, last+n, gen)); err != nil {
				t.Fatal(err)
			}
			say("ACK %d %d %d", last+1, last+n, gen)
			last += n
		}
	}
}

// raftLogState is what the child's lines say the log must hold.
type raftLogState struct {
	gens         map[uint64]uint64 // acknowledged entries' generations
	first, acked uint64            // first index (compacted to), last acknowledged
	gen          uint64            // the generation of appends in flight
	truncating   uint64            // a tail truncation from here in flight
	heading      uint64            // a head compaction to here in flight
}

// line takes one of the child's lines, false if it is not one.
func (st *raftLogState) line(l string) bool {
	f := strings.Fields(l)
	if len(f) < 2 {
		return false
	}
	n := make([]uint64, len(f)-1)
	for i := range n {
		fmt.Sscan(f[i+1], &n[i])
	}
	switch f[0] {
	case "ACK":
		for i := n[0]; i <= n[1]; i++ {
			st.gens[i] = n[2]
		}
		st.acked, st.gen = n[1], n[2]
	case "TRUNCATING":
		st.truncating = n[0]
	case "TRUNC":
		for i := n[0]; i <= st.acked; i++ {
			delete(st.gens, i)
		}
		st.acked, st.gen, st.truncating = n[0]-1, n[1], 0
	case "HEADING":
		st.heading = n[0]
	case "HEAD":
		for i := st.first; i < n[0]; i++ {
			delete(st.gens, i)
		}
		st.first, st.heading = n[0], 0
	default:
		return false
	}
	return true
}

// check verifies the reopened log against the lines.
func (st *raftLogState) check(t *testing.T, s raftLog) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case st.heading == 0 && first != st.first && st.first > 0,
		st.heading > 0 && (first < st.first || first > st.heading):
		t.Fatalf("first index %d; compacted to %d (in flight: %d)", first, st.first, st.heading)
	case last < st.acked && (st.truncating == 0 || last+1 < st.truncating):
		t.Fatalf("last index %d; %d acknowledged (a truncation from %d in flight)", last, st.acked, st.truncating)
	}
	var e raft.Log
	if first > 1 && !errors.Is(s.GetLog(first-1, &e), raft.ErrLogNotFound) {
		t.Fatalf("entry %d below the first index %d read", first-1, first)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d of %d..%d: %v", i, first, last, err)
		}
		g := genOf(t, &l)
		if want, ok := st.gens[i]; ok && g != want {
			t.Fatalf("entry %d: generation %d, acknowledged %d", i, g, want)
		}
		if i > st.acked && g != st.gen && (st.truncating == 0 || i >= st.truncating) {
			t.Fatalf("entry %d past the acknowledged %d: generation %d, in flight %d", i, st.acked, g, st.gen)
		}
	}
}

// A process appending, truncating its log's tail (as a follower does on
// a conflict) and compacting its head, killed at random moments: after
// each kill the log opens, holds every entry whose append returned,
// with the latest generation, nothing of a truncated tail, nothing
// below its first index, and takes appends again.
func TestRaftLogSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	smallSegments(t)
	dir := t.TempDir()
	st := &raftLogState{gens: map[uint64]uint64{}}
	rounds := 12
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestRaftLogChild$")
		cmd.Env = append(os.Environ(), raftLogChildEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		want := 20 + rand.IntN(400)
		n := 0
		var other []string // a failure's output
		for ; n < want && sc.Scan(); n++ {
			if !st.line(sc.Text()) {
				other = append(other, sc.Text())
			}
		}
		cmd.Process.Kill()
		for sc.Scan() { // what it printed before it died
			if !st.line(sc.Text()) {
				other = append(other, sc.Text())
			}
		}
		cmd.Wait()
		if n < want {
			t.Fatalf("round %d: the process ended after %d lines: %v\n%s\n%s", round, n, sc.Err(), strings.Join(other, "\n"), stderr.Bytes())
		}
		s := openKind(t, dir, RaftLogWAL)
		st.check(t, s)
		// What the log holds now is the state the next round starts from.
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		st.gens = map[uint64]uint64{}
		for i := first; i <= last; i++ {
			var l raft.Log
			s.GetLog(i, &l)
			st.gens[i] = genOf(t, &l)
		}
		st.first, st.acked, st.truncating, st.heading = first, last, 0, 0
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, walDirName, "*"+segmentExt))
		t.Logf("round %d: log %d..%d over %d segment files", round, first, last, len(segs))
	}
}

// The entry decoder reads what a file holds, which may be corrupt: it
// errs, never panics, and what it decodes encodes back to the same bytes.
func FuzzRaftLogDecode(f *testing.F) {
	for _, l := range logEntries(1, 3, 1) {
		f.Add(appendFrame(nil, l))
	}
	f.Add(appendFrame(nil, &raft.Log{Index: 1}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var l raft.Log
		n, err := decodeFrame(data, &l)
		if err != nil {
			return
		}
		if again := appendFrame(nil, &l); !bytes.Equal(again, data[:n]) {
			t.Fatalf("decoded %+v from %x, which encodes as %x", l, data[:n], again)
		}
	})
}

// A log whose last segment holds arbitrary bytes at some offset (a torn
// or corrupt append) opens or errs, never panics; the entries it then
// reads are the ones written, and it takes appends again.
func FuzzRaftLogCorruptTail(f *testing.F) {
	old := segmentBytes
	segmentBytes = 16 << 10
	f.Cleanup(func() { segmentBytes = old })
	f.Add(uint16(0), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint16(100), []byte("garbage"))
	f.Add(uint16(3000), bytes.Repeat([]byte{1}, 64))
	f.Fuzz(func(t *testing.T, at uint16, junk []byte) {
		dir := t.TempDir()
		s, err := openFileLog(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.StoreLogs(logEntries(1, 5, 1)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
		if len(segs) != 1 {
			t.Fatalf("%d segments", len(segs))
		}
		fh, err := os.OpenFile(segs[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteAt(junk, int64(at))
		fh.Close()
		s, err = openFileLog(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			return
		}
		defer s.Close()
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first > 1 || last > 5 {
			t.Fatalf("log %d..%d from 1..5", first, last)
		}
		for i := first; i <= last && i > 0; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			genOf(t, &l)
		}
		if err := s.StoreLogs(logEntries(last+1, last+3, 2)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s, err = openFileLog(dir, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		if l2, _ := s.LastIndex(); l2 != last+3 {
			t.Fatalf("appended to %d, reopened at %d", last+3, l2)
		}
	})
}

// A cluster whose replicas' Raft logs are in BoltDB (the store before)
// restarts on the default store, one replica at a time while writes go
// on: each copies its log and term at its first start, and the replicas
// converge with every write.
func TestClusterMovesRaftLogOffBoltDB(t *testing.T) {
	kind := RaftLogBoltDB
	var mu sync.Mutex
	h := newHarness(t, func(c *Config) {
		mu.Lock()
		c.RaftLog = kind
		mu.Unlock()
	})
	reps := h.cluster(3)
	for i := range 20 {
		h.write(put(fmt.Sprintf("/devices/before%d", i)))
	}
	h.converged()
	mu.Lock()
	kind = ""
	mu.Unlock()
	for _, r := range reps {
		r.kill()
		h.write(put("/devices/while-" + r.id))
		r.start()
		if _, err := os.Stat(filepath.Join(r.dir, "raft", boltFileName+boltMigratedExt)); err != nil {
			t.Fatalf("%s: %v", r.id, err)
		}
		h.converged()
	}
	for i := range 20 {
		h.write(put(fmt.Sprintf("/devices/after%d", i)))
	}
	if v := h.converged(); len(v.Contexts) < 43 {
		t.Fatalf("%d contexts", len(v.Contexts))
	}
}

// A kill between a segment's creation and the first append to it leaves
// an empty last segment: every entry before it still reads, whatever the
// number of segments.
func TestRaftLogEmptyLastSegment(t *testing.T) {
	smallSegments(t)
	for n := uint64(1); n <= 6; n++ {
		dir := t.TempDir()
		s := openKind(t, dir, RaftLogWAL)
		last := uint64(0)
		for range n {
			// Each batch fills most of a segment: one segment each.
			if err := s.StoreLogs(logEntries(last+1, last+40, 1)); err != nil {
				t.Fatal(err)
			}
			last += 40
		}
		s.Close()
		empty := filepath.Join(dir, walDirName, fmt.Sprintf("%020d%s", last+1, segmentExt))
		if err := os.WriteFile(empty, make([]byte, segmentBytes), 0o600); err != nil {
			t.Fatal(err)
		}
		s = openKind(t, dir, RaftLogWAL)
		for i := uint64(1); i <= last; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("%d segments and an empty one: entry %d: %v", n, i, err)
			}
		}
		if err := s.StoreLogs(logEntries(last+1, last+2, 1)); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// A compaction of the whole log cut by a crash after it recorded the new
// first index and before it deleted the segments: the log opens empty,
// and takes the next entry.
func TestRaftLogWholeCompactionCutShort(t *testing.T) {
	smallSegments(t)
	dir := t.TempDir()
	s, err := openFileLog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(logEntries(1, 100, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.writeStable(stableState{Keys: map[string][]byte{}, First: 101}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = openFileLog(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	var e raft.Log
	if f != 0 || l != 0 || !errors.Is(s.GetLog(50, &e), raft.ErrLogNotFound) {
		t.Fatalf("first %d, last %d", f, l)
	}
	if err := s.StoreLogs(logEntries(120, 121, 2)); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.FirstIndex(); f != 120 {
		t.Fatalf("first %d after an append at 120", f)
	}
}
