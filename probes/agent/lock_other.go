//go:build !unix

package agent

import "os"

// lockState only creates path where flock is not available.
func lockState(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
