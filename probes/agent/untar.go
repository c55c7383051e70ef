package agent

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ErrUnsafeArchive is wrapped by the refusals of a tar artifact's entry:
// an absolute name, a ".." element, a link leading outside the
// directory, or a device, FIFO or other special file.
var ErrUnsafeArchive = errors.New("unsafe archive")

// Bounds of an unpacked tar artifact.
const (
	maxTarEntries = 100_000
	maxTarBytes   = 16 << 30
)

// cleanTarName checks an entry's name and returns it cleaned, relative,
// with forward slashes; "" for the archive's root ("./").
func cleanTarName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: empty name or NUL", ErrUnsafeArchive)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, `\`) || filepath.IsAbs(name) {
		return "", fmt.Errorf("%w: %q is absolute or holds a backslash", ErrUnsafeArchive, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q holds ..", ErrUnsafeArchive, name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// linkInside reports whether a symbolic link in directory parent
// (relative to the unpacking directory, slash-separated, "." for the top)
// pointing to target stays inside the unpacking directory.
func linkInside(parent, target string) bool {
	if target == "" || path.IsAbs(target) || strings.Contains(target, `\`) {
		return false
	}
	p := path.Join(parent, target)
	return p != ".." && !strings.HasPrefix(p, "../")
}

// realParent makes the directory of dst and returns it with links
// resolved, relative to root (the unpacking directory, resolved), or an
// error if it lies outside: links unpacked earlier may not carry an
// entry out of the directory.
func realParent(root, dst string) (string, error) {
	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(root, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %s lies outside through a link", ErrUnsafeArchive, dst)
	}
	return filepath.ToSlash(rel), nil
}

// untar unpacks the tar (or gzip-compressed tar) r into dir, which must
// exist and be empty. Regular files, directories and symbolic links
// that stay inside dir are unpacked, with permission bits only (no
// setuid, setgid or sticky bits, no owners); anything else is refused
// whole. An entry replaces an earlier one of the same name without
// following it.
func untar(r io.Reader, dir string) error {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	var entries int
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if entries++; entries > maxTarEntries {
			return fmt.Errorf("%w: more than %d entries", ErrUnsafeArchive, maxTarEntries)
		}
		name, err := cleanTarName(h.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode).Perm()
		parent, err := realParent(root, dst)
		if err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(dst, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if total += h.Size; total > maxTarBytes {
				return fmt.Errorf("%w: more than %d bytes", ErrUnsafeArchive, int64(maxTarBytes))
			}
			if err := writeEntry(dst, tr, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if !linkInside(parent, h.Linkname) {
				return fmt.Errorf("%w: link %q -> %q leads outside", ErrUnsafeArchive, h.Name, h.Linkname)
			}
			if err := replace(dst); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %q is of type %q (only files, directories and symbolic links)", ErrUnsafeArchive, h.Name, h.Typeflag)
		}
	}
}

// replace removes what is at p (not following a link) and makes its
// parent directory.
func replace(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func writeEntry(dst string, r io.Reader, mode os.FileMode) error {
	if err := replace(dst); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
