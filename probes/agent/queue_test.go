package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
)

func openTestQueue(t *testing.T, dir string, lim queueLimits) *diskQueue {
	t.Helper()
	q, err := openQueue(dir, lim, tstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.close() })
	return q
}

var bigLimits = queueLimits{maxEntries: 10_000, maxBytes: 64 << 20}

func appendN(t *testing.T, q *diskQueue, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := q.append("telemetry", fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// payloads returns the payloads of every live entry, oldest first.
func payloads(t *testing.T, q *diskQueue) []string {
	t.Helper()
	es, err := q.peek(1<<30, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, string(e.payload))
	}
	return out
}

func wantPayloads(t *testing.T, q *diskQueue, from, to int) {
	t.Helper()
	got := payloads(t, q)
	var want []string
	for i := from; i < to; i++ {
		want = append(want, fmt.Sprintf(`{"i":%d}`, i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("queue holds %v, want %v", got, want)
	}
}

func TestQueueAppendPeekAckInOrder(t *testing.T) {
	q := openTestQueue(t, t.TempDir(), bigLimits)
	appendN(t, q, 0, 5)
	if _, err := q.append("cmd/j1/result", []byte(`{"status":"succeeded"}`)); err != nil {
		t.Fatal(err)
	}
	es, err := q.peek(3, 1<<20)
	if err != nil || len(es) != 3 || es[0].topic != "telemetry" || string(es[2].payload) != `{"i":2}` {
		t.Fatalf("peek = %+v, %v", es, err)
	}
	if err := q.ack(es[2].seq); err != nil {
		t.Fatal(err)
	}
	es, _ = q.peek(10, 1<<20)
	if len(es) != 3 || string(es[0].payload) != `{"i":3}` || es[2].topic != "cmd/j1/result" {
		t.Fatalf("after ack: %+v", es)
	}
	if _, _, done := q.state(es[0].seq - 1); !done {
		t.Fatal("acked seq not reported done")
	}
}

// TestQueueReopenAfterCrash abandons a queue without closing it, as kill -9
// would, and reopens the directory: every unacknowledged entry is there.
func TestQueueReopenAfterCrash(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, bigLimits)
	appendN(t, q, 0, 10)
	es, _ := q.peek(4, 1<<20)
	if err := q.ack(es[3].seq); err != nil {
		t.Fatal(err)
	}
	// No close: the first queue is simply abandoned.
	q2 := openTestQueue(t, dir, bigLimits)
	wantPayloads(t, q2, 4, 10)
	appendN(t, q2, 10, 12)
	q3 := openTestQueue(t, dir, bigLimits)
	wantPayloads(t, q3, 4, 12)
	es, _ = q3.peek(1, 1<<20)
	if es[0].seq != 4 {
		t.Fatalf("sequence numbers changed across reopen: first live seq %d, want 4", es[0].seq)
	}
}

// TestQueueTornTail simulates a crash in the middle of an append: the torn
// record is cut, the accepted ones are kept and appends continue.
func TestQueueTornTail(t *testing.T) {
	for _, tail := range []string{"\x00\x00", "\x00\x00\x00\x40garbagegarbage", "\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09ab"} {
		dir := t.TempDir()
		q := openTestQueue(t, dir, bigLimits)
		appendN(t, q, 0, 3)
		q.close()
		f, err := os.OpenFile(filepath.Join(dir, queueFile), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(tail)
		f.Close()
		q2 := openTestQueue(t, dir, bigLimits)
		wantPayloads(t, q2, 0, 3)
		appendN(t, q2, 3, 4)
		q2.close()
		wantPayloads(t, openTestQueue(t, dir, bigLimits), 0, 4)
	}
}

func TestQueueCorruptRecordCutsTheRest(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, bigLimits)
	appendN(t, q, 0, 3)
	second := q.recs[1].off
	q.close()
	f, _ := os.OpenFile(filepath.Join(dir, queueFile), os.O_WRONLY, 0)
	f.WriteAt([]byte("X"), second+recHeader+2) // flip a byte of record 1's body
	f.Close()
	wantPayloads(t, openTestQueue(t, dir, bigLimits), 0, 1)
}

func TestQueueDropsOldestPastLimits(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, queueLimits{maxEntries: 5, maxBytes: 1 << 20})
	appendN(t, q, 0, 8)
	wantPayloads(t, q, 3, 8)
	if q.dropped != 3 {
		t.Fatalf("dropped = %d, want 3", q.dropped)
	}
	q.close()
	wantPayloads(t, openTestQueue(t, dir, queueLimits{maxEntries: 5, maxBytes: 1 << 20}), 3, 8)

	// A byte bound: each record is 16 + len("telemetry\n{"i":N}") bytes.
	q2 := openTestQueue(t, t.TempDir(), queueLimits{maxEntries: 100, maxBytes: 3 * (16 + 17)})
	appendN(t, q2, 0, 6)
	wantPayloads(t, q2, 3, 6)

	// Tightened limits apply at open.
	wantPayloads(t, openTestQueue(t, dir, queueLimits{maxEntries: 2, maxBytes: 1 << 20}), 6, 8)
}

func TestQueueRefusesOversizedEntry(t *testing.T) {
	q := openTestQueue(t, t.TempDir(), bigLimits)
	if _, err := q.append("telemetry", make([]byte, maxEntryBytes)); err == nil {
		t.Fatal("oversized entry accepted")
	}
	if _, err := q.append("bad\ntopic", []byte("{}")); err == nil {
		t.Fatal("topic with a newline accepted")
	}
}

func TestQueueCompacts(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, bigLimits)
	pad := strings.Repeat("x", 10_000)
	for i := range 200 {
		if _, err := q.append("events", fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, pad)); err != nil {
			t.Fatal(err)
		}
	}
	es, _ := q.peek(150, 1<<30)
	if err := q.ack(es[149].seq); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, queueFile))
	if st.Size() != q.liveBytes || q.len() != 50 {
		t.Fatalf("after compaction: file %d bytes, live %d bytes, %d entries", st.Size(), q.liveBytes, q.len())
	}
	q.close()
	q2 := openTestQueue(t, dir, bigLimits)
	es, _ = q2.peek(1, 1<<20)
	if q2.len() != 50 || es[0].seq != 150 {
		t.Fatalf("after reopen: %d entries, first seq %d", q2.len(), es[0].seq)
	}
	// Emptying the queue empties the file.
	all, _ := q2.peek(100, 1<<30)
	q2.ack(all[len(all)-1].seq)
	if st, _ := os.Stat(filepath.Join(dir, queueFile)); st.Size() != 0 {
		t.Fatalf("empty queue left %d bytes", st.Size())
	}
	q2.close()
	q3 := openTestQueue(t, dir, bigLimits)
	appendN(t, q3, 0, 1)
	if es, _ := q3.peek(1, 1<<20); es[0].seq != 200 {
		t.Fatalf("seq restarted at %d after an empty reopen, want 200", es[0].seq)
	}
}

func TestBatchOf(t *testing.T) {
	es := []queueEntry{
		{seq: 1, topic: "telemetry", payload: []byte(`{"a":1}`)},
		{seq: 2, topic: "telemetry", payload: []byte(`{"a":2}`)},
		{seq: 3, topic: "cmd/j/result", payload: []byte(`{}`)},
		{seq: 4, topic: "telemetry", payload: []byte(`{"a":3}`)},
	}
	b := batchOf(es)
	if len(b) != 2 || string(encodeBatch(b)) != `[{"a":1},{"a":2}]` {
		t.Fatalf("batch %+v encodes to %s", b, encodeBatch(b))
	}
	if b := batchOf(es[2:]); len(b) != 1 || string(encodeBatch(b)) != `{}` {
		t.Fatalf("result batched with others: %+v", b)
	}
	if b := batchOf(es[3:]); string(encodeBatch(b)) != `{"a":3}` {
		t.Fatalf("single point not sent as an object: %s", encodeBatch(b))
	}
}
