//go:build !unix

package mqtt

import "net"

// writable is false where the socket cannot be asked: acknowledgements
// all go through the connection's ack writer goroutine.
func writable(net.Conn) bool { return false }
