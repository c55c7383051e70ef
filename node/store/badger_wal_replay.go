package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Reading the write-ahead log back at open, and the way out when it is
// damaged.
//
// A commit's record is synced before the next one is written, and a
// segment is closed only after its last record was synced, so a crash
// can leave one record incomplete: the last of the last segment. The
// replay checks the whole log before it applies anything. A record that
// fails to decode (a length past the end or over the limit, a checksum
// that does not match, a body that does not decrypt or whose writes do
// not parse) is dropped only when it is that last record and looks like
// a write the disk did not finish, as etcd's WAL decoder judges it
// (isTornEntry):
//
//   - fewer bytes than a header are left, or the record runs past the end
//     of the file; or its checksum does not match and one of the 512-byte
//     sectors it covers reads as zeros (written by the file's growth, not
//     by the record);
//   - and no valid record starts anywhere after it.
//
// A record whose checksum matches but does not decrypt (a wrong key, or
// tampering) is never taken for a torn write. Anywhere else, the open
// fails with a *WALDamageError naming the segment and the offset, and
// neither the log nor Badger is changed: the operator copies the data
// directory aside and cuts the log at that offset (TruncateWAL, `strata
// store truncate-wal`), knowingly losing the rest of that segment.

// walSector is the unit a disk writes whole (or not at all).
const walSector = 512

// walScanBudget bounds the checksum work of looking for a valid record
// after a damaged one; past it the damage is taken for corruption (the
// open refuses, nothing is lost).
const walScanBudget = 256 << 20

// WALDamageError reports a write-ahead log record that cannot be decoded
// and is not the torn end of the log: the store refuses to open.
type WALDamageError struct {
	Segment string // the segment file
	Offset  int64  // where the damaged record starts in it
	Err     error  // what is wrong with the record
}

func (e *WALDamageError) Error() string {
	return fmt.Sprintf("write-ahead log segment %s is damaged at offset %d (%v), before the end of the log: "+
		"refusing to open, nothing was changed (see \"A damaged write-ahead log\" in docs/operations.md)",
		e.Segment, e.Offset, e.Err)
}

func (e *WALDamageError) Unwrap() error { return e.Err }

// replay calls fn with the writes of every record in the log, in order,
// once the whole log has been checked. A torn record at the end of the
// last segment is skipped; damage anywhere else is a *WALDamageError and
// fn is not called.
func (w *wal) replay(fn func(last uint64, writes []byte) error) (int, error) {
	ends := make([]int, len(w.closed))
	for i, cs := range w.closed {
		data, err := os.ReadFile(cs.path)
		if err != nil {
			return 0, err
		}
		end, err := w.check(data, i == len(w.closed)-1)
		if err != nil {
			return 0, &WALDamageError{Segment: cs.path, Offset: int64(end), Err: err}
		}
		if end < len(data) {
			w.log.Warn("write-ahead log: dropping a record cut short at the end of the log (a commit that never returned)",
				"segment", filepath.Base(cs.path), "offset", end, "bytes", len(data)-end)
		}
		ends[i] = end
	}
	n := 0
	for i, cs := range w.closed {
		data, err := os.ReadFile(cs.path)
		if err != nil {
			return n, err
		}
		if len(data) < ends[i] {
			return n, fmt.Errorf("write-ahead log %s: shrank while being replayed", filepath.Base(cs.path))
		}
		for off := 0; off < ends[i]; {
			last, writes, size, err := w.decodeRecord(data[off:])
			if err != nil {
				return n, &WALDamageError{Segment: cs.path, Offset: int64(off), Err: err}
			}
			if err := fn(last, writes); err != nil {
				return n, fmt.Errorf("write-ahead log %s at %d: %w", filepath.Base(cs.path), off, err)
			}
			n++
			off += size
		}
	}
	return n, nil
}

// check decodes every record of a segment and returns where the valid
// records end: len(data), or, in the last segment, where a torn record
// starts. Otherwise it returns the offset of the first record that does
// not decode and why.
func (w *wal) check(data []byte, last bool) (int, error) {
	off := 0
	for off < len(data) {
		_, _, size, err := w.decodeRecord(data[off:])
		if err == nil {
			off += size
			continue
		}
		if last && w.torn(data, off) {
			return off, nil
		}
		return off, err
	}
	return off, nil
}

// torn reports whether the record at off, which does not decode, is a
// write cut short by a crash at the very end of the log.
func (w *wal) torn(data []byte, off int) bool {
	rec := data[off:]
	if len(rec) >= walHeader {
		n := binary.LittleEndian.Uint32(rec)
		if n > walMaxRecord {
			return false // a torn header reads as a prefix of the real one, or zeros
		}
		if end := walHeader + int(n); end <= len(rec) {
			sum := binary.LittleEndian.Uint32(rec[4:])
			if crc32.Checksum(rec[walHeader:end], walCRC) == sum && (n != 0 || sum != 0) {
				return false // the bytes are as written: damaged, not torn
			}
			if !zeroSector(rec[:end], off) {
				return false
			}
		}
	}
	return !w.recordAfter(data, off+1)
}

// zeroSector reports whether rec, found at offset off of its file, covers
// a disk sector (or the part of one it covers) that reads as zeros.
func zeroSector(rec []byte, off int) bool {
	for len(rec) > 0 {
		n := min(walSector-off%walSector, len(rec))
		if allZero(rec[:n]) {
			return true
		}
		rec, off = rec[n:], off+n
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// recordAfter reports whether a valid record starts anywhere in data at
// or after from (or the search is too costly to tell: then it says yes).
func (w *wal) recordAfter(data []byte, from int) bool {
	budget := walScanBudget
	for p := from; p+walHeader <= len(data); p++ {
		n := int(binary.LittleEndian.Uint32(data[p:]))
		if n < 8 || n > len(data)-p-walHeader {
			continue
		}
		if budget -= n; budget < 0 {
			return true
		}
		if crc32.Checksum(data[p+walHeader:p+walHeader+n], walCRC) != binary.LittleEndian.Uint32(data[p+4:]) {
			continue
		}
		if _, _, _, err := w.decodeRecord(data[p:]); err == nil {
			return true
		}
	}
	return false
}

// TruncateWAL cuts the write-ahead log segment named segment (a file
// name such as 0000000000000002.log) in the store directory dir at
// offset, and returns how many bytes it removed. offset must be where a
// record starts, every record before it passing its length and checksum
// checks: the offset a *WALDamageError names. Later segments are kept.
// The store must not be open (TruncateWAL takes its directory lock).
// It is the operator's way out of a damaged log, after copying dir
// aside: the records from offset to the end of that segment are lost.
func TruncateWAL(dir, segment string, offset int64) (int64, error) {
	if len(segment) != 20 || filepath.Base(segment) != segment || filepath.Ext(segment) != ".log" {
		return 0, fmt.Errorf("segment %q: give the file name of a segment in %s, such as 0000000000000001.log",
			segment, filepath.Join(dir, "wal"))
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return 0, err
	}
	defer unlock()
	path := filepath.Join(dir, "wal", segment)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if offset < 0 || offset > int64(len(data)) {
		return 0, fmt.Errorf("offset %d is outside %s (%d bytes)", offset, segment, len(data))
	}
	for off := int64(0); off < offset; {
		rec := data[off:]
		if len(rec) < walHeader {
			return 0, fmt.Errorf("offset %d is not where a record of %s starts (the record at %d is cut short)", offset, segment, off)
		}
		n := int64(binary.LittleEndian.Uint32(rec))
		if n > int64(len(rec)-walHeader) || crc32.Checksum(rec[walHeader:walHeader+n], walCRC) != binary.LittleEndian.Uint32(rec[4:]) {
			return 0, fmt.Errorf("offset %d is not where a record of %s starts (the record at %d is damaged: truncate there)", offset, segment, off)
		}
		if off += walHeader + n; off > offset {
			return 0, fmt.Errorf("offset %d is inside the record of %s at %d", offset, segment, off-walHeader-n)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	err = f.Truncate(offset)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("truncate %s: %w", segment, err)
	}
	return int64(len(data)) - offset, nil
}

// lockDir takes the lock Badger holds on its directory while open, so
// that the log is not changed under a running node.
func lockDir(dir string) (unlock func(), err error) {
	if _, err := os.Stat(filepath.Join(dir, "wal")); err != nil {
		return nil, fmt.Errorf("no write-ahead log in %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("the data directory %s is in use: stop the node first", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
