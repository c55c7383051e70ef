//go:build !unix

package agent

import "os/exec"

// killProcessGroup is a no-op where process groups are not available:
// cancellation kills the script's process only.
func killProcessGroup(*exec.Cmd) {}
