package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// retained is what retention leaves on a replica: where its change log
// starts, the log from there (raw bytes), and every device's events.
type retained struct {
	First  uint64
	Log    []string
	Events map[string][]string
}

func (r *replica) retained(t *testing.T, devices []string) retained {
	t.Helper()
	db := r.c.Store().Badger()
	first, err := db.FirstSeq()
	if err != nil {
		t.Fatal(err)
	}
	v := retained{First: first, Events: map[string][]string{}}
	for after := first - 1; ; {
		es, err := r.c.Store().ReadLogRaw(after, 500)
		if err != nil {
			t.Fatalf("%s: raw log after %d: %v", r.id, after, err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			v.Log = append(v.Log, fmt.Sprintf("%d %x", e.Seq, e.Raw))
			after = e.Seq
		}
	}
	for _, d := range devices {
		evs, err := r.c.Store().Events(model.Path(d), model.EventQuery{Limit: 1000})
		if err != nil {
			t.Fatalf("%s: events of %s: %v", r.id, d, err)
		}
		for _, e := range evs {
			v.Events[d] = append(v.Events[d], fmt.Sprintf("%d %s %d", e.Seq, e.Name, e.Time.UnixNano()))
		}
	}
	return v
}

// sameRetained waits until every running replica is at the leader's
// applied index, then checks they hold the same events and change log.
func (h *harness) sameRetained(devices []string) retained {
	h.t.Helper()
	h.converged()
	l := h.leader()
	want := l.c.applied.Load()
	for _, r := range h.replicas() {
		if r.up() {
			waitApplied(h.t, r, want)
		}
	}
	ref := l.retained(h.t, devices)
	for _, r := range h.replicas() {
		if !r.up() || r == l {
			continue
		}
		if got := r.retained(h.t, devices); !reflect.DeepEqual(got, ref) {
			h.t.Fatalf("%s and the leader %s differ after retention:\n%s: %+v\n%s: %+v", r.id, l.id, l.id, ref, r.id, got)
		}
	}
	return ref
}

func waitApplied(t *testing.T, r *replica, idx uint64) {
	t.Helper()
	tstest.WaitFor(t, harnessTimeout, fmt.Sprintf("%s applies index %d", r.id, idx), func() bool {
		return r.c.applied.Load() >= idx
	})
}

// Event pruning and change-log compaction on the leader reach every
// replica through the log: every replica, including one that was down
// and catches up from the log, holds the same events and the same change
// log, the events the leader chose by its cutoff (not its own clock); a
// follower cannot prune on its own; nothing to prune proposes nothing; a replica that joins later and installs a snapshot
// taken after the compaction holds the same too.
func TestRetentionReplicated(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30 // only when asked
	})
	reps := h.cluster(3)
	leader := h.leader()
	down := followers(reps, leader)[0]
	now := time.Now()
	old, recent := now.Add(-2*time.Hour), now.Add(-time.Minute)
	var devices []string
	for d := range 4 {
		p := fmt.Sprintf("/devices/d%d", d)
		devices = append(devices, p)
		h.write(put(p))
		for i := range 6 {
			at := old
			if i >= 2 {
				at = recent
			}
			h.write(model.Mutation{Op: model.OpEvent, Path: model.Path(p),
				Event: &model.Event{Name: fmt.Sprintf("e%d", i), Level: model.LevelInfo, Time: at}})
		}
	}
	h.converged()
	down.kill()
	for i := range 10 {
		h.write(put(fmt.Sprintf("/devices/more%d", i)))
	}

	leader = h.leader()
	for _, r := range h.replicas() {
		if r.up() && r != leader {
			if _, err := r.c.Store().PruneEvents(0, now); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("a follower prunes on its own: %v", err)
			}
			if _, err := r.c.Store().CompactLog(0); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("a follower compacts on its own: %v", err)
			}
		}
	}
	// Keep 3 per context, none older than an hour: of each device's six
	// events, the two old ones and one recent one go.
	n, err := leader.c.Store().PruneEvents(3, now.Add(-time.Hour))
	if err != nil || n != 4*3 {
		t.Fatalf("prune on the leader: %d, %v; want 12", n, err)
	}
	// Nothing left to prune: nothing is proposed.
	idx := leader.c.raft().LastIndex()
	if n, err := leader.c.Store().PruneEvents(3, now.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("second prune: %d, %v", n, err)
	}
	if got := leader.c.raft().LastIndex(); got != idx {
		t.Fatalf("a prune with nothing to prune proposed entries: last index %d, was %d", got, idx)
	}
	last := leader.m.LastSeq()
	k, err := leader.c.Store().CompactLog(10)
	if err != nil || k == 0 {
		t.Fatalf("compaction on the leader: %d, %v", k, err)
	}
	h.write(put("/devices/after-retention"))

	down.start()
	v := h.sameRetained(devices)
	if v.First != last-10+1 {
		t.Fatalf("the log starts at %d, want %d", v.First, last-10+1)
	}
	for _, d := range devices {
		if got := v.Events[d]; len(got) != 3 {
			t.Fatalf("%s keeps %v, want its 3 newest events", d, got)
		}
	}
	for _, r := range h.replicas() {
		if _, err := r.c.Store().ReadLog(0, 10); !errors.Is(err, model.ErrCompacted) {
			t.Fatalf("%s reads the log from its start: %v, want model.ErrCompacted", r.id, err)
		}
	}
	// A replica restarted after applying retention skips it, and agrees.
	down.kill()
	down.start()
	h.sameRetained(devices)

	// Snapshots taken after the compaction; a new replica installs one.
	for _, r := range h.replicas() {
		// Nothing new: the replica took one of its own since (a restarted
		// replica snapshots what it restored), which serves as well.
		if err := r.c.raft().Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			t.Fatalf("%s: snapshot: %v", r.id, err)
		}
	}
	r4 := h.add("r4")
	h.join(r4, h.leader().addr)
	if got := testutil.ToFloat64(r4.c.metrics.restores); got < 1 {
		t.Fatalf("the new replica installed %v snapshots", got)
	}
	h.write(put("/devices/after-snapshot"))
	if got := h.sameRetained(devices); got.First != v.First {
		t.Fatalf("after the snapshot the log starts at %d, want %d", got.First, v.First)
	}
}

func TestRetentionEntriesRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	refs := []store.EventRef{{Path: "/devices/a", Seq: 7}, {Path: "/", Seq: 1}}
	data, err := encodePrune(7, at, refs)
	if err != nil || data[0] != entryPrune {
		t.Fatal(err)
	}
	got, err := decodePrune(data[1:])
	if err != nil || !reflect.DeepEqual(got, refs) {
		t.Fatalf("%+v, %v", got, err)
	}
	if data, err = encodeCompact(42); err != nil || data[0] != entryCompact {
		t.Fatal(err)
	}
	if c, err := decodeCompact(data[1:]); err != nil || c.UpTo != 42 {
		t.Fatalf("%+v, %v", c, err)
	}
	for name, bad := range map[string][]store.EventRef{
		"a bad path":        {{Path: "devices/a", Seq: 1}},
		"a path not clean":  {{Path: "/devices//a", Seq: 1}},
		"sequence number 0": {{Path: "/devices/a", Seq: 0}},
		"too many":          make([]store.EventRef, pruneChunk+1),
	} {
		if name == "too many" {
			for i := range bad {
				bad[i] = store.EventRef{Path: "/a", Seq: uint64(i + 1)}
			}
		}
		data, err := encodePrune(1, at, bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodePrune(data[1:]); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: %v, want ErrBadEntry", name, err)
		}
	}
}

func FuzzDecodeRetention(f *testing.F) {
	p, _ := encodePrune(3, time.Unix(1, 0), []store.EventRef{{Path: "/devices/a", Seq: 9}})
	c, _ := encodeCompact(9)
	f.Add(p[1:])
	f.Add(c[1:])
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		if refs, err := decodePrune(body); err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("error not ErrBadEntry: %v", err)
			}
		} else {
			if len(refs) > pruneChunk {
				t.Fatal("accepted too many events")
			}
			for _, r := range refs {
				if p, err := model.ParsePath(string(r.Path)); err != nil || p != r.Path || r.Seq == 0 {
					t.Fatalf("accepted event %q %d", r.Path, r.Seq)
				}
			}
		}
		if _, err := decodeCompact(body); err != nil && !errors.Is(err, ErrBadEntry) {
			t.Fatalf("error not ErrBadEntry: %v", err)
		}
	})
}
