package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// walRecords writes one commit per device /devices/dNN (n = NN) through
// a store and a model, as a crash leaves them (Badger lost them, the log
// has them), and returns the data directory, emptied of log segments, and
// the log's records in order, each with the device it writes.
func walRecords(t *testing.T, key []byte, devices int) (dir string, recs [][]byte) {
	t.Helper()
	dir = t.TempDir()
	s, m := openWithModel(t, dir, key)
	s.loseWrites = true
	for i := range devices {
		putVar(t, m, model.Path(fmt.Sprintf("/devices/d%02d", i)), "n", strconv.Itoa(i))
	}
	m.Close()
	crash(t, s)
	segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); {
			n := int(binary.LittleEndian.Uint32(data[off:]))
			recs = append(recs, data[off:off+walHeader+n])
			off += walHeader + n
		}
		if err := os.Remove(seg); err != nil {
			t.Fatal(err)
		}
	}
	if len(recs) != devices {
		t.Fatalf("%d records for %d commits", len(recs), devices)
	}
	return dir, recs
}

// layout writes recs into segments: sizes[i] records in segment i+1. It
// returns the segments' paths.
func layout(t *testing.T, dir string, recs [][]byte, sizes ...int) []string {
	t.Helper()
	var paths []string
	for i, n := range sizes {
		p := filepath.Join(dir, "wal", fmt.Sprintf("%016x.log", i+1))
		if err := os.WriteFile(p, bytes.Join(recs[:n], nil), 0o600); err != nil {
			t.Fatal(err)
		}
		recs = recs[n:]
		paths = append(paths, p)
	}
	if len(recs) != 0 {
		t.Fatalf("%d records left out", len(recs))
	}
	return paths
}

// contents reads every file of the log.
func contents(t *testing.T, paths []string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// offsetOf is the offset of record i of a segment made of recs.
func offsetOf(recs [][]byte, i int) int {
	off := 0
	for _, r := range recs[:i] {
		off += len(r)
	}
	return off
}

// refuses checks that the store refuses to open, naming the damaged
// segment and the offset, and that the log is left as it was.
func refuses(t *testing.T, dir string, key []byte, paths []string, seg string, off int) {
	t.Helper()
	before := contents(t, paths)
	s, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: key, Logger: tstest.Logger(t)})
	if err == nil {
		s.Close()
		t.Fatalf("opened a store whose log is damaged in %s at %d", filepath.Base(seg), off)
	}
	var d *WALDamageError
	if !errors.As(err, &d) {
		t.Fatalf("open: %v: not a WALDamageError", err)
	}
	if d.Segment != seg || d.Offset != int64(off) {
		t.Errorf("damage reported in %s at %d, want %s at %d", d.Segment, d.Offset, seg, off)
	}
	if !strings.Contains(err.Error(), filepath.Base(seg)) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", off)) {
		t.Errorf("error does not name the segment and offset: %v", err)
	}
	after := contents(t, paths)
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Errorf("segment %s changed by the failed open", filepath.Base(paths[i]))
		}
	}
}

// opens checks that the store opens and holds devices d00..d(n-1), with
// n = NN, and not the ones in missing.
func opens(t *testing.T, dir string, key []byte, n int, missing ...int) {
	t.Helper()
	s, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: key, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		p := model.Path(fmt.Sprintf("/devices/d%02d", i))
		c, err := s.Context(p)
		if slicesContains(missing, i) {
			if err == nil {
				t.Errorf("%s is there, want it dropped", p)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got := string(c.Variables["n"].Value); got != strconv.Itoa(i) {
			t.Errorf("%s n = %s, want %d", p, got, i)
		}
	}
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func flip(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

var testKey = []byte("0123456789abcdef")

// A damaged record anywhere but at the very end of the last segment stops
// the open with an error naming the segment and the offset, and leaves
// every segment as it was: nothing after the damage is dropped silently.
func TestBadgerWALDamageRefused(t *testing.T) {
	t.Run("checksum in a segment before the last", func(t *testing.T) {
		dir, recs := walRecords(t, nil, 6)
		paths := layout(t, dir, recs, 3, 3)
		off := offsetOf(recs, 1)
		flip(t, paths[0], off+len(recs[1])/2)
		refuses(t, dir, nil, paths, paths[0], off)
	})
	t.Run("last record of a segment before the last", func(t *testing.T) {
		dir, recs := walRecords(t, nil, 6)
		paths := layout(t, dir, recs, 3, 3)
		off := offsetOf(recs, 2)
		flip(t, paths[0], off+len(recs[2])-1)
		refuses(t, dir, nil, paths, paths[0], off)
	})
	t.Run("cut short in a segment before the last", func(t *testing.T) {
		dir, recs := walRecords(t, nil, 6)
		paths := layout(t, dir, recs, 3, 3)
		appendTo(t, paths[0], []byte{0x40, 0, 0, 0, 1, 2, 3})
		refuses(t, dir, nil, paths, paths[0], offsetOf(recs, 3))
	})
	t.Run("checksum in the middle of the last segment", func(t *testing.T) {
		dir, recs := walRecords(t, nil, 6)
		paths := layout(t, dir, recs, 2, 4)
		off := offsetOf(recs[2:], 1)
		flip(t, paths[1], off+walHeader+3)
		refuses(t, dir, nil, paths, paths[1], off)
	})
	for name, grow := range map[string]uint32{"length one too long": 1, "length past the end": 1 << 20, "length over the limit": 0xfffffff0} {
		t.Run(name, func(t *testing.T) {
			dir, recs := walRecords(t, nil, 6)
			paths := layout(t, dir, recs, 2, 4)
			off := offsetOf(recs[2:], 1)
			b, _ := os.ReadFile(paths[1])
			binary.LittleEndian.PutUint32(b[off:], binary.LittleEndian.Uint32(b[off:])+grow)
			os.WriteFile(paths[1], b, 0o600)
			refuses(t, dir, nil, paths, paths[1], off)
		})
	}
	t.Run("zeroed record in the middle of the last segment", func(t *testing.T) {
		dir, recs := walRecords(t, nil, 6)
		paths := layout(t, dir, recs, 2, 4)
		off := offsetOf(recs[2:], 1)
		b, _ := os.ReadFile(paths[1])
		clear(b[off+walHeader : off+len(recs[3])])
		os.WriteFile(paths[1], b, 0o600)
		refuses(t, dir, nil, paths, paths[1], off)
	})
	t.Run("decryption", func(t *testing.T) {
		dir, recs := walRecords(t, testKey, 6)
		paths := layout(t, dir, recs, 3, 3)
		// A byte of the sealed body changed and the checksum made to
		// match: only the authentication fails.
		off := offsetOf(recs, 1)
		b, _ := os.ReadFile(paths[0])
		rec := b[off : off+len(recs[1])]
		rec[len(rec)-1] ^= 1
		binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[walHeader:], walCRC))
		os.WriteFile(paths[0], b, 0o600)
		refuses(t, dir, testKey, paths, paths[0], off)
	})
	t.Run("decryption of the last record of the last segment", func(t *testing.T) {
		dir, recs := walRecords(t, testKey, 4)
		paths := layout(t, dir, recs, 2, 2)
		off := offsetOf(recs[2:], 1)
		b, _ := os.ReadFile(paths[1])
		rec := b[off:]
		rec[walHeader+20] ^= 1
		binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[walHeader:], walCRC))
		os.WriteFile(paths[1], b, 0o600)
		refuses(t, dir, testKey, paths, paths[1], off)
	})
	t.Run("wrong key", func(t *testing.T) {
		dir, recs := walRecords(t, testKey, 2)
		paths := layout(t, dir, recs, 2)
		// The log is checked before Badger is asked: Badger refuses a
		// wrong key on its own, so this only reads the log.
		w, err := openWAL(filepath.Join(dir, "wal"), []byte("fedcba9876543210"), false, tstest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = w.replay(func(uint64, []byte) error { t.Fatal("applied a record"); return nil })
		var d *WALDamageError
		if !errors.As(err, &d) || d.Segment != paths[0] || d.Offset != 0 || !strings.Contains(err.Error(), "decrypt") {
			t.Fatalf("replay with the wrong key: %v", err)
		}
	})
}

// A record cut short at the very end of the last segment (a commit that
// never returned) is dropped, and every record before it, in every
// segment, is applied: a header cut short, a body cut short, and a record
// whose last sectors never reached the disk (zeros).
func TestBadgerWALTornTailOfLastSegment(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		cases := map[string]func(rec []byte) []byte{
			"header cut short": func(rec []byte) []byte { return rec[:5] },
			"body cut short":   func(rec []byte) []byte { return rec[:len(rec)-7] },
			"one byte":         func(rec []byte) []byte { return rec[:1] },
			"zero sectors": func(rec []byte) []byte {
				// A record larger than a sector, its end never written.
				big := make([]byte, 0, 2048)
				big = binary.LittleEndian.AppendUint32(big, 2040)
				big = binary.LittleEndian.AppendUint32(big, 0xdeadbeef)
				big = append(big, rec[walHeader:]...)
				return append(big, make([]byte, 2048-len(big))...)
			},
			"zeros": func(rec []byte) []byte { return make([]byte, len(rec)) },
		}
		for name, torn := range cases {
			t.Run(fmt.Sprintf("%s key=%d", name, len(key)), func(t *testing.T) {
				dir, recs := walRecords(t, key, 7)
				paths := layout(t, dir, recs[:6], 3, 3)
				appendTo(t, paths[1], torn(recs[6]))
				opens(t, dir, key, 7, 6)
				for _, p := range paths {
					if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("segment %s left after a good replay: %v", filepath.Base(p), err)
					}
				}
			})
		}
	}
}

// The way out of a damaged log: once the data directory is copied
// aside, TruncateWAL cuts the named segment at the offset the open named;
// the store then opens with every record before it and every later
// segment. It refuses an offset that is not where a record starts, and a
// store that is open.
func TestTruncateWAL(t *testing.T) {
	dir, recs := walRecords(t, nil, 6)
	paths := layout(t, dir, recs, 3, 3)
	off := offsetOf(recs, 1)
	flip(t, paths[0], off+walHeader+2)
	refuses(t, dir, nil, paths, paths[0], off)

	if _, err := TruncateWAL(dir, filepath.Base(paths[0]), int64(off+1)); err == nil {
		t.Fatal("truncated in the middle of a record")
	}
	if _, err := TruncateWAL(dir, "0000000000000009.log", 0); err == nil {
		t.Fatal("truncated a segment that does not exist")
	}
	if _, err := TruncateWAL(dir, "../wal/"+filepath.Base(paths[0]), int64(off)); err == nil {
		t.Fatal("took a path for a segment name")
	}
	dropped, err := TruncateWAL(dir, filepath.Base(paths[0]), int64(off))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(recs[1]) + len(recs[2])); dropped != want {
		t.Errorf("dropped %d bytes, want %d", dropped, want)
	}
	opens(t, dir, nil, 6, 1, 2)

	s, err := OpenBadger(BadgerOptions{Dir: dir, Logger: tstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := TruncateWAL(dir, "0000000000000001.log", 0); err == nil {
		t.Fatal("truncated the log of an open store")
	}
}

// The decoder of the log's records never reads past its input and
// refuses what it cannot decode; where it decodes, the writes are whole.
func TestWALRecordDecryptRefused(t *testing.T) {
	block, _ := aes.NewCipher(testKey)
	gcm, _ := cipher.NewGCM(block)
	w := &wal{dir: t.TempDir(), aead: gcm}
	w.begin(1)
	w.set([]byte("k"), []byte("v"))
	if err := w.append(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(w.f.Name())
	w.close()
	data[len(data)-1] ^= 1
	binary.LittleEndian.PutUint32(data[4:], crc32.Checksum(data[walHeader:], walCRC))
	if _, _, _, err := w.decodeRecord(data); err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Fatalf("decode of a record that fails authentication: %v", err)
	}
}

// FuzzWALSegment feeds arbitrary segments to the replay's check: it
// never reads past its input; what it keeps decodes record by record up
// to the end it returns; a segment before the last is kept whole or
// refused; and a torn end is only ever dropped where nothing valid
// follows it.
func FuzzWALSegment(f *testing.F) {
	w := &wal{dir: f.TempDir()}
	for i := range 3 {
		w.begin(uint64(i))
		w.set([]byte("key"), []byte("value"))
		w.del([]byte("gone"))
		if err := w.append(); err != nil {
			f.Fatal(err)
		}
	}
	data, _ := os.ReadFile(w.f.Name())
	w.close()
	f.Add(data)
	f.Add(data[:len(data)-3])
	f.Add(append(bytes.Clone(data), make([]byte, 40)...))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &wal{}
		end, err := r.check(data, true)
		if end < 0 || end > len(data) {
			t.Fatalf("end %d outside %d bytes", end, len(data))
		}
		for off := 0; off < end; {
			_, _, size, err := r.decodeRecord(data[off:])
			if err != nil {
				t.Fatalf("kept a record at %d that does not decode: %v", off, err)
			}
			off += size
		}
		if err == nil && end < len(data) && r.recordAfter(data, end+1) {
			t.Fatalf("dropped a torn end at %d with a valid record after it", end)
		}
		end2, err2 := r.check(data, false)
		if err2 == nil && end2 != len(data) {
			t.Fatalf("a segment before the last ends at %d of %d without an error", end2, len(data))
		}
		if err == nil && err2 == nil && end != end2 {
			t.Fatalf("ends %d and %d", end, end2)
		}
	})
}
