package objects

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// FS is a Store in a folder of the local file system: object k is the
// file <dir>/<k[:2]>/<k>, written whole to <dir>/tmp first, synced, then
// renamed into place and its folder synced, so that a crash leaves the
// old state or the new, never a torn object. Temporary files a crash
// left behind are removed by NewFS. Folders are made by the first Put,
// so a node that stores no artifact makes none.
type FS struct {
	dir string
}

// Interface guards.
var (
	_ Store      = (*FS)(nil)
	_ FilePutter = (*FS)(nil)
)

// NewFS opens the store in dir (made by the first Put).
func NewFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, errors.New("objects: fs: no folder")
	}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("objects: fs: %w", err)
	}
	return &FS{dir: dir}, nil
}

func (s *FS) path(key string) string { return filepath.Join(s.dir, key[:2], key) }

// Put implements Store.
func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: size %d", ErrDigest, size)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), key+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	v := newVerifier(r, key, size)
	_, err = io.Copy(f, ctxReader{ctx, v})
	if err == nil {
		err = v.done()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(s.path(key)), 0o700)
	}
	if err == nil {
		err = os.Rename(tmp, s.path(key))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(s.path(key)))
}

// PutFile implements FilePutter: the file is read once to verify it,
// then renamed into place and both folders synced; a file on another
// file system than the store is copied (Put) and removed.
func (s *FS) PutFile(ctx context.Context, key, path string, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: size %d", ErrDigest, size)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	v := newVerifier(ctxReader{ctx, f}, key, size)
	buf := make([]byte, 256<<10)
	for err == nil {
		_, err = v.Read(buf)
	}
	f.Close()
	if !errors.Is(err, io.EOF) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path(key)), 0o700); err != nil {
		return err
	}
	if err := os.Rename(path, s.path(key)); errors.Is(err, syscall.EXDEV) {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = s.Put(ctx, key, f, size)
		f.Close()
		if err != nil {
			return err
		}
		return os.Remove(path)
	} else if err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(s.path(key))); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get implements Store.
func (s *FS) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		f.Close()
		return nil, fmt.Errorf("objects: offset %d", offset)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// Stat implements Store.
func (s *FS) Stat(ctx context.Context, key string) (Info, error) {
	if err := CheckKey(key); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Info{}, err
	}
	return Info{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// Delete implements Store.
func (s *FS) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	err := os.Remove(s.path(key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// List implements Store.
func (s *FS) List(ctx context.Context, fn func(Info) error) error {
	fans, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing stored yet
	}
	if err != nil {
		return err
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, fan.Name()))
		if err != nil {
			return err
		}
		slices.SortFunc(ents, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		for _, e := range ents {
			if CheckKey(e.Name()) != nil || !strings.HasPrefix(e.Name(), fan.Name()) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(Info{Key: e.Name(), Size: fi.Size(), Modified: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close implements Store.
func (s *FS) Close() error { return nil }

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
