//go:build !linux

package mqtt

import "net"

// peerGone is false where the socket's state cannot be read.
func peerGone(net.Conn) bool { return false }

// sockGone is false where the socket's state cannot be read: a parked
// connection the device closed waits out its deadline.
func sockGone(uintptr) bool { return false }
