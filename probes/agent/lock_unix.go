//go:build unix

package agent

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockState takes an exclusive, non-blocking lock on path, so two agents can
// never share one state directory (and its queue). The lock ends with the
// returned file, or with the process.
func lockState(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state directory in use by another agent (%s): %w", path, err)
	}
	return f, nil
}
