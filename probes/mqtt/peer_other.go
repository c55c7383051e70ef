//go:build !linux

package mqtt

import "net"

// peerGone is false where the socket's state cannot be read.
func peerGone(net.Conn) bool { return false }
