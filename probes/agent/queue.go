package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/strata-dm/strata/internal/atomicfile"
)

// diskQueue is the agent's outbound buffer: telemetry points, events and
// command results wait in it until the broker acknowledges them (PUBACK).
//
// Layout: queue.log is an append-only sequence of records
//
//	length uint32 | crc32c uint32 | seq uint64 | topic "\n" payload
//
// (big endian; the CRC covers seq and body; length counts the body) and
// queue.head holds, in decimal, the sequence number of the first record still
// owed. Records below the head are dead. Invariants:
//   - Append returns only after the record is fsynced, so kill -9 loses
//     nothing that Append accepted.
//   - The head moves (ack, or drop of the oldest past the limits) by an
//     atomic rewrite of queue.head; a crash before that resends, never loses:
//     delivery is at least once.
//   - Dead space is reclaimed by rewriting the live records into a new file
//     renamed over queue.log; sequence numbers never change, so the head stays
//     valid whichever file a crash leaves.
//   - A torn tail (crash in the middle of an append, which was therefore never
//     accepted) is cut off at open.
type diskQueue struct {
	dir string
	lim queueLimits
	log *slog.Logger

	mu        sync.Mutex
	f         *os.File
	size      int64         // end of queue.log
	recs      []qrec        // live records, oldest first
	liveBytes int64         // sum of live record sizes
	head      uint64        // persisted: first seq still owed
	next      uint64        // seq of the next append
	dropped   uint64        // records dropped past the limits since open
	notify    chan struct{} // signalled (non-blocking) on append
	acked     chan struct{} // closed and replaced on every head move
}

// queueLimits bound the queue; the oldest records are dropped past them.
type queueLimits struct {
	maxEntries int
	maxBytes   int64
}

type qrec struct {
	seq uint64
	off int64
	n   int64 // whole record, header included
}

// queueEntry is one record read back from the queue.
type queueEntry struct {
	seq     uint64
	topic   string // relative to the device prefix: "telemetry", "cmd/j1/result"
	payload []byte
}

const (
	recHeader = 16
	// maxEntryBytes bounds one record's body: it must fit one MQTT message
	// under the node's default 256 KiB payload limit.
	maxEntryBytes = 240 << 10
	// compactMin is the dead space below which the log is not rewritten.
	compactMin = 1 << 20
)

var (
	crcTable         = crc32.MakeTable(crc32.Castagnoli)
	errEntryTooLarge = errors.New("queue entry too large")
	errClosed        = errors.New("agent state closed")
)

// openQueue opens (creating if need be) the queue in dir, cutting off a torn
// tail and applying lim.
func openQueue(dir string, lim queueLimits, log *slog.Logger) (*diskQueue, error) {
	q := &diskQueue{dir: dir, lim: lim, log: log,
		notify: make(chan struct{}, 1), acked: make(chan struct{})}
	head, err := readHead(filepath.Join(dir, queueHeadFile))
	if err != nil {
		log.Warn("queue head unreadable; resending everything in the queue", "err", err)
	}
	q.head, q.next = head, head
	q.f, err = os.OpenFile(filepath.Join(dir, queueFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := q.load(); err != nil {
		q.f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil { // a freshly created queue.log must survive power loss
		q.f.Close()
		return nil, err
	}
	if n := q.trim(0, 0); n > 0 {
		if err := q.writeHead(); err != nil {
			q.f.Close()
			return nil, err
		}
	}
	return q, nil
}

func readHead(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}

// load scans queue.log, keeps the records at or past the head and truncates
// the file at the first record that is short or fails its CRC.
func (q *diskQueue) load() error {
	var off int64
	var hdr [recHeader]byte
	var lastSeq uint64
	for {
		if _, err := q.f.ReadAt(hdr[:], off); err != nil {
			if err != io.EOF {
				q.log.Warn("queue: torn record header; cutting the log", "offset", off, "err", err)
			}
			break
		}
		n := int64(binary.BigEndian.Uint32(hdr[0:4]))
		seq := binary.BigEndian.Uint64(hdr[8:16])
		if n > maxEntryBytes+64 || (off > 0 && seq <= lastSeq) {
			q.log.Warn("queue: corrupt record; cutting the log", "offset", off)
			break
		}
		body := make([]byte, n)
		if _, err := q.f.ReadAt(body, off+recHeader); err != nil {
			q.log.Warn("queue: torn record; cutting the log", "offset", off)
			break
		}
		crc := crc32.Update(crc32.Checksum(hdr[8:16], crcTable), crcTable, body)
		if crc != binary.BigEndian.Uint32(hdr[4:8]) {
			q.log.Warn("queue: record fails its checksum; cutting the log", "offset", off)
			break
		}
		if seq >= q.head {
			q.recs = append(q.recs, qrec{seq: seq, off: off, n: recHeader + n})
			q.liveBytes += recHeader + n
		}
		lastSeq = seq
		off += recHeader + n
	}
	if st, err := q.f.Stat(); err == nil && st.Size() != off {
		if err := q.f.Truncate(off); err != nil {
			return err
		}
		if err := q.f.Sync(); err != nil {
			return err
		}
	}
	q.size = off
	if off > 0 && lastSeq+1 > q.next {
		q.next = lastSeq + 1
	}
	return nil
}

// append adds one record after the newest and fsyncs it, dropping the oldest
// records first if the limits demand it. It returns the record's seq.
func (q *diskQueue) append(topic string, payload []byte) (uint64, error) {
	if strings.Contains(topic, "\n") || topic == "" {
		return 0, fmt.Errorf("queue: bad topic %q", topic)
	}
	body := make([]byte, 0, len(topic)+1+len(payload))
	body = append(append(append(body, topic...), '\n'), payload...)
	if len(body) > maxEntryBytes {
		return 0, fmt.Errorf("%w: %d bytes", errEntryTooLarge, len(body))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return 0, errClosed
	}
	n := int64(recHeader + len(body))
	if dropped := q.trim(1, n); dropped > 0 {
		q.log.Warn("queue full: dropped the oldest entries", "dropped", dropped, "dropped_total", q.dropped)
		if err := q.writeHead(); err != nil {
			return 0, err
		}
	}
	rec := make([]byte, recHeader, n)
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(body)))
	binary.BigEndian.PutUint64(rec[8:16], q.next)
	binary.BigEndian.PutUint32(rec[4:8], crc32.Update(crc32.Checksum(rec[8:16], crcTable), crcTable, body))
	rec = append(rec, body...)
	if _, err := q.f.WriteAt(rec, q.size); err != nil {
		q.f.Truncate(q.size)
		return 0, err
	}
	if err := q.f.Sync(); err != nil {
		return 0, err
	}
	seq := q.next
	q.recs = append(q.recs, qrec{seq: seq, off: q.size, n: n})
	q.size += n
	q.liveBytes += n
	q.next++
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return seq, nil
}

// trim drops the oldest records until extra more records of extraBytes fit
// the limits, moves the head in memory and returns how many it dropped.
func (q *diskQueue) trim(extra int, extraBytes int64) int {
	dropped := 0
	for len(q.recs) > 0 && (len(q.recs)+extra > q.lim.maxEntries || q.liveBytes+extraBytes > q.lim.maxBytes) {
		q.liveBytes -= q.recs[0].n
		q.recs = q.recs[1:]
		dropped++
	}
	if dropped > 0 {
		q.dropped += uint64(dropped)
		q.setHead()
	}
	return dropped
}

// setHead moves the in-memory head to the oldest live record (or next) and
// wakes waiters on the acknowledgement channel.
func (q *diskQueue) setHead() {
	if len(q.recs) > 0 {
		q.head = q.recs[0].seq
	} else {
		q.head = q.next
	}
	close(q.acked)
	q.acked = make(chan struct{})
}

func (q *diskQueue) writeHead() error {
	return atomicfile.Write(filepath.Join(q.dir, queueHeadFile), []byte(strconv.FormatUint(q.head, 10)+"\n"), 0o600)
}

// peek reads up to max records from the oldest, stopping before maxBytes of
// bodies unless that would return nothing.
func (q *diskQueue) peek(max int, maxBytes int64) ([]queueEntry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return nil, errClosed
	}
	var out []queueEntry
	var total int64
	for _, r := range q.recs {
		if len(out) == max || (len(out) > 0 && total+r.n > maxBytes) {
			break
		}
		body := make([]byte, r.n-recHeader)
		if _, err := q.f.ReadAt(body, r.off+recHeader); err != nil {
			return nil, err
		}
		topic, payload, ok := strings.Cut(string(body), "\n")
		if !ok {
			return nil, fmt.Errorf("queue: record %d has no topic", r.seq)
		}
		out = append(out, queueEntry{seq: r.seq, topic: topic, payload: []byte(payload)})
		total += r.n
	}
	return out, nil
}

// ack removes every record up to and including seq, persists the head and
// reclaims dead space when it is worth it.
func (q *diskQueue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return errClosed
	}
	i := 0
	for i < len(q.recs) && q.recs[i].seq <= seq {
		q.liveBytes -= q.recs[i].n
		i++
	}
	if i == 0 {
		return nil
	}
	q.recs = q.recs[i:]
	q.setHead()
	if err := q.writeHead(); err != nil {
		return err
	}
	return q.compact()
}

// compact empties queue.log when nothing is live, or rewrites the live
// records into a fresh file when dead space dominates.
func (q *diskQueue) compact() error {
	dead := q.size - q.liveBytes
	if len(q.recs) == 0 {
		if err := q.f.Truncate(0); err != nil {
			return err
		}
		q.size = 0
		return q.f.Sync()
	}
	if dead < compactMin || dead < q.liveBytes {
		return nil
	}
	path := filepath.Join(q.dir, queueFile)
	nf, err := os.OpenFile(path+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	recs := make([]qrec, 0, len(q.recs))
	var off int64
	for _, r := range q.recs {
		buf := make([]byte, r.n)
		if _, err = q.f.ReadAt(buf, r.off); err == nil {
			_, err = nf.WriteAt(buf, off)
		}
		if err != nil {
			nf.Close()
			return err
		}
		recs = append(recs, qrec{seq: r.seq, off: off, n: r.n})
		off += r.n
	}
	if err := nf.Sync(); err != nil {
		nf.Close()
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		nf.Close()
		return err
	}
	q.f.Close()
	q.f, q.recs, q.size = nf, recs, off
	return syncDir(q.dir)
}

// state reports the number of live records, the acknowledgement channel
// (closed at the next head move) and whether seq is acknowledged.
func (q *diskQueue) state(seq uint64) (n int, acked <-chan struct{}, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs), q.acked, seq < q.head
}

// len returns the number of records still owed.
func (q *diskQueue) len() int {
	n, _, _ := q.state(0)
	return n
}

// close closes the file; later calls fail with errClosed. Safe twice.
func (q *diskQueue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return nil
	}
	err := q.f.Close()
	q.f = nil
	return err
}
