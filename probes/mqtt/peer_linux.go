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
	rc.Control(func(fd uintptr) { gone = sockGone(fd) })
	return gone
}

// sockGone reports whether the peer of TCP socket fd closed it (its FIN
// arrived, read or not).
func sockGone(fd uintptr) bool {
	info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && (info.State == unix.BPF_TCP_CLOSE_WAIT || info.State == unix.BPF_TCP_CLOSE)
}
