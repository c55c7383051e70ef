package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// backupOf writes a backup of b (and closes it).
func backupOf(t *testing.T, b BackupSource) []byte {
	t.Helper()
	defer b.Close()
	var buf bytes.Buffer
	n, err := b.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("backup: %d bytes (%d written), %v", n, buf.Len(), err)
	}
	return buf.Bytes()
}

// takeBadgerBackup returns a backup of a filled Badger store, and the
// store (open: the caller closes it).
func takeBadgerBackup(t *testing.T) ([]byte, *Badger) {
	t.Helper()
	src := openTestBadger(t, t.TempDir(), nil)
	fillStore(t, src)
	b, err := src.Backup("hq")
	if err != nil {
		t.Fatal(err)
	}
	return backupOf(t, b), src
}

func TestBadgerBackupRestore(t *testing.T) {
	src := openTestBadger(t, t.TempDir(), nil)
	defer src.Close()
	fillStore(t, src)
	last, _ := src.LastSeq()
	b, err := src.Backup("hq")
	if err != nil {
		t.Fatal(err)
	}
	// A commit after the view is taken is not in the backup, though the
	// view is written after it.
	m := newModel(t, src)
	putContext(t, m, "/after/backup")
	data := backupOf(t, b)

	h, err := VerifyBackup(bytes.NewReader(data))
	if err != nil || h.Store != BackupBadger || h.Node != "hq" || h.LastSeq != last || h.Time.IsZero() {
		t.Fatalf("verify: %+v, %v", h, err)
	}
	dir := filepath.Join(t.TempDir(), "restored") // missing: created
	h, err = RestoreBadgerBackup(BadgerOptions{Dir: dir}, bytes.NewReader(data), RecordName{"user", "alice"})
	if err != nil || h.LastSeq != last {
		t.Fatalf("restore: %+v, %v", h, err)
	}
	dst := openTestBadger(t, dir, nil)
	if got, _ := dst.LastSeq(); got != last {
		t.Fatalf("restored last seq %d, want %d", got, last)
	}
	if _, err := dst.Record("user", "alice"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a record left out: %v", err)
	}
	if v, err := dst.Record("user", "carol"); err != nil || string(v) != "c" {
		t.Fatalf("a record: %q, %v", v, err)
	}
	if _, err := dst.Context("/after/backup"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a write after the backup's view: %v", err)
	}
	dst.Close()
	// Only into an empty directory.
	if _, err := RestoreBadgerBackup(BadgerOptions{Dir: dir}, bytes.NewReader(data)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a store: %v", err)
	}

	// Everything the store holds comes back as it was, encrypted at rest
	// with the key given.
	b, err = src.Backup("hq")
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	dir = t.TempDir() // empty
	if _, err := RestoreBadgerBackup(BadgerOptions{Dir: dir, EncryptionKey: key}, bytes.NewReader(backupOf(t, b))); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBadger(BadgerOptions{Dir: dir}); err == nil {
		t.Fatal("the restored store opens without its key")
	}
	dst = openTestBadger(t, dir, key)
	defer dst.Close()
	sameStores(t, src, dst)
}

// Every damaged backup is refused with a clear error, and leaves no
// store behind: a missing directory stays missing, an empty one empty.
func TestBadgerBackupDamaged(t *testing.T) {
	data, src := takeBadgerBackup(t)
	src.Close()
	hdrEnd := len(backupMagic) + 8 + int(binary.BigEndian.Uint32(data[len(backupMagic)+4:])) + 4

	flip := func(i int) []byte {
		d := bytes.Clone(data)
		d[i] ^= 0x40
		return d
	}
	version := bytes.Clone(data)
	binary.BigEndian.PutUint32(version[len(backupMagic):], 2)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "cut short"},
		{"not a backup", []byte("PGDMP and so on, and so on, and so on"), "not a strata backup"},
		{"cut in the header", data[:hdrEnd-3], "cut short"},
		{"cut in the body", data[:hdrEnd+(len(data)-hdrEnd)/2], "cut short"},
		{"cut before the checksum", data[:len(data)-2], "cut short"},
		{"wrong version", version, "format version 2 (this binary reads 1)"},
		{"header checksum", flip(hdrEnd - 10), "header checksum mismatch"},
		{"body checksum", flip(len(data) - 1), "checksum mismatch"},
		{"body byte", flip(len(data) - 20), ""},
		{"bytes after the end", append(bytes.Clone(data), 0), "bytes after the end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifyBackup(bytes.NewReader(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) || !(errors.Is(err, ErrBadBackup) || errors.Is(err, ErrBadSnapshot)) {
				t.Fatalf("verify: %v, want %q", err, c.want)
			}
			missing := filepath.Join(t.TempDir(), "restored")
			_, err = RestoreBadgerBackup(BadgerOptions{Dir: missing}, bytes.NewReader(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("restore: %v, want %q", err, c.want)
			}
			if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("restore left %s: %v", missing, err)
			}
			empty := t.TempDir()
			if _, err := RestoreBadgerBackup(BadgerOptions{Dir: empty}, bytes.NewReader(c.data)); err == nil {
				t.Fatal("restored")
			}
			if ents, _ := os.ReadDir(empty); len(ents) != 0 {
				t.Fatalf("restore left %d entries in %s", len(ents), empty)
			}
		})
	}
}

func TestPostgresBackupRestore(t *testing.T) {
	pg := pgtest.Shared(t)
	ctx := context.Background()
	src := openTestPostgres(t, pg.NewDatabase(t))
	defer src.Close()
	fillStore(t, src)
	last, _ := src.LastSeq()

	b, err := src.Backup(ctx, "hq")
	if err != nil {
		t.Fatal(err)
	}
	// A commit after the transaction started is not in the backup,
	// though the tables are exported after it.
	m := newModel(t, src)
	putContext(t, m, "/after/backup")
	data := backupOf(t, b)
	h, err := VerifyBackup(bytes.NewReader(data))
	if err != nil || h.Store != BackupPostgres || h.LastSeq != last || h.Schema == 0 {
		t.Fatalf("verify: %+v, %v", h, err)
	}

	// A badger backup does not restore into postgres, nor the reverse.
	if _, err := RestoreBadgerBackup(BadgerOptions{Dir: t.TempDir()}, bytes.NewReader(data)); err == nil || !strings.Contains(err.Error(), "restores into postgres only") {
		t.Fatalf("postgres backup into badger: %v", err)
	}
	bdata, bsrc := takeBadgerBackup(t)
	bsrc.Close()

	dsn := pg.NewDatabase(t)
	dst := openTestPostgres(t, dsn)
	if _, err := RestorePostgresBackup(ctx, dst, bytes.NewReader(bdata)); err == nil || !strings.Contains(err.Error(), "restores into badger only") {
		t.Fatalf("badger backup into postgres: %v", err)
	}
	// Damaged backups: refused, nothing committed.
	for name, d := range map[string][]byte{
		"cut":      data[:len(data)-100],
		"checksum": append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1),
		"trailing": append(bytes.Clone(data), 'x'),
	} {
		if _, err := RestorePostgresBackup(ctx, dst, bytes.NewReader(d)); !errors.Is(err, ErrBadBackup) {
			t.Fatalf("%s: %v", name, err)
		}
		if seq, err := dst.LastSeq(); err != nil || seq != 0 {
			t.Fatalf("%s: the database holds seq %d, %v", name, seq, err)
		}
	}
	h, err = RestorePostgresBackup(ctx, dst, bytes.NewReader(data), RecordName{"user", "alice"})
	if err != nil || h.LastSeq != last {
		t.Fatalf("restore: %+v, %v", h, err)
	}
	if _, err := dst.Record("user", "alice"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a record left out: %v", err)
	}
	if v, err := dst.Record("user", "carol"); err != nil || string(v) != "c" {
		t.Fatalf("a record: %q, %v", v, err)
	}
	if _, err := RestorePostgresBackup(ctx, dst, bytes.NewReader(data)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore twice: %v", err)
	}
	dst.Close()
	dst = openTestPostgres(t, dsn)
	if got, _ := dst.LastSeq(); got != last {
		t.Fatalf("restored last seq %d, want %d", got, last)
	}
	if _, err := dst.Context("/after/backup"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a write after the backup's view: %v", err)
	}
	dst.Close()

	// Everything the store holds comes back as it was.
	if b, err = src.Backup(ctx, "hq"); err != nil {
		t.Fatal(err)
	}
	dsn = pg.NewDatabase(t)
	dst = openTestPostgres(t, dsn)
	if _, err := RestorePostgresBackup(ctx, dst, bytes.NewReader(backupOf(t, b))); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	dst = openTestPostgres(t, dsn)
	defer dst.Close()
	sameStores(t, src, dst)
}
