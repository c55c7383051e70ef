package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// fileLog is the Raft log and stable store of RaftLogWAL: segment files
// of CRC-framed entries, one write and one fdatasync per StoreLogs.
//
// The log is raft/wal/<first index, 20 digits>.seg, in index order. A
// segment is created full of zeros (segmentBytes, or the batch that opens
// it if larger) and synced once, so an append writes over allocated,
// written blocks and its fdatasync has no file size or extent to journal
// (docs/benchmarks.md, the disk's syncs). An entry is a frame:
//
//	u32 payload length | u32 CRC-32C of the payload | payload
//	payload: u64 index | u64 term | u8 type | i64 appended at (Unix ns, 0 for none)
//	         | u32 data length | data | u32 extensions length | extensions
//
// (little endian). A zero length ends a segment. Each segment's entries
// are consecutive from its first index, and each segment starts where the
// one before it ends: a segment is closed (a new one started) only after
// its last write was synced, a tail truncation deletes the segments after
// the cut before it cuts the one it falls in (zeros over the rest, then a
// sync), and a head compaction records the new first index (in the stable
// file) before it deletes the segments wholly below it. So at open only
// the last segment can end with a frame that does not decode, the end of
// an append that never returned: it is zeroed, and the log ends before
// it. Anywhere else a bad frame is damage, and the log refuses to open.
//
// The stable store (Raft's term and vote) and the first index are the
// file raft/wal/stable (JSON), replaced whole on each change: written to
// a temporary file, synced, renamed over it, the directory synced.
type fileLog struct {
	dir  string
	log  *slog.Logger
	lock *os.File // LOCK, flocked while open: one process at a time

	wmu sync.Mutex // serialises writers: StoreLogs, DeleteRange, Set, Close

	mu     sync.RWMutex // guards the fields below; readers take it shared
	segs   []*segment   // in index order; the last is the one appended to
	first  uint64       // entries below it are gone (a head compaction)
	stable map[string][]byte
	closed bool

	buf   []byte           // the frames of the batch being written (wmu)
	spare chan spareResult // the next segment's file, being made (wmu)
}

// spareResult is a segment file made ahead, full of zeros and synced.
type spareResult struct {
	f    *os.File
	size int64
	err  error
}

// segment is one segment file and the offsets of its entries.
type segment struct {
	first uint64
	f     *os.File
	offs  []int64 // entry first+i starts at offs[i]
	end   int64   // where the next frame goes
	size  int64   // the file's size (zeros past end)
}

func (s *segment) last() uint64 { return s.first + uint64(len(s.offs)) - 1 }

// frameEnd is where entry i's frame ends.
func (s *segment) frameEnd(i int) int64 {
	if i+1 < len(s.offs) {
		return s.offs[i+1]
	}
	return s.end
}

const (
	segmentExt      = ".seg"
	stableFile      = "stable"
	frameHeader     = 8
	payloadFixed    = 8 + 8 + 1 + 8 + 4 + 4
	maxFramePayload = 1 << 30
)

// segmentBytes is the size a segment is created with (tests make it
// small, to cross segments often).
var segmentBytes int64 = 16 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stableState is the stable file.
type stableState struct {
	Keys  map[string][]byte `json:"keys"`
	First uint64            `json:"first,omitempty"`
}

// openFileLog opens (or creates) the log in dir.
func openFileLog(dir string, log *slog.Logger) (*fileLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &fileLog{dir: dir, log: log, stable: map[string][]byte{}}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another process", dir)
		}
		return nil, err
	}
	l.lock = lock
	ok := false
	defer func() {
		if !ok {
			l.closeFiles()
		}
	}()
	raw, err := os.ReadFile(filepath.Join(dir, stableFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		var st stableState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stableFile), err)
		}
		if st.Keys != nil {
			l.stable = st.Keys
		}
		l.first = st.First
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// load opens the segments, rebuilding their indexes, and cuts a torn
// tail.
func (l *fileLog) load() error {
	names, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var firsts []uint64
	for _, e := range names {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			os.Remove(filepath.Join(l.dir, name)) // a file not renamed into place
		case strings.HasSuffix(name, segmentExt):
			n, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: not a segment name", filepath.Join(l.dir, name))
			}
			firsts = append(firsts, n)
		}
	}
	slices.Sort(firsts)
	for i, first := range firsts {
		path := l.segPath(first)
		// Segments wholly below the first index: a compaction that
		// recorded it, then stopped before deleting them.
		if i+1 < len(firsts) && firsts[i+1] <= l.first {
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		seg := &segment{first: first, f: f}
		data, err := io.ReadAll(f)
		if err != nil {
			f.Close()
			return err
		}
		seg.size = int64(len(data))
		var lastTerm uint64
		if n := len(l.segs); n > 0 && len(l.segs[n-1].offs) > 0 {
			prev := l.segs[n-1]
			var e raft.Log
			if err := prev.read(len(prev.offs)-1, &e); err != nil {
				f.Close()
				return err
			}
			lastTerm = e.Term
		}
		off := 0
		var bad error
		for off < len(data) {
			var e raft.Log
			n, err := decodeFrame(data[off:], &e)
			if err == nil && e.Index != first+uint64(len(seg.offs)) {
				err = fmt.Errorf("entry %d where %d was due", e.Index, first+uint64(len(seg.offs)))
			}
			if err == nil && e.Term < lastTerm {
				err = fmt.Errorf("entry %d of term %d after term %d", e.Index, e.Term, lastTerm)
			}
			if errors.Is(err, errEndOfSegment) {
				break
			}
			if err != nil {
				bad = err
				break
			}
			seg.offs = append(seg.offs, int64(off))
			lastTerm = e.Term
			off += n
		}
		seg.end = int64(off)
		if n := len(l.segs); n > 0 {
			if prev := l.segs[n-1]; len(prev.offs) == 0 || prev.last()+1 != first {
				f.Close()
				return fmt.Errorf("%s: damaged: it does not follow the segment before it", path)
			}
		}
		l.segs = append(l.segs, seg)
		if bad != nil {
			if i+1 < len(firsts) {
				return fmt.Errorf("%s: damaged at offset %d: %w", path, off, bad)
			}
			// The last segment: an append cut short. Zero it, so that
			// later appends are not followed by what is left of it.
			l.log.Warn("the Raft log ends with an append cut short: cutting it", "segment", path, "offset", off, "bytes", len(data)-off, "err", bad)
			if err := seg.zero(seg.end, int64(len(data))); err != nil {
				return err
			}
		}
	}
	// A compaction of the whole log that recorded its first index, then
	// stopped before deleting the last segments: they go now.
	var gone bool
	for len(l.segs) > 0 && (len(l.segs[0].offs) == 0 && len(l.segs) > 1 || len(l.segs[0].offs) > 0 && l.segs[0].last() < l.first) {
		s := l.segs[0]
		l.segs = l.segs[1:]
		s.f.Close()
		if err := os.Remove(l.segPath(s.first)); err != nil {
			return err
		}
		gone = true
	}
	if gone {
		return syncDir(l.dir)
	}
	return nil
}

func (l *fileLog) segPath(first uint64) string {
	return filepath.Join(l.dir, fmt.Sprintf("%020d%s", first, segmentExt))
}

var errEndOfSegment = errors.New("end of segment")

// decodeFrame decodes the frame at the start of data into e and returns
// its length; errEndOfSegment for a zero length.
func decodeFrame(data []byte, e *raft.Log) (int, error) {
	if len(data) < frameHeader {
		if allZero(data) {
			return 0, errEndOfSegment
		}
		return 0, errors.New("frame header cut short")
	}
	n := binary.LittleEndian.Uint32(data)
	if n == 0 {
		return 0, errEndOfSegment
	}
	if n > maxFramePayload || int64(n) > int64(len(data)-frameHeader) {
		return 0, fmt.Errorf("frame of %d bytes past the end", n)
	}
	p := data[frameHeader : frameHeader+int(n)]
	if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(data[4:]) {
		return 0, errors.New("checksum mismatch")
	}
	if err := decodeEntry(p, e); err != nil {
		return 0, err
	}
	return frameHeader + int(n), nil
}

// decodeEntry decodes a frame's payload.
func decodeEntry(p []byte, e *raft.Log) error {
	if len(p) < payloadFixed {
		return errors.New("entry cut short")
	}
	e.Index = binary.LittleEndian.Uint64(p)
	e.Term = binary.LittleEndian.Uint64(p[8:])
	e.Type = raft.LogType(p[16])
	e.AppendedAt = time.Time{}
	if ns := int64(binary.LittleEndian.Uint64(p[17:])); ns != 0 {
		e.AppendedAt = time.Unix(0, ns)
	}
	rest := p[25:]
	field := func() ([]byte, error) {
		if len(rest) < 4 {
			return nil, errors.New("entry cut short")
		}
		n := binary.LittleEndian.Uint32(rest)
		if uint64(n) > uint64(len(rest)-4) {
			return nil, errors.New("field past the end of the entry")
		}
		b := rest[4 : 4+n]
		rest = rest[4+n:]
		if n == 0 {
			return nil, nil
		}
		return b, nil
	}
	var err error
	if e.Data, err = field(); err != nil {
		return err
	}
	if e.Extensions, err = field(); err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("bytes after the entry")
	}
	return nil
}

// appendFrame appends e's frame to buf.
func appendFrame(buf []byte, e *raft.Log) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, frameHeader)...)
	buf = binary.LittleEndian.AppendUint64(buf, e.Index)
	buf = binary.LittleEndian.AppendUint64(buf, e.Term)
	buf = append(buf, byte(e.Type))
	var ns int64
	if !e.AppendedAt.IsZero() {
		ns = e.AppendedAt.UnixNano()
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(ns))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(e.Data)))
	buf = append(buf, e.Data...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(e.Extensions)))
	buf = append(buf, e.Extensions...)
	p := buf[start+frameHeader:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(p, castagnoli))
	return buf
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// read decodes entry i of the segment into e.
func (s *segment) read(i int, e *raft.Log) error {
	buf := make([]byte, s.frameEnd(i)-s.offs[i])
	if _, err := s.f.ReadAt(buf, s.offs[i]); err != nil {
		return err
	}
	_, err := decodeFrame(buf, e)
	return err
}

// zero writes zeros over [from, to) and syncs.
func (s *segment) zero(from, to int64) error {
	if to <= from {
		return nil
	}
	zeros := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; off += int64(len(zeros)) {
		if _, err := s.f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off); err != nil {
			return err
		}
	}
	return fdatasync(s.f)
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// FirstIndex implements raft.LogStore: 0 when the log is empty.
func (l *fileLog) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.firstLocked(), nil
}

func (l *fileLog) firstLocked() uint64 {
	for _, s := range l.segs {
		if len(s.offs) > 0 {
			return max(s.first, l.first)
		}
	}
	return 0
}

// LastIndex implements raft.LogStore: 0 when the log is empty.
func (l *fileLog) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastLocked(), nil
}

func (l *fileLog) lastLocked() uint64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if len(l.segs[i].offs) > 0 {
			return l.segs[i].last()
		}
	}
	return 0
}

// GetLog implements raft.LogStore.
func (l *fileLog) GetLog(index uint64, e *raft.Log) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return errLogClosed
	}
	if index < l.first {
		return raft.ErrLogNotFound
	}
	i, _ := slices.BinarySearchFunc(l.segs, index, func(s *segment, index uint64) int {
		switch {
		case s.first > index:
			return 1
		case len(s.offs) == 0 || s.last() < index:
			return -1
		}
		return 0
	})
	if i == len(l.segs) || l.segs[i].first > index || len(l.segs[i].offs) == 0 {
		return raft.ErrLogNotFound
	}
	s := l.segs[i]
	if err := s.read(int(index-s.first), e); err != nil {
		return fmt.Errorf("raft log entry %d: %w", index, err)
	}
	if e.Index != index {
		return fmt.Errorf("raft log entry %d: read entry %d", index, e.Index)
	}
	return nil
}

var errLogClosed = errors.New("cluster: the raft log is closed")

// StoreLog implements raft.LogStore.
func (l *fileLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

// StoreLogs implements raft.LogStore: one write and one fdatasync. The
// entries must follow the last one; after a gap (Raft leaves one only
// after installing a snapshot, which covers every entry before it) the
// log starts again at the first of them.
func (l *fileLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.closed {
		return errLogClosed
	}
	for i, e := range logs[1:] {
		if e.Index != logs[i].Index+1 {
			return fmt.Errorf("cluster: raft log: entries %d then %d", logs[i].Index, e.Index)
		}
	}
	l.mu.RLock()
	last := l.lastLocked()
	l.mu.RUnlock()
	switch next := logs[0].Index; {
	case last > 0 && next <= last:
		return fmt.Errorf("cluster: raft log: entry %d appended after %d", next, last)
	case last > 0 && next > last+1, last == 0 && next < l.first:
		if err := l.restartAt(next); err != nil {
			return err
		}
	}
	l.buf = l.buf[:0]
	starts := make([]int64, len(logs))
	for i, e := range logs {
		starts[i] = int64(len(l.buf))
		l.buf = appendFrame(l.buf, e)
	}
	seg, err := l.tailFor(logs[0].Index, int64(len(l.buf)))
	if err != nil {
		return err
	}
	if _, err := seg.f.WriteAt(l.buf, seg.end); err != nil {
		return fmt.Errorf("cluster: raft log: %w", err)
	}
	if err := fdatasync(seg.f); err != nil {
		return fmt.Errorf("cluster: raft log: %w", err)
	}
	offs := seg.offs
	for _, s := range starts {
		offs = append(offs, seg.end+s)
	}
	l.mu.Lock()
	seg.offs, seg.end = offs, seg.end+int64(len(l.buf))
	l.mu.Unlock()
	if cap(l.buf) > 4<<20 {
		l.buf = nil // one big batch does not pin its buffer
	}
	return nil
}

// tailFor returns the segment to append n bytes to, starting with entry
// first: the last one if they fit, else a new one (wmu held).
func (l *fileLog) tailFor(first uint64, n int64) (*segment, error) {
	if k := len(l.segs); k > 0 {
		if s := l.segs[k-1]; s.end+n <= s.size && (len(s.offs) > 0 || s.first == first) {
			return s, nil
		}
	}
	size := max(segmentBytes, n)
	path := l.segPath(first)
	tmp := path + ".tmp"
	var f *os.File
	var err error
	if l.spare != nil && n <= segmentBytes {
		// The file made ahead, while the last segment filled.
		r := <-l.spare
		l.spare = nil
		f, size, err = r.f, r.size, r.err
		tmp = filepath.Join(l.dir, spareName)
		if err == nil && r.size < n {
			f.Close()
			f, size, err = nil, 0, os.Remove(tmp)
			if err == nil {
				size = max(segmentBytes, n)
				f, err = makeSegmentFile(path+".tmp", size)
				tmp = path + ".tmp"
			}
		}
	} else {
		f, err = makeSegmentFile(tmp, size)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: raft log: new segment: %w", err)
	}
	s := &segment{first: first, f: f, size: size}
	err = os.Rename(tmp, path)
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("cluster: raft log: new segment: %w", err)
	}
	l.mu.Lock()
	// An empty last segment (a truncation or a restart emptied it) is
	// replaced.
	if k := len(l.segs); k > 0 && len(l.segs[k-1].offs) == 0 {
		old := l.segs[k-1]
		l.segs = l.segs[:k-1]
		old.f.Close()
		if old.first != first {
			os.Remove(l.segPath(old.first))
		}
	}
	l.segs = append(l.segs, s)
	l.mu.Unlock()
	l.makeSpare()
	return s, nil
}

const spareName = "spare.tmp"

// makeSpare starts making the next segment's file (wmu held), so that
// the append that starts a segment does not write and sync its zeros.
func (l *fileLog) makeSpare() {
	if l.spare != nil {
		return
	}
	ch := make(chan spareResult, 1)
	l.spare = ch
	path, size := filepath.Join(l.dir, spareName), segmentBytes
	go func() {
		f, err := makeSegmentFile(path, size)
		ch <- spareResult{f, size, err}
	}()
}

// makeSegmentFile creates path full of zeros, synced.
func makeSegmentFile(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := (&segment{f: f}).zero(0, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// restartAt empties the log for one starting at first (wmu held).
func (l *fileLog) restartAt(first uint64) error {
	return l.deleteHead(first)
}

// DeleteRange implements raft.LogStore. Raft deletes from the head (a
// compaction after a snapshot, or the whole log after installing one) or
// from the tail (entries that conflict with the leader's).
func (l *fileLog) DeleteRange(lo, hi uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.closed {
		return errLogClosed
	}
	l.mu.RLock()
	first, last := l.firstLocked(), l.lastLocked()
	l.mu.RUnlock()
	switch {
	case last == 0 || hi < lo || hi < first || lo > last:
		return nil
	case lo <= first:
		return l.deleteHead(hi + 1)
	case hi >= last:
		return l.deleteTail(lo)
	}
	return fmt.Errorf("cluster: raft log: delete %d..%d from the middle of %d..%d", lo, hi, first, last)
}

// deleteHead makes first the first index: recorded first, then the
// segments wholly below it deleted (wmu held).
func (l *fileLog) deleteHead(first uint64) error {
	l.mu.Lock()
	st := stableState{Keys: l.stable, First: first}
	l.mu.Unlock()
	if err := l.writeStable(st); err != nil {
		return err
	}
	l.mu.Lock()
	l.first = first
	var gone []*segment
	for len(l.segs) > 0 && (len(l.segs[0].offs) == 0 || l.segs[0].last() < first) {
		gone = append(gone, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	for _, s := range gone {
		s.f.Close()
		if err := os.Remove(l.segPath(s.first)); err != nil {
			return fmt.Errorf("cluster: raft log: %w", err)
		}
	}
	if len(gone) > 0 {
		return syncDir(l.dir)
	}
	return nil
}

// deleteTail deletes the entries from lo on: the segments after the one
// lo is in go first, last to first, then that segment is cut (wmu held).
func (l *fileLog) deleteTail(lo uint64) error {
	for {
		l.mu.Lock()
		k := len(l.segs)
		s := l.segs[k-1]
		if s.first < lo || k == 1 {
			l.mu.Unlock()
			break
		}
		l.segs = l.segs[:k-1]
		l.mu.Unlock()
		s.f.Close()
		if err := os.Remove(l.segPath(s.first)); err != nil {
			return fmt.Errorf("cluster: raft log: %w", err)
		}
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	l.mu.RLock()
	s := l.segs[len(l.segs)-1]
	l.mu.RUnlock()
	if lo > s.last() {
		return nil
	}
	cut := int64(0)
	if lo > s.first {
		cut = s.offs[lo-s.first]
	}
	// Readers see the cut before the bytes go.
	l.mu.Lock()
	end := s.end
	s.offs, s.end = s.offs[:lo-s.first], cut
	l.mu.Unlock()
	return s.zero(cut, end)
}

// Get implements raft.StableStore: nil for a key never set.
func (l *fileLog) Get(key []byte) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.stable[string(key)]), nil
}

// Set implements raft.StableStore.
func (l *fileLog) Set(key, val []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.closed {
		return errLogClosed
	}
	l.mu.RLock()
	keys := make(map[string][]byte, len(l.stable)+1)
	for k, v := range l.stable {
		keys[k] = v
	}
	st := stableState{Keys: keys, First: l.first}
	l.mu.RUnlock()
	keys[string(key)] = slices.Clone(val)
	if err := l.writeStable(st); err != nil {
		return err
	}
	l.mu.Lock()
	l.stable = keys
	l.mu.Unlock()
	return nil
}

// GetUint64 implements raft.StableStore: 0 for a key never set.
func (l *fileLog) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("cluster: raft stable key %q: %d bytes, not a number", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetUint64 implements raft.StableStore.
func (l *fileLog) SetUint64(key []byte, val uint64) error {
	return l.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// writeStable replaces the stable file with st.
func (l *fileLog) writeStable(st stableState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	path := filepath.Join(l.dir, stableFile)
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: raft stable store: %w", err)
	}
	_, err = f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("cluster: raft stable store: %w", err)
	}
	return nil
}

// Close implements io.Closer.
func (l *fileLog) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.spare != nil {
		if r := <-l.spare; r.f != nil {
			r.f.Close()
			os.Remove(filepath.Join(l.dir, spareName))
		}
		l.spare = nil
	}
	return l.closeFiles()
}

func (l *fileLog) closeFiles() error {
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	l.segs = nil
	if l.lock != nil {
		errs = append(errs, l.lock.Close()) // releases the flock
		l.lock = nil
	}
	return errors.Join(errs...)
}
