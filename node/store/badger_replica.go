package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// What a Raft replica (node/cluster) needs of the Badger store: the last
// Raft log index applied, written in the same write as the batch it
// applied, so that a restarted replica resumes after it and applies
// nothing twice; and a snapshot of the whole store as a stream, written
// from one consistent view and read back into a new store, so that a
// replica that is new or fell behind the leader's log catches up without
// the store ever being held in memory.
//
// A snapshot stream:
//
//	magic "strata-snapshot\x00" | u32 version (1) | u64 applied | u64 last sequence number
//	frames: uvarint key length (> 0) | key | uvarint value length | value
//	end: uvarint 0 | u64 frames | u32 CRC-32C of every byte before it
//
// (integers big endian). The stream holds every key as Badger holds it:
// contexts as of the last checkpoint and the log after it, from which
// opening the restored store rebuilds the overlay, as after a restart.

var (
	keyApplied = []byte("mraft-applied")
	// keyAppliedBatch holds the ID of the batch applied at keyApplied
	// (model.Batch.ID), written with it: the next batch may have been
	// built on it (model.Pipelined).
	keyAppliedBatch = []byte("mraft-batch")
)

const (
	snapshotMagic   = "strata-snapshot\x00"
	snapshotVersion = 1
	// maxSnapshotKey and maxSnapshotValue bound a frame read back (Badger's
	// own limits are below them).
	maxSnapshotKey   = 1 << 16
	maxSnapshotValue = walMaxRecord
)

// ErrBadSnapshot is returned for a snapshot stream that is not one, is
// cut short or does not match its checksum.
var ErrBadSnapshot = errors.New("store: bad snapshot stream")

// SnapshotHeader is what a snapshot stream says of itself.
type SnapshotHeader struct {
	Applied uint64 // the last Raft log index applied to the store
	LastSeq uint64 // the change log's last sequence number
}

// CommitApplied is Commit, recording that the store holds every Raft log
// entry up to applied, and the batch's ID (AppliedBatch): all land in one
// write, or none does.
func (s *Badger) CommitApplied(b *model.Batch, applied uint64) error {
	if applied == 0 {
		return errors.New("store: commit at raft index 0")
	}
	return s.commit(b, applied)
}

// AppliedBatch returns the ID of the batch applied at the last Raft log
// index applied, 0 if none.
func (s *Badger) AppliedBatch() (uint64, error) {
	var n uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		n, err = readSeq(txn, keyAppliedBatch)
		return err
	})
	return n, err
}

// EventRef names one event: its context and sequence number.
type EventRef struct {
	Path model.Path
	Seq  uint64
}

// EventsToPrune returns up to limit of the events PruneEvents would drop
// now (limit <= 0: all). A cluster's leader decides so what every replica
// deletes (DeleteEventsApplied), reading its store while it goes on
// applying the log: the scan stays off the log's path.
func (s *Badger) EventsToPrune(perContext int, olderThan time.Time, limit int) ([]EventRef, error) {
	var refs []EventRef
	err := s.prunable(perContext, olderThan, func(_ *model.Event, key []byte) bool {
		refs = append(refs, EventRef{Path: model.Path(key[1 : len(key)-9]), Seq: binary.BigEndian.Uint64(key[len(key)-8:])})
		return limit <= 0 || len(refs) < limit
	})
	return refs, err
}

// DeleteEventsApplied deletes the events refs names that the store holds,
// with their feed keys, as a replica applies the Raft log entry at index
// applied, recorded in its last write. An event it does not hold (its
// context was deleted meanwhile, or a restart applies the entry again) is
// skipped. It returns how many events went.
func (s *Badger) DeleteEventsApplied(refs []EventRef, applied uint64) (int, error) {
	if applied == 0 {
		return 0, errors.New("store: event deletion at raft index 0")
	}
	var keys [][]byte
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		for _, r := range refs {
			k := eventKey(r.Path, r.Seq)
			item, err := txn.Get(k)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var ev model.Event
			if err := item.Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return err
			}
			keys = append(keys, feedKeys(&ev)...)
			keys = append(keys, k)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, s.deleteLogged(keys, setApplied(applied))
}

// CompactLogApplied drops the change-log entries up to and including upTo
// (the leader's choice: every replica compacts to the same start) as a
// replica applies it from the Raft log entry at index applied, recorded
// in its last write. The replica's store takes no commit meanwhile (its
// commits are the log's, applied one after another), so the checkpoint it
// may need first covers upTo.
func (s *Badger) CompactLogApplied(upTo, applied uint64) (int, error) {
	if applied == 0 {
		return 0, errors.New("store: compaction at raft index 0")
	}
	return s.compactLogTo(upTo, setApplied(applied))
}

// FirstSeq returns the first sequence number the change log holds after
// compaction (1 before any).
func (s *Badger) FirstSeq() (uint64, error) {
	var first uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		first, err = readSeq(txn, keyFirst)
		return err
	})
	return max(first, 1), err
}

func setApplied(applied uint64) func(w *txnWriter) error {
	return func(w *txnWriter) error { return w.set(keyApplied, seqBytes(applied)) }
}

// Applied returns the last Raft log index applied (CommitApplied), 0 if
// none.
func (s *Badger) Applied() (uint64, error) {
	var n uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		n, err = readSeq(txn, keyApplied)
		return err
	})
	return n, err
}

// WriteSnapshot writes every key of the store to w, from one view taken
// between two commits, and returns the stream's header. Commits go on
// meanwhile.
func (s *Badger) WriteSnapshot(w io.Writer) (SnapshotHeader, error) {
	v := s.SnapshotView()
	defer v.Release()
	_, err := v.WriteTo(w)
	return v.Header(), err
}

// SnapshotView is a view of the whole store, taken between two commits,
// to be written as a snapshot stream. Badger keeps the versions it reads
// until Release.
type SnapshotView struct {
	txn *badger.Txn
	h   SnapshotHeader
	err error
}

// SnapshotView takes a view of the store now; the caller releases it.
func (s *Badger) SnapshotView() *SnapshotView {
	s.commitMu.Lock()
	v := &SnapshotView{txn: s.db.NewTransaction(false)}
	s.commitMu.Unlock()
	if v.h.Applied, v.err = readSeq(v.txn, keyApplied); v.err == nil {
		v.h.LastSeq, v.err = readSeq(v.txn, keyLast)
	}
	return v
}

// Header is what the view's stream says of itself.
func (v *SnapshotView) Header() SnapshotHeader { return v.h }

// Release lets Badger forget the versions the view held.
func (v *SnapshotView) Release() { v.txn.Discard() }

// WriteTo writes the view as a snapshot stream to w.
func (v *SnapshotView) WriteTo(w io.Writer) (int64, error) {
	if v.err != nil {
		return 0, fmt.Errorf("store: snapshot: %w", v.err)
	}
	cw := &countWriter{w: w}
	sw := newSnapshotWriter(cw)
	sw.header(v.h)
	it := v.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(val []byte) error { return sw.frame(item.Key(), val) })
		if err != nil {
			return cw.n, fmt.Errorf("store: snapshot: %w", err)
		}
	}
	if err := sw.end(); err != nil {
		return cw.n, fmt.Errorf("store: snapshot: %w", err)
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// snapshotWriter frames a stream and keeps its checksum.
type snapshotWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
	n   uint64
	err error
	buf [binary.MaxVarintLen64]byte
}

func newSnapshotWriter(w io.Writer) *snapshotWriter {
	sw := &snapshotWriter{crc: crc32.New(walCRC)}
	sw.w = bufio.NewWriterSize(io.MultiWriter(w, sw.crc), 256<<10)
	return sw
}

func (sw *snapshotWriter) write(p []byte) {
	if sw.err == nil {
		_, sw.err = sw.w.Write(p)
	}
}

func (sw *snapshotWriter) uvarint(v uint64) { sw.write(binary.AppendUvarint(sw.buf[:0], v)) }

func (sw *snapshotWriter) header(h SnapshotHeader) {
	var b [4 + 8 + 8]byte
	binary.BigEndian.PutUint32(b[0:], snapshotVersion)
	binary.BigEndian.PutUint64(b[4:], h.Applied)
	binary.BigEndian.PutUint64(b[12:], h.LastSeq)
	sw.write([]byte(snapshotMagic))
	sw.write(b[:])
}

func (sw *snapshotWriter) frame(k, v []byte) error {
	sw.uvarint(uint64(len(k)))
	sw.write(k)
	sw.uvarint(uint64(len(v)))
	sw.write(v)
	sw.n++
	return sw.err
}

func (sw *snapshotWriter) end() error {
	sw.uvarint(0)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], sw.n)
	sw.write(b[:])
	if sw.err != nil {
		return sw.err
	}
	if err := sw.w.Flush(); err != nil {
		return err
	}
	// The checksum covers everything before it, so it goes out directly.
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], sw.crc.Sum32())
	_, err := sw.w.Write(c[:])
	if err == nil {
		err = sw.w.Flush()
	}
	return err
}

// snapshotReader reads a stream, checking its checksum.
type snapshotReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func newSnapshotReader(r io.Reader) *snapshotReader {
	return &snapshotReader{r: bufio.NewReaderSize(r, 256<<10), crc: crc32.New(walCRC)}
}

func (sr *snapshotReader) full(p []byte) error {
	if _, err := io.ReadFull(sr.r, p); err != nil {
		return fmt.Errorf("%w: cut short: %v", ErrBadSnapshot, err)
	}
	sr.crc.Write(p)
	return nil
}

func (sr *snapshotReader) uvarint() (uint64, error) {
	var b [binary.MaxVarintLen64]byte
	for i := range b {
		c, err := sr.r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: cut short: %v", ErrBadSnapshot, err)
		}
		b[i] = c
		if c < 0x80 {
			sr.crc.Write(b[:i+1])
			v, n := binary.Uvarint(b[:i+1])
			if n <= 0 {
				return 0, fmt.Errorf("%w: bad length", ErrBadSnapshot)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: bad length", ErrBadSnapshot)
}

func (sr *snapshotReader) header() (SnapshotHeader, error) {
	var b [len(snapshotMagic) + 4 + 8 + 8]byte
	if err := sr.full(b[:]); err != nil {
		return SnapshotHeader{}, err
	}
	if string(b[:len(snapshotMagic)]) != snapshotMagic {
		return SnapshotHeader{}, fmt.Errorf("%w: not a store snapshot", ErrBadSnapshot)
	}
	p := b[len(snapshotMagic):]
	if v := binary.BigEndian.Uint32(p); v != snapshotVersion {
		return SnapshotHeader{}, fmt.Errorf("%w: version %d (this binary reads %d)", ErrBadSnapshot, v, snapshotVersion)
	}
	return SnapshotHeader{Applied: binary.BigEndian.Uint64(p[4:]), LastSeq: binary.BigEndian.Uint64(p[12:])}, nil
}

// next returns the next frame's key and value, or nil, nil at the end
// (after checking the frame count and the checksum).
func (sr *snapshotReader) next(n uint64) ([]byte, []byte, error) {
	kl, err := sr.uvarint()
	if err != nil {
		return nil, nil, err
	}
	if kl == 0 {
		var b [8]byte
		if err := sr.full(b[:]); err != nil {
			return nil, nil, err
		}
		if got := binary.BigEndian.Uint64(b[:]); got != n {
			return nil, nil, fmt.Errorf("%w: %d frames read, the stream says %d", ErrBadSnapshot, n, got)
		}
		want := sr.crc.Sum32()
		var c [4]byte
		if _, err := io.ReadFull(sr.r, c[:]); err != nil {
			return nil, nil, fmt.Errorf("%w: cut short: %v", ErrBadSnapshot, err)
		}
		if binary.BigEndian.Uint32(c[:]) != want {
			return nil, nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
		}
		return nil, nil, nil
	}
	if kl > maxSnapshotKey {
		return nil, nil, fmt.Errorf("%w: key of %d bytes", ErrBadSnapshot, kl)
	}
	k := make([]byte, kl)
	if err := sr.full(k); err != nil {
		return nil, nil, err
	}
	vl, err := sr.uvarint()
	if err != nil {
		return nil, nil, err
	}
	if vl > maxSnapshotValue {
		return nil, nil, fmt.Errorf("%w: value of %d bytes", ErrBadSnapshot, vl)
	}
	// The value grows as it arrives: a length is not trusted with an
	// allocation before the bytes are there.
	buf := bytes.NewBuffer(make([]byte, 0, min(vl, 1<<20)))
	if _, err := io.CopyN(buf, sr.r, int64(vl)); err != nil {
		return nil, nil, fmt.Errorf("%w: cut short: %v", ErrBadSnapshot, err)
	}
	sr.crc.Write(buf.Bytes())
	return k, buf.Bytes(), nil
}

// ReadSnapshotHeader reads the header at the start of a snapshot stream.
func ReadSnapshotHeader(r io.Reader) (SnapshotHeader, error) {
	return newSnapshotReader(r).header()
}

// RestoreSnapshot makes a new store in opts.Dir, which must not exist or
// be empty, from a stream WriteSnapshot wrote. The store is complete
// and synced when it returns without error; on error opts.Dir may hold a
// partial store, which the caller removes. Open it with OpenBadger.
func RestoreSnapshot(opts BadgerOptions, r io.Reader) (SnapshotHeader, error) {
	if opts.InMemory {
		return SnapshotHeader{}, errors.New("store: restore into an in-memory store")
	}
	if ents, err := os.ReadDir(opts.Dir); err == nil && len(ents) > 0 {
		return SnapshotHeader{}, fmt.Errorf("store: restore into %s: the directory is not empty", opts.Dir)
	}
	return restoreSnapshot(opts, newSnapshotReader(r), nil)
}

// restoreSnapshot is RestoreSnapshot from sr, which it reads to the end of
// the stream and not beyond (what follows stays in sr.r).
// Keys in drop are not restored.
func restoreSnapshot(opts BadgerOptions, sr *snapshotReader, drop map[string]bool) (SnapshotHeader, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheMB <= 0 {
		opts.CacheMB = 16
	}
	bo, err := opts.badgerOptions()
	if err != nil {
		return SnapshotHeader{}, err
	}
	h, err := sr.header()
	if err != nil {
		return h, err
	}
	db, err := badger.Open(bo)
	if err != nil {
		return h, fmt.Errorf("store: open badger in %s: %w", opts.Dir, err)
	}
	err = loadSnapshot(db, sr, drop)
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return h, fmt.Errorf("store: restore into %s: %w", opts.Dir, err)
	}
	return h, syncDir(opts.Dir)
}

func loadSnapshot(db *badger.DB, sr *snapshotReader, drop map[string]bool) error {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var n uint64
	for {
		k, v, err := sr.next(n)
		if err != nil {
			return err
		}
		if k == nil {
			return wb.Flush()
		}
		// Every key is copied as it is, whatever its kind: the stream is
		// the whole store of a replica of the same node (checksummed, and
		// received from a replica certificate), and a kind this binary
		// does not know is kept for the binary that does.
		n++
		if drop[string(k)] {
			continue
		}
		if err := wb.Set(k, v); err != nil {
			return err
		}
	}
}
