//go:build unix

package mqtt

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// writable reports whether conn's socket takes a small write now without
// waiting (poll for POLLOUT with no timeout). False when unsure.
func writable(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if gc, ok := conn.(*gatedConn); ok {
		conn = gc.Conn
	}
	if ac, ok := conn.(*admittedConn); ok {
		conn = ac.Conn
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return writableRaw(rc)
}

// writableRaw is writable of a socket's raw connection.
func writableRaw(rc syscall.RawConn) bool {
	ready := false
	rc.Control(func(fd uintptr) {
		p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(p[:], 0)
		ready = err == nil && n == 1 && p[0].Revents&unix.POLLOUT != 0 && p[0].Revents&(unix.POLLERR|unix.POLLHUP) == 0
	})
	return ready
}

// rawSocket is the raw connection of conn's socket (under TLS and the
// ingest gate), nil if it has none; plain reports that conn writes
// plain bytes to it (no TLS), so that a write can be tried without
// waiting (tryWrite).
func rawSocket(conn net.Conn) (rc syscall.RawConn, plain bool) {
	plain = true
	if tc, ok := conn.(*tls.Conn); ok {
		conn, plain = tc.NetConn(), false
	}
	if gc, ok := conn.(*gatedConn); ok {
		conn = gc.Conn
	}
	if ac, ok := conn.(*admittedConn); ok {
		conn = ac.Conn
	}
	if _, ok := conn.(*net.TCPConn); !ok {
		return nil, false
	}
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, false
	}
	return rc, plain
}

// tryWrite writes what of p the socket takes now, without waiting: one
// write system call. A full socket writes nothing and is no error.
func tryWrite(rc syscall.RawConn, p []byte) (n int, err error) {
	cerr := rc.Write(func(fd uintptr) bool {
		for {
			n, err = unix.Write(int(fd), p)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		return true // never wait
	})
	if n < 0 {
		n = 0
	}
	if errors.Is(err, unix.EAGAIN) {
		err = nil
	}
	if cerr != nil {
		return n, cerr
	}
	return n, err
}
