package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// pgBackupBytes is a PostgreSQL backup of two small tables, framed as
// Postgres.Backup frames them (the COPY data is opaque to the reader).
func pgBackupBytes(t testing.TB) []byte {
	var buf bytes.Buffer
	if err := writeBackupHeader(&buf, BackupHeader{Store: BackupPostgres, Node: "hq", Time: time.Unix(1, 0).UTC(), LastSeq: 7, Schema: 5}); err != nil {
		t.Fatal(err)
	}
	tw := newTableWriter(&buf)
	tw.table("meta", []string{"id", "last_seq", "first_seq"})
	tw.Write([]byte("PGCOPY\n\xff\r\n\x00 some rows"))
	tw.end(1)
	tw.table("log", []string{"seq", "doc"})
	tw.end(0)
	if err := tw.close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPostgresBackupFraming(t *testing.T) {
	data := pgBackupBytes(t)
	h, err := VerifyBackup(bytes.NewReader(data))
	if err != nil || h.Store != BackupPostgres || h.LastSeq != 7 || h.Schema != 5 {
		t.Fatalf("verify: %+v, %v", h, err)
	}
	for i := range data {
		if _, err := VerifyBackup(bytes.NewReader(data[:i])); !errors.Is(err, ErrBadBackup) {
			t.Fatalf("cut at %d of %d: %v", i, len(data), err)
		}
	}
}

// FuzzVerifyBackup feeds the backup reader (header, snapshot frames,
// table frames) arbitrary bytes: it answers with an error or a header,
// never panics, and allocates no more than what arrived.
func FuzzVerifyBackup(f *testing.F) {
	f.Add(pgBackupBytes(f))
	var buf bytes.Buffer
	writeBackupHeader(&buf, BackupHeader{Store: BackupBadger, Node: "hq", LastSeq: 3})
	sw := newSnapshotWriter(&buf)
	sw.header(SnapshotHeader{LastSeq: 3})
	sw.frame([]byte("mlast"), []byte{0, 0, 0, 0, 0, 0, 0, 3})
	sw.frame([]byte("c/a"), []byte("context"))
	sw.end()
	f.Add(buf.Bytes())
	f.Add([]byte(backupMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := VerifyBackup(bytes.NewReader(data))
		if err == nil && h.Store != BackupBadger && h.Store != BackupPostgres {
			t.Fatalf("accepted store kind %q", h.Store)
		}
		if err != nil && !errors.Is(err, ErrBadBackup) && !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("error without a kind: %v", err)
		}
	})
}
