//go:build !linux

package mqtt

import "syscall"

// poller is Linux only (poll_linux.go): elsewhere device readers wait for
// data in Go's network poller and take their slot once it has come.
type poller struct{}

func newPoller(*ingestGate) (*poller, error) { return nil, nil }

func (*poller) close() {}

func (*poller) arm(*gatedConn, int, bool) bool { return false }

func (*poller) forget(*gatedConn, int) {}

func rawRead(syscall.RawConn, []byte) (int, error) { return 0, errWouldBlock }

func socketFD(syscall.RawConn) int { return -1 }
