package benchproc

import "time"

// StopWithin is Stop, except that the child (this process's own child,
// by its process handle) is killed when it has not exited d after its
// input was closed.
func (c *Child) StopWithin(d time.Duration) error {
	t := time.AfterFunc(d, func() { c.cmd.Process.Kill() })
	defer t.Stop()
	return c.Stop()
}

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }
