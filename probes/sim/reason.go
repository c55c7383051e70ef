package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/mochi-mqtt/server/v2/packets"
)

// reason turns an error into a short, low-cardinality label for the
// report: "dial: connection refused", "connack: not authorized", ... The
// full error of the first occurrence of each label is logged.
func reason(err error) string {
	var ce *ConnackError
	if errors.As(err, &ce) {
		return ce.Error()
	}
	prefix := ""
	var se *stageError
	if errors.As(err, &se) {
		prefix = se.stage + ": "
	}
	return prefix + cause(err)
}

// authRefused reports whether err is a refusal that retrying cannot fix.
func authRefused(err error) bool {
	var ce *ConnackError
	return errors.As(err, &ce) && (ce.Code == 2 || ce.Code == 4 || ce.Code == 5)
}

func cause(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		certErr   *tls.CertificateVerificationError
		alert     tls.AlertError
		code      packets.Code
	)
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, errClosedByClient):
		return "closed by client"
	case errors.Is(err, errKeepalive):
		return "keepalive timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no local port (add source addresses)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable"
	case errors.As(err, &unknownCA):
		return "unknown certificate authority"
	case errors.As(err, &hostname):
		return "certificate name mismatch"
	case errors.As(err, &certErr):
		return "certificate verification"
	case errors.As(err, &alert):
		return "tls alert: " + alert.Error()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed by broker"
	case errors.Is(err, errPacketTooLarge):
		return "packet too large"
	case errors.Is(err, errUnexpectedPacket):
		return "protocol error"
	case errors.As(err, &code):
		return "malformed packet"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}
