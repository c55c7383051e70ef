//go:build unix

package agent

import (
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// killProcessGroup runs cmd in its own process group and makes cancellation
// kill the whole group, so a script's children die with it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
}
