package federation

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"io"
	"time"
)

// What the tests of package federation_test need of the wire to play a
// hostile peer: the real message types and frame encoding, and the
// certificate helpers a consumer uses.

type (
	WireKind     = kind
	WireHello    = hello
	WireWelcome  = welcome
	WireJoin     = join
	WireJoined   = joined
	WireRefuse   = refuse
	WireRenew    = renew
	WireRenewed  = renewed
	WireSyncOpen = syncOpen
	WireBatch    = batch
	WireSnapBeg  = snapshotBegin
	WireSnapChk  = snapshotChunk
	WireSnapEnd  = snapshotEnd
	WireAck      = ack
	WireRequest  = request
	WireResponse = response
	FrameReader  = frameReader
)

const (
	KindHello         = kindHello
	KindWelcome       = kindWelcome
	KindJoin          = kindJoin
	KindJoined        = kindJoined
	KindRefuse        = kindRefuse
	KindRenew         = kindRenew
	KindRenewed       = kindRenewed
	KindSyncOpen      = kindSyncOpen
	KindBatch         = kindBatch
	KindSnapshotBegin = kindSnapshotBegin
	KindSnapshotChunk = kindSnapshotChunk
	KindSnapshotEnd   = kindSnapshotEnd
	KindAck           = kindAck
	KindRequest       = kindRequest
	KindResponse      = kindResponse

	OpCall = opCall
	OpGet  = opGet

	CodeForbidden = codeForbidden
)

// WriteFrame writes one frame of kind k to w.
func WriteFrame(w io.Writer, k kind, body any) error {
	b, err := encodeFrame(k, body)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *frameReader { return newFrameReader(r, 0) }

// ReadFrame reads the next frame.
func ReadFrame(fr *frameReader) (kind, []byte, error) { return fr.next() }

// ExpectFrame reads the next frame, which must be of kind k, into v.
func ExpectFrame(fr *frameReader, k kind, v any) error { return fr.expect(k, v) }

// DecodeBody decodes a frame body into v.
func DecodeBody(k kind, body []byte, v any) error { return decode(k, body, v) }

// NewJoinToken makes a join token pinning the CA certificate caDER.
func NewJoinToken(caDER []byte) (string, error) {
	tok, _, err := newJoinToken(caDER)
	return tok, err
}

// SignCSR signs a provider's certificate request as a consumer does.
func SignCSR(ca *x509.Certificate, caKey crypto.Signer, csrDER []byte, name string, validity time.Duration) (*x509.Certificate, error) {
	return signCSR(ca, caKey, csrDER, name, validity)
}

// ListenerCert is a consumer listener's certificate.
func ListenerCert(name string, ca *x509.Certificate, caKey crypto.Signer) (tls.Certificate, error) {
	return listenerCert(name, ca, caKey)
}

// NewCSR makes a key and a certificate request naming the node.
var NewCSR = newCSR
