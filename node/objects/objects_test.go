package objects

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
)

func blob(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// testStore is the conformance suite every backend passes.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	data, key := blob(t, 3<<20+17)

	t.Run("missing", func(t *testing.T) {
		if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat of a missing object: %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, key, 0, -1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a missing object: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Fatalf("Delete of a missing object: %v", err)
		}
	})
	t.Run("bad keys", func(t *testing.T) {
		for _, k := range []string{"", "../etc/passwd", strings.ToUpper(key), key + "0"} {
			if err := s.Put(ctx, k, bytes.NewReader(nil), 0); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
			}
		}
	})
	t.Run("refused content", func(t *testing.T) {
		flipped := bytes.Clone(data)
		flipped[len(flipped)-1] ^= 1
		cases := map[string]struct {
			r    io.Reader
			size int64
		}{
			"last byte flipped": {bytes.NewReader(flipped), int64(len(data))},
			"short":             {bytes.NewReader(data[:len(data)-1]), int64(len(data))},
			"long":              {io.MultiReader(bytes.NewReader(data), strings.NewReader("x")), int64(len(data))},
			"wrong size":        {bytes.NewReader(data), int64(len(data) - 1)},
			"reader fails":      {iotest.TimeoutReader(bytes.NewReader(data)), int64(len(data))},
		}
		for name, c := range cases {
			err := s.Put(ctx, key, c.r, c.size)
			if err == nil {
				t.Errorf("%s: Put succeeded", name)
			}
			// Nothing but the right bytes is ever stored under key (a
			// service may keep the first size bytes of a longer stream:
			// they are the object).
			if rc, err := s.Get(ctx, key, 0, -1); err == nil {
				got, _ := io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(got, data) {
					t.Errorf("%s: after a refused Put, the store holds %d other bytes", name, len(got))
				}
				s.Delete(ctx, key)
			} else if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: after a refused Put, Get: %v", name, err)
			}
		}
	})
	t.Run("put get", func(t *testing.T) {
		// A reader that hands out a few bytes at a time: streamed.
		if err := s.Put(ctx, key, iotest.HalfReader(bytes.NewReader(data)), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put again: %v", err)
		}
		info, err := s.Stat(ctx, key)
		if err != nil || info.Size != int64(len(data)) || info.Key != key {
			t.Fatalf("Stat: %+v, %v", info, err)
		}
		for _, c := range []struct{ off, n int64 }{{0, -1}, {0, 10}, {1 << 20, -1}, {12345, 1 << 20}, {int64(len(data)) - 1, 1}, {int64(len(data)), -1}, {5, 0}} {
			rc, err := s.Get(ctx, key, c.off, c.n)
			if err != nil {
				t.Fatalf("Get %d+%d: %v", c.off, c.n, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			end := int64(len(data))
			if c.n >= 0 {
				end = c.off + c.n
			}
			if err != nil || !bytes.Equal(got, data[c.off:end]) {
				t.Fatalf("Get %d+%d: %d bytes, %v; want %d", c.off, c.n, len(got), err, end-c.off)
			}
		}
	})
	t.Run("list delete", func(t *testing.T) {
		small, k2 := blob(t, 10)
		if err := s.Put(ctx, k2, bytes.NewReader(small), 10); err != nil {
			t.Fatal(err)
		}
		var keys []string
		if err := s.List(ctx, func(i Info) error { keys = append(keys, i.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		want := []string{key, k2}
		if k2 < key {
			want = []string{k2, key}
		}
		if strings.Join(keys, ",") != strings.Join(want, ",") {
			t.Fatalf("List: %v, want %v", keys, want)
		}
		for _, k := range want {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat after Delete: %v", err)
		}
	})
}

func TestFS(t *testing.T) {
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

func TestFSRemovesTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, key := blob(t, 100)
	flipped := bytes.Clone(data)
	flipped[0] ^= 1
	s.Put(context.Background(), key, bytes.NewReader(flipped), 100)
	if err := s.Put(context.Background(), key, bytes.NewReader(data), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(dir); err != nil {
		t.Fatal(err)
	}
	n := 0
	s.List(context.Background(), func(Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d objects, want 1", n)
	}
}

// TestFSPutFile: a complete file becomes the object by a rename, once
// verified; a file with other bytes is refused and left in place.
func TestFSPutFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	data, key := blob(t, 1<<20+3)
	write := func(b []byte) string {
		p := filepath.Join(dir, "part")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	for name, b := range map[string][]byte{"flipped": flipped, "short": data[:len(data)-1], "long": append(bytes.Clone(data), 'x')} {
		p := write(b)
		if err := s.PutFile(ctx, key, p, int64(len(data))); !errors.Is(err, ErrDigest) {
			t.Errorf("%s: PutFile: %v, want ErrDigest", name, err)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: the refused file is gone: %v", name, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: after a refused PutFile, Stat: %v", name, err)
		}
	}
	if err := s.PutFile(ctx, "../x", write(data), int64(len(data))); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("a bad key: %v", err)
	}
	p := write(data)
	if err := s.PutFile(ctx, key, p, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file is still there: %v", err)
	}
	rc, err := s.Get(ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("the object has %d other bytes", len(got))
	}
}

// TestFSPutFileOtherFileSystem: a file on another file system than the
// store is copied, then removed.
func TestFSPutFileOtherFileSystem(t *testing.T) {
	other, err := os.MkdirTemp("/dev/shm", "objects")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	defer os.RemoveAll(other)
	dir := t.TempDir()
	var a, b syscall.Stat_t
	if syscall.Stat(other, &a) != nil || syscall.Stat(dir, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same file system as", dir)
	}
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, key := blob(t, 100<<10)
	p := filepath.Join(other, "part")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.PutFile(context.Background(), key, p, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file is still there: %v", err)
	}
	if info, err := s.Stat(context.Background(), key); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat: %+v %v", info, err)
	}
}
