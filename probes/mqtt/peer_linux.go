package mqtt

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerGone reports whether the device already closed a connection the
// node has just accepted: one that waited in the accept queue past the
// device's connect timeout. Its TLS handshake would be spent for nothing.
func peerGone(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		gone = err == nil && (info.State == unix.BPF_TCP_CLOSE_WAIT || info.State == unix.BPF_TCP_CLOSE)
	})
	return gone
}
