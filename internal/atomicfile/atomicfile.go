// Package atomicfile replaces files whole and durably: a reader sees the
// old content or the new, never a part, and once Write returns the new
// content survives a crash of the process or the host.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data at mode: written to a temporary file in
// the same folder, synced, renamed over path, and the folder synced. An
// existing file's mode does not carry over to the new one. On error path
// is unchanged and the temporary file is gone.
func Write(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
