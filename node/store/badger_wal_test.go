package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-dm/strata/model"
)

// openWithModel opens a store in dir and a model on it.
func openWithModel(t *testing.T, dir string, key []byte) (*Badger, *model.Model) {
	t.Helper()
	s, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

// crash stops s as a machine crash would leave it once Badger's unsynced
// writes are lost (with loseWrites set before): no checkpoint, no sync,
// the write-ahead log left as it is.
func crash(t *testing.T, s *Badger) {
	t.Helper()
	close(s.quit)
	<-s.done
	<-s.walDone
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.wal.close(); err != nil {
		t.Fatal(err)
	}
}

// walFiles returns the contents of the write-ahead log's segments.
func walFiles(t *testing.T, dir string) [][]byte {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// Writes Badger lost (a machine crash before its files were written
// back) come back from the write-ahead log at the next open: contexts,
// the change log, events and records, and a checkpoint taken meanwhile.
func TestBadgerWALRestoresLostWrites(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("0123456789abcdef")} {
		t.Run(fmt.Sprintf("key=%d", len(key)), func(t *testing.T) {
			dir := t.TempDir()
			s, m := openWithModel(t, dir, key)
			for i := range 20 {
				putVar(t, m, model.Path(fmt.Sprintf("/devices/d%02d", i)), "n", "1")
			}
			if err := s.trimWAL(true); err != nil { // all of that is durable in Badger
				t.Fatal(err)
			}
			s.loseWrites = true
			putVar(t, m, "/devices/d01", "n", "2")
			putVar(t, m, "/devices/lost", "n", "\"secret-value-7\"")
			if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/devices/d02"}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpEvent, Path: "/devices/d03",
				Event: &model.Event{Name: "door.open", Level: model.LevelWarning}}); err != nil {
				t.Fatal(err)
			}
			if err := m.PutRecord(context.Background(), "token", "t1", []byte("v1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			last := putVar(t, m, "/devices/d04", "n", "3")
			m.Close()
			crash(t, s)
			segs := walFiles(t, dir)
			if len(segs) == 0 {
				t.Fatal("no write-ahead log left")
			}
			for _, b := range segs {
				if bytes.Contains(b, []byte("secret-value-7")) != (key == nil) {
					t.Fatalf("plaintext in the log: %v, encrypted: %v", bytes.Contains(b, []byte("secret-value-7")), key != nil)
				}
			}

			before, _ := filepath.Glob(filepath.Join(dir, "wal", "*.log"))
			s, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: key})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got, err := s.LastSeq(); err != nil || got != last {
				t.Fatalf("last seq %d (%v), want %d", got, err, last)
			}
			for p, want := range map[model.Path]string{"/devices/d01": "2", "/devices/lost": "\"secret-value-7\"", "/devices/d04": "3", "/devices/d05": "1"} {
				if got := varOf(t, s, p, "n"); got != want {
					t.Errorf("%s n = %s, want %s", p, got, want)
				}
			}
			if _, err := s.Context("/devices/d02"); !errors.Is(err, model.ErrNotFound) {
				t.Errorf("deleted d02: %v", err)
			}
			evs, err := s.Events("/devices/d03", model.EventQuery{})
			if err != nil || len(evs) != 1 || evs[0].Name != "door.open" {
				t.Errorf("events of d03: %v, %v", evs, err)
			}
			if v, err := s.Record("token", "t1"); err != nil || string(v) != "v1" {
				t.Errorf("record: %q, %v", v, err)
			}
			es, err := s.ReadLog(last-3, 10)
			if err != nil || len(es) != 3 || es[2].Seq != last {
				t.Errorf("log after %d: %d entries, %v", last-3, len(es), err)
			}
			for _, seg := range before {
				if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("segment %s still there after the replay: %v", filepath.Base(seg), err)
				}
			}
		})
	}
}

// A record cut short by a crash (the commit never returned) ends the
// replay of its segment; everything before it is applied.
func TestBadgerWALTornTail(t *testing.T) {
	dir := t.TempDir()
	s, m := openWithModel(t, dir, nil)
	s.loseWrites = true
	putVar(t, m, "/devices/a", "n", "1")
	last := putVar(t, m, "/devices/b", "n", "2")
	m.Close()
	crash(t, s)
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.log"))
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A header announcing more than follows, then part of a body.
	f.Write([]byte{0x40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7})
	f.Close()

	s, err = OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.LastSeq(); err != nil || got != last {
		t.Fatalf("last seq %d (%v), want %d", got, err, last)
	}
	if got := varOf(t, s, "/devices/b", "n"); got != "2" {
		t.Errorf("b n = %s", got)
	}
}

// The log's records round-trip, and decoding refuses what is damaged.
func TestWALRecordRoundTrip(t *testing.T) {
	block, _ := aes.NewCipher([]byte("0123456789abcdef"))
	gcm, _ := cipher.NewGCM(block)
	for _, aead := range []cipher.AEAD{nil, gcm} {
		dir := t.TempDir()
		w := &wal{dir: dir, aead: aead}
		w.begin(42)
		w.set([]byte("k1"), []byte("v1"))
		w.del([]byte("k2"))
		w.set([]byte("k3"), nil)
		if err := w.append(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(w.f.Name())
		if err != nil {
			t.Fatal(err)
		}
		last, writes, size, err := w.decodeRecord(data)
		if err != nil || last != 42 || size != len(data) {
			t.Fatalf("decode: last %d size %d/%d: %v", last, size, len(data), err)
		}
		var got []string
		eachWrite(writes, func(kind byte, k, v []byte) error {
			got = append(got, fmt.Sprintf("%d %s %q %v", kind, k, v, v == nil))
			return nil
		})
		want := []string{`1 k1 "v1" false`, `2 k2 "" true`, `1 k3 "" false`}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("writes %v, want %v", got, want)
		}
		for i := range data {
			bad := bytes.Clone(data)
			bad[i] ^= 0x55
			if _, _, _, err := w.decodeRecord(bad); err == nil && i >= 4 {
				t.Fatalf("byte %d flipped: decoded", i)
			}
		}
		w.close()
	}
}

// Badger still keeps its memtables in *.mem files: the log's segments
// are deleted when the memtable files that held their writes are gone.
func TestBadgerMemtableFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mems, err := badgerFiles(dir, ".mem")
	if err != nil || len(mems) == 0 {
		t.Fatalf("memtable files: %v, %v", mems, err)
	}
}

func FuzzWALRecord(f *testing.F) {
	w := &wal{dir: f.TempDir()}
	w.begin(7)
	w.set([]byte("key"), []byte("value"))
	w.del([]byte("gone"))
	if err := w.append(); err != nil {
		f.Fatal(err)
	}
	data, _ := os.ReadFile(w.f.Name())
	w.close()
	f.Add(data)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &wal{}
		_, writes, size, err := r.decodeRecord(data)
		if err != nil {
			return
		}
		if size > len(data) {
			t.Fatalf("size %d past %d bytes", size, len(data))
		}
		if err := eachWrite(writes, func(byte, []byte, []byte) error { return nil }); err != nil {
			t.Fatalf("a record that decoded has bad writes: %v", err)
		}
	})
}
