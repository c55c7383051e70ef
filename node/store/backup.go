package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Online backups (strata backup, docs/operations.md "Backups"): the whole
// store of a running node, written from one consistent view while commits
// go on, as one stream a restore reads back into an empty store of the
// same kind.
//
// A backup file:
//
//	magic "strata-backup\x00\x00\x00" | u32 format version (1)
//	u32 header length n (1..maxBackupHeader) | n bytes of JSON (BackupHeader)
//	u32 CRC-32C of every byte before it
//	body, by BackupHeader.Store:
//	  badger:   a snapshot stream (badger_replica.go), which checksums itself
//	  postgres: table frames (backup_pg.go), which checksum themselves
//
// (integers big endian). Nothing may follow the body. The header says
// which writes the backup holds: every one committed before its view was
// taken, the last of them numbered LastSeq in the change log, so every
// write acknowledged before the backup was asked for.

const (
	backupMagic   = "strata-backup\x00\x00\x00"
	backupVersion = 1
	// maxBackupHeader bounds the JSON header read back.
	maxBackupHeader = 64 << 10
)

// Store kinds a backup names (BackupHeader.Store).
const (
	BackupBadger   = "badger"
	BackupPostgres = "postgres"
)

// ErrBadBackup is returned for a backup that is not one, is of an
// unknown format version, is cut short or fails a checksum. ErrBadSnapshot
// (the body of a Badger backup) is one too.
var ErrBadBackup = errors.New("store: bad backup")

// BackupHeader is what a backup says of itself.
type BackupHeader struct {
	Store string    `json:"store"` // BackupBadger or BackupPostgres
	Node  string    `json:"node"`  // the node's name
	Time  time.Time `json:"time"`  // when the view was taken
	// LastSeq is the change log's last sequence number in the view.
	LastSeq uint64 `json:"last_seq"`
	// Schema is a PostgreSQL backup's schema version (its last migration).
	Schema int `json:"schema,omitempty"`
}

// BackupSource is a view of a store, taken between two commits, to be
// written as a backup. Writes go on meanwhile; the view holds none of
// them. The caller closes it.
type BackupSource interface {
	Header() BackupHeader
	// WriteTo writes the whole backup, header included, once.
	WriteTo(w io.Writer) (int64, error)
	Close() error
}

// writeBackupHeader writes the format's header for h.
func writeBackupHeader(w io.Writer, h BackupHeader) error {
	js, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(backupMagic)
	b.Write(binary.BigEndian.AppendUint32(nil, backupVersion))
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(js))))
	b.Write(js)
	b.Write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(b.Bytes(), walCRC)))
	_, err = w.Write(b.Bytes())
	return err
}

func cutShort(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: cut short: %v", ErrBadBackup, err)
}

// ReadBackupHeader reads and checks the header at the start of a backup,
// leaving r at its body.
func ReadBackupHeader(r io.Reader) (BackupHeader, error) {
	var fixed [len(backupMagic) + 8]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return BackupHeader{}, cutShort(err)
	}
	if string(fixed[:len(backupMagic)]) != backupMagic {
		return BackupHeader{}, fmt.Errorf("%w: not a strata backup", ErrBadBackup)
	}
	p := fixed[len(backupMagic):]
	if v := binary.BigEndian.Uint32(p); v != backupVersion {
		return BackupHeader{}, fmt.Errorf("%w: format version %d (this binary reads %d)", ErrBadBackup, v, backupVersion)
	}
	n := binary.BigEndian.Uint32(p[4:])
	if n == 0 || n > maxBackupHeader {
		return BackupHeader{}, fmt.Errorf("%w: header of %d bytes", ErrBadBackup, n)
	}
	rest := make([]byte, n+4)
	if _, err := io.ReadFull(r, rest); err != nil {
		return BackupHeader{}, cutShort(err)
	}
	crc := crc32.Update(crc32.Checksum(fixed[:], walCRC), walCRC, rest[:n])
	if binary.BigEndian.Uint32(rest[n:]) != crc {
		return BackupHeader{}, fmt.Errorf("%w: header checksum mismatch", ErrBadBackup)
	}
	var h BackupHeader
	if err := json.Unmarshal(rest[:n], &h); err != nil {
		return BackupHeader{}, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	switch h.Store {
	case BackupBadger, BackupPostgres:
	default:
		return BackupHeader{}, fmt.Errorf("%w: store kind %q", ErrBadBackup, h.Store)
	}
	return h, nil
}

// VerifyBackup reads a whole backup, checking its header, every frame and
// every checksum, and that nothing follows it; it stores nothing.
func VerifyBackup(r io.Reader) (BackupHeader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	h, err := ReadBackupHeader(br)
	if err != nil {
		return h, err
	}
	switch h.Store {
	case BackupBadger:
		sr := newSnapshotReader(br)
		if _, err := sr.header(); err != nil {
			return h, err
		}
		for n := uint64(0); ; n++ {
			k, _, err := sr.next(n)
			if err != nil {
				return h, err
			}
			if k == nil {
				return h, atEOF(sr.r)
			}
		}
	default:
		tr := newTableReader(br)
		for {
			t, err := tr.nextTable()
			if err != nil {
				return h, err
			}
			if t == nil {
				return h, atEOF(br)
			}
			if _, err := io.Copy(io.Discard, t); err != nil {
				return h, err
			}
		}
	}
}

// atEOF checks that nothing follows a backup's body.
func atEOF(r *bufio.Reader) error {
	if _, err := r.ReadByte(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: bytes after the end", ErrBadBackup)
		}
		return fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	return nil
}

// Backup takes a view of the store now, for a backup of node. Commits
// wait only for the view to be taken.
func (s *Badger) Backup(node string) (BackupSource, error) {
	v := s.SnapshotView()
	if v.err != nil {
		v.Release()
		return nil, fmt.Errorf("store: backup: %w", v.err)
	}
	return &badgerBackup{v: v, h: BackupHeader{Store: BackupBadger, Node: node, Time: time.Now().UTC(), LastSeq: v.h.LastSeq}}, nil
}

type badgerBackup struct {
	v *SnapshotView
	h BackupHeader
}

func (b *badgerBackup) Header() BackupHeader { return b.h }

func (b *badgerBackup) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	if err := writeBackupHeader(cw, b.h); err != nil {
		return cw.n, err
	}
	_, err := b.v.WriteTo(cw)
	return cw.n, err
}

func (b *badgerBackup) Close() error {
	b.v.Release()
	return nil
}

// RecordName names one node-local record.
type RecordName struct{ Kind, Key string }

// RestoreBadgerBackup makes a new Badger store in opts.Dir, which must be
// missing or empty, from a Badger backup, and returns its header. The
// records named in drop are left out (the node's identities that a
// restored store must not keep, such as its change log's id). The store
// is complete and synced when it returns without error; on error nothing
// is left in opts.Dir (a directory it created is removed).
func RestoreBadgerBackup(opts BadgerOptions, r io.Reader, drop ...RecordName) (h BackupHeader, err error) {
	if opts.InMemory {
		return h, errors.New("store: restore into an in-memory store")
	}
	ents, err := os.ReadDir(opts.Dir)
	created := errors.Is(err, os.ErrNotExist)
	switch {
	case created:
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return h, err
		}
	case err != nil:
		return h, err
	case len(ents) > 0:
		return h, fmt.Errorf("%w: %s holds %d entries: restore into an empty or missing directory", ErrNotEmpty, opts.Dir, len(ents))
	}
	defer func() {
		if err != nil {
			emptyDir(opts.Dir, created)
		}
	}()
	br := bufio.NewReaderSize(r, 256<<10)
	if h, err = ReadBackupHeader(br); err != nil {
		return h, err
	}
	if h.Store != BackupBadger {
		return h, fmt.Errorf("store: a backup of a %s store restores into %s only (strata store migrate moves a badger store to postgres)", h.Store, h.Store)
	}
	dropKeys := map[string]bool{}
	for _, d := range drop {
		dropKeys[string(recordKey(d.Kind, d.Key))] = true
	}
	sr := newSnapshotReader(br)
	if _, err := restoreSnapshot(opts, sr, dropKeys); err != nil {
		return h, err
	}
	return h, atEOF(sr.r)
}

// emptyDir removes what a failed restore left in dir, and dir itself if
// the restore created it.
func emptyDir(dir string, created bool) {
	if created {
		os.RemoveAll(dir)
		return
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
