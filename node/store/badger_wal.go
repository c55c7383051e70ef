package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The store's write-ahead log.
//
// Badger writes through memory-mapped files: making a commit durable there
// takes two msyncs (its value log and its memtable log), and each one
// write-protects the pages it cleans again, one TLB shootdown per page,
// before the disk flush. Instead, every write to Badger is first appended
// to a plain file as one record, fdatasynced: a commit costs one write and
// one flush. Badger itself is written without syncing, and becomes
// durable on its own when a full memtable is flushed into a table (which
// Badger syncs, with its manifest).
//
// Every write means every one: commits, checkpoints, log compaction and
// event pruning all write through the log (logged), in the order Badger
// receives them (under the commit lock). Replaying the log therefore
// repeats exactly what Badger was told since the oldest segment kept, and
// leaves Badger as it was, whichever of its unsynced writes a machine crash
// lost (its memtable files are written back independently, in any order).
//
// The log is cut into segments (a new one every walSyncEvery, or when one
// reaches walSegmentBytes). A closed segment is deleted once every
// memtable that existed when it closed has been flushed, i.e. its memtable
// file (*.mem) is gone, and the value log files (log blocks go there) have
// been synced: everything it holds is then in synced files. Memtables
// flush only when full, so past walKeep (or walKeepBytes of log) the
// memtable files are synced instead; by then the kernel has written most
// of their pages back, and the sync is cheap. Syncing every second
// instead would clean each page of Badger's mapped files while it is
// still being filled, which is what made its own syncs expensive. The
// pages are handed to the disk every writebackEvery without waiting
// (startWriteback), so that they are cleaned a few hundred at a time
// rather than thousands at once when the kernel finds them expired.
//
// At open, every record in the log is applied again in order; the
// memtable and value log files are then synced and the log emptied,
// before the store serves anything.
//
// Segment files are wal/<16 hex digits>.log, numbered in order. A record:
//
//	u32 body length (little endian) | u32 CRC-32C of the body | body
//
// The body is the plaintext (u64 last sequence number of a commit, 0 for
// other writes, then the writes), or, with an encryption key, a 12-byte
// nonce and the AES-GCM sealing of the plaintext. A write is a byte of
// kind (1 set, 2 delete), the key (uvarint length, bytes) and, for a set,
// the value (uvarint length, bytes).
//
// Only the last record of the last segment can be the write of a commit
// that never returned (a crash in the middle of it): each record is
// synced before the next is written, and a segment is closed only after
// its last record was. So the replay drops a record that fails to decode
// only there, and only if it looks like a write cut short
// (badger_wal_replay.go); anywhere else it refuses to open, naming the
// segment and the offset, and changes nothing.

// Write-ahead log tuning.
const (
	walSegmentBytes = 64 << 20
	walKeep         = 45 * time.Second
	walKeepBytes    = 512 << 20
	walHeader       = 8
	walMaxRecord    = 1 << 30
)

const (
	walSet byte = 1
	walDel byte = 2
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// wal is the write-ahead log of one store. Commits (begin, set, del,
// append) run one at a time, under the store's commit lock; rotate too.
type wal struct {
	dir    string
	aead   cipher.AEAD // nil: records are not encrypted
	noSync bool
	log    *slog.Logger

	f         *os.File // the current segment
	num       uint64   // its number
	size      int64    // its length
	lastStart int64    // where the last record appended begins
	// closed holds the segments before the current one, oldest first.
	closed []walSegment

	buf    []byte // the record being built: header, then plaintext
	sealed []byte // its encrypted form
	// broken is set when a failed record could not be cut back: the end
	// of the current segment is unknown, so nothing more is written
	// (every commit fails) until a restart replays the log, where that
	// record is the last of the last segment.
	broken error
}

// openWAL opens the log in dir, creating dir if needed. The segments found
// are replayed by replay before the log is written.
func openWAL(dir string, key []byte, noSync bool, log *slog.Logger) (*wal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	w := &wal{dir: dir, noSync: noSync, log: log}
	if len(key) > 0 {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if w.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	segs, err := w.segments()
	if err != nil {
		return nil, err
	}
	for _, seg := range segs {
		w.closed = append(w.closed, walSegment{path: seg})
	}
	if len(segs) > 0 {
		fmt.Sscanf(strings.TrimSuffix(filepath.Base(segs[len(segs)-1]), ".log"), "%x", &w.num)
	}
	return w, nil
}

// segments lists the segment files in order.
func (w *wal) segments() ([]string, error) {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		var n uint64
		name := e.Name()
		if len(name) == 20 && strings.HasSuffix(name, ".log") {
			if _, err := fmt.Sscanf(name[:16], "%x", &n); err == nil {
				out = append(out, filepath.Join(w.dir, name))
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// decodeRecord decodes the record at the start of data: the commit's last
// sequence number, its writes and the record's length.
func (w *wal) decodeRecord(data []byte) (last uint64, writes []byte, size int, err error) {
	if len(data) < walHeader {
		return 0, nil, 0, errors.New("truncated header")
	}
	n := binary.LittleEndian.Uint32(data)
	if n > walMaxRecord || int(n) > len(data)-walHeader {
		return 0, nil, 0, fmt.Errorf("record of %d bytes past the end", n)
	}
	body := data[walHeader : walHeader+int(n)]
	if crc32.Checksum(body, walCRC) != binary.LittleEndian.Uint32(data[4:]) {
		return 0, nil, 0, errors.New("checksum mismatch")
	}
	if w.aead != nil {
		ns := w.aead.NonceSize()
		if len(body) < ns {
			return 0, nil, 0, errors.New("truncated nonce")
		}
		if body, err = w.aead.Open(nil, body[:ns], body[ns:], nil); err != nil {
			return 0, nil, 0, fmt.Errorf("decrypt: %w", err)
		}
	}
	if len(body) < 8 {
		return 0, nil, 0, errors.New("truncated record")
	}
	if err := eachWrite(body[8:], func(byte, []byte, []byte) error { return nil }); err != nil {
		return 0, nil, 0, err
	}
	return binary.LittleEndian.Uint64(body), body[8:], walHeader + int(n), nil
}

// eachWrite calls fn for each write of a record (value nil for a delete).
func eachWrite(writes []byte, fn func(kind byte, key, value []byte) error) error {
	field := func() ([]byte, error) {
		l, k := binary.Uvarint(writes)
		if k <= 0 || l > uint64(len(writes)-k) {
			return nil, errors.New("bad length")
		}
		f := writes[k : k+int(l)]
		writes = writes[k+int(l):]
		return f, nil
	}
	for len(writes) > 0 {
		kind := writes[0]
		writes = writes[1:]
		key, err := field()
		if err != nil {
			return fmt.Errorf("write-ahead log: key: %w", err)
		}
		var value []byte
		switch kind {
		case walSet:
			if value, err = field(); err != nil {
				return fmt.Errorf("write-ahead log: value: %w", err)
			}
			if value == nil {
				value = []byte{}
			}
		case walDel:
		default:
			return fmt.Errorf("write-ahead log: unknown write kind %d", kind)
		}
		if err := fn(kind, key, value); err != nil {
			return err
		}
	}
	return nil
}

// begin starts the record of a commit whose last sequence number is last.
func (w *wal) begin(last uint64) {
	w.buf = binary.LittleEndian.AppendUint64(append(w.buf[:0], make([]byte, walHeader)...), last)
}

func (w *wal) set(k, v []byte) {
	w.buf = append(w.buf, walSet)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(k)))
	w.buf = append(w.buf, k...)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(v)))
	w.buf = append(w.buf, v...)
}

func (w *wal) del(k []byte) {
	w.buf = append(w.buf, walDel)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(k)))
	w.buf = append(w.buf, k...)
}

// append writes the record begun and makes it durable. On failure the
// segment is cut back to where the record began.
func (w *wal) append() error {
	if w.broken != nil {
		return w.broken
	}
	if w.f == nil {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	rec := w.buf
	if w.aead != nil {
		ns := w.aead.NonceSize()
		w.sealed = append(w.sealed[:0], w.buf[:walHeader]...)
		w.sealed = append(w.sealed, make([]byte, ns)...)
		if _, err := rand.Read(w.sealed[walHeader:]); err != nil {
			return err
		}
		w.sealed = w.aead.Seal(w.sealed, w.sealed[walHeader:walHeader+ns], w.buf[walHeader:], nil)
		rec = w.sealed
	}
	body := rec[walHeader:]
	if len(body) > walMaxRecord {
		return fmt.Errorf("write-ahead log: a commit of %d bytes is too large", len(body))
	}
	binary.LittleEndian.PutUint32(rec, uint32(len(body)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(body, walCRC))
	_, err := w.f.WriteAt(rec, w.size)
	if err == nil && !w.noSync {
		err = unix.Fdatasync(int(w.f.Fd()))
	}
	if err != nil {
		w.undo()
		return fmt.Errorf("write-ahead log: %w", err)
	}
	w.lastStart = w.size
	w.size += int64(len(rec))
	return nil
}

// unappend removes the record appended last: its commit failed in Badger.
func (w *wal) unappend() {
	if w.f == nil {
		return
	}
	w.size = w.lastStart
	w.undo()
}

// undo removes the last record appended (its commit failed in Badger), or
// what part of it reached the file.
func (w *wal) undo() {
	if err := w.f.Truncate(w.size); err == nil && !w.noSync {
		err = unix.Fdatasync(int(w.f.Fd()))
		if err == nil {
			return
		}
	}
	// The file's end is unknown. A record written after it would make
	// the damage one that is not at the end of the log, which a replay
	// refuses: stop writing instead. At the next start the damaged
	// record is the end of the last segment, dropped if it was cut short
	// (or applied if it reached the disk whole: its commit's outcome was
	// unknown to its callers).
	w.log.Error("write-ahead log: could not cut back a failed record; refusing every write until the node is restarted", "segment", w.f.Name())
	w.broken = fmt.Errorf("write-ahead log: %s could not be cut back after a failed write; restart the node", filepath.Base(w.f.Name()))
}

// walSegment is a closed segment, with the memtable files that existed
// when it closed (nil: not listed yet).
type walSegment struct {
	path     string
	mems     []string
	size     int64
	closedAt time.Time
}

// rotate starts a new segment; the current one joins closed.
func (w *wal) rotate() error {
	if w.broken != nil {
		return w.broken
	}
	f, err := os.OpenFile(filepath.Join(w.dir, fmt.Sprintf("%016x.log", w.num+1)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write-ahead log: %w", err)
	}
	if err := syncDir(w.dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write-ahead log: %w", err)
	}
	if w.f != nil {
		w.closed = append(w.closed, walSegment{path: w.f.Name(), size: w.size, closedAt: time.Now()})
		w.f.Close()
	}
	w.f, w.num, w.size = f, w.num+1, 0
	return nil
}

// empty reports whether the current segment holds no record.
func (w *wal) empty() bool { return w.size == 0 }

// remove deletes segments whose writes Badger holds durably.
func (w *wal) remove(segs []walSegment) error {
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if len(segs) == 0 {
		return nil
	}
	return syncDir(w.dir)
}

func (w *wal) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// badgerFiles lists the files in dir with the extension ext.
func badgerFiles(dir, ext string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ext) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// syncBadgerFiles fdatasyncs the files in dir with the given extensions,
// then dir. A file that disappears meanwhile was flushed into a table or
// garbage collected.
func syncBadgerFiles(dir string, exts ...string) error {
	for _, ext := range exts {
		names, err := badgerFiles(dir, ext)
		if err != nil {
			return err
		}
		for _, name := range names {
			f, err := os.Open(filepath.Join(dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			err = unix.Fdatasync(int(f.Fd()))
			f.Close()
			if err != nil {
				return fmt.Errorf("sync %s: %w", name, err)
			}
		}
	}
	return syncDir(dir)
}

// syncAll makes everything written to Badger so far durable (a no-op in
// memory).
func (s *Badger) syncAll() error {
	if s.opts.InMemory {
		return nil
	}
	return syncBadgerFiles(s.opts.Dir, ".mem", ".vlog")
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// logged runs fn with a writer whose writes go to the write-ahead log and
// then to Badger, under the commit lock: for writes other than commits.
func (s *Badger) logged(fn func(w *txnWriter) error) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	w := s.writer(0)
	if err := fn(w); err != nil {
		return w.abort(err)
	}
	return s.finish(w)
}

// writer starts the writes of a commit whose last sequence number is last
// (0: not a commit), recorded for the write-ahead log. The caller holds
// the commit lock, and ends with finish or w.abort.
func (s *Badger) writer(last uint64) *txnWriter {
	w := &txnWriter{db: s.db, wal: s.wal}
	w.begin()
	if s.wal != nil {
		s.wal.begin(last)
	}
	return w
}

// finish makes w's writes durable in the write-ahead log, then writes them
// to Badger; if Badger fails, the record is taken back.
func (s *Badger) finish(w *txnWriter) error {
	if err := w.flushCounts(); err != nil {
		return w.abort(err)
	}
	if s.wal != nil {
		if err := s.wal.append(); err != nil {
			return w.abort(err)
		}
	}
	if s.loseWrites {
		w.txn.Discard()
		return nil
	}
	if err := w.commit(); err != nil {
		if s.wal != nil {
			s.wal.unappend()
		}
		return err
	}
	return nil
}

// replayWAL applies every record left in the write-ahead log to Badger.
// The log is emptied by the first flush (at the end of opening).
func (s *Badger) replayWAL() error {
	n, err := s.wal.replay(func(_ uint64, writes []byte) error {
		w := &txnWriter{db: s.db}
		w.begin()
		err := eachWrite(writes, func(kind byte, key, value []byte) error {
			if kind == walDel {
				return w.del(key)
			}
			return w.set(key, value)
		})
		if err != nil {
			return w.abort(err)
		}
		return w.commit()
	})
	if n > 0 {
		s.log.Info("write-ahead log replayed", "records", n)
	}
	return err
}

// syncer closes a segment every walSyncEvery (or when one is full) and
// deletes the segments Badger holds durably; in between, it starts the
// writeback of Badger's files every writebackEvery.
func (s *Badger) syncer() {
	defer close(s.walDone)
	t := time.NewTicker(walSyncEvery)
	defer t.Stop()
	wb := time.NewTicker(writebackEvery)
	defer wb.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-wb.C:
			if s.wal != nil {
				startWriteback(s.opts.Dir)
			}
			continue
		case <-t.C:
		case <-s.walFull:
		}
		if err := s.trimWAL(false); err != nil {
			s.log.Error("write-ahead log: could not delete old segments; they are kept", "err", err)
		}
	}
}

// trimWAL closes the current segment (if it holds anything) and deletes
// the closed segments whose writes are durable in Badger: those whose
// memtables have all been flushed or, with all set, every one, after
// syncing Badger's memtable files.
func (s *Badger) trimWAL(all bool) error {
	if s.wal == nil {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.commitMu.Lock()
	var err error
	if !s.wal.empty() {
		err = s.wal.rotate()
	}
	closed := slices.Clone(s.wal.closed)
	s.commitMu.Unlock()
	if err != nil {
		return err
	}
	// A memtable made after a segment closed holds only later writes:
	// listing the memtable files now, after the close, covers the segment.
	mems, err := badgerFiles(s.opts.Dir, ".mem")
	if err != nil {
		return err
	}
	n := 0
	if !all {
		// Memtables flush only when full, and a quiet store may keep one
		// for long: past walKeep, or walKeepBytes, Badger is synced instead
		// (by then the kernel has written most of it back already).
		var bytes int64
		for _, c := range closed {
			bytes += c.size
		}
		all = bytes > walKeepBytes || len(closed) > 0 && time.Since(closed[0].closedAt) > walKeep
	}
	if all {
		if err := s.syncAll(); err != nil {
			return err
		}
		n = len(closed)
	} else {
		for i := range closed {
			if closed[i].mems == nil {
				closed[i].mems = mems
			}
		}
		for n < len(closed) && !slices.ContainsFunc(closed[n].mems, func(m string) bool { return slices.Contains(mems, m) }) {
			n++
		}
		if n > 0 {
			if err := syncBadgerFiles(s.opts.Dir, ".vlog"); err != nil {
				return err
			}
		}
	}
	err = s.wal.remove(closed[:n])
	s.commitMu.Lock()
	// Segments closed meanwhile (a failed record) stay after these.
	for i := range closed {
		if i < len(s.wal.closed) && s.wal.closed[i].path == closed[i].path {
			s.wal.closed[i].mems = closed[i].mems
		}
	}
	if err == nil {
		s.wal.closed = slices.Delete(s.wal.closed, 0, n)
	}
	s.commitMu.Unlock()
	return err
}

// writebackEvery is how often the pages Badger dirtied in its mapped files
// are handed to the disk (startWriteback).
const writebackEvery = 200 * time.Millisecond

// startWriteback starts writing back the dirty pages of Badger's memtable
// and value log files, without waiting and without flushing the disk's
// cache. It makes nothing durable: it spreads over time the work of
// cleaning the pages of mapped files (a TLB shootdown each), which the
// kernel would otherwise do for thousands of pages at once when they
// expire, stalling every thread of the process meanwhile.
func startWriteback(dir string) {
	for _, ext := range []string{".vlog", ".mem"} {
		names, err := badgerFiles(dir, ext)
		if err != nil {
			return
		}
		for _, name := range names {
			f, err := os.Open(filepath.Join(dir, name))
			if err != nil {
				continue
			}
			unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
			f.Close()
		}
	}
}
