//go:build !unix

package mqtt

import (
	"errors"
	"net"
	"syscall"
)

// writable is false where the socket cannot be asked: acknowledgements
// all go through the connection's ack writer goroutine.
func writable(net.Conn) bool { return false }

func writableRaw(syscall.RawConn) bool { return false }

// rawSocket is nil where writes cannot be tried without waiting.
func rawSocket(net.Conn) (syscall.RawConn, bool) { return nil, false }

func tryWrite(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }
