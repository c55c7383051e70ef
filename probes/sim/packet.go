package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// protocolVersion is MQTT 3.1.1, the only version the simulator speaks.
const protocolVersion = 4

// maxIncoming bounds the remaining length of a packet the simulator accepts
// from a broker; commands are small, so anything near this is an attack or
// a bug, and the connection is closed.
const maxIncoming = 1 << 20

// errPacketTooLarge is returned by readPacket for packets over maxIncoming.
var errPacketTooLarge = errors.New("mqtt: incoming packet too large")

// errUnexpectedPacket is returned for packet types a client never receives.
var errUnexpectedPacket = errors.New("mqtt: unexpected packet type")

// bufPool holds encode buffers shared by all connections, so an idle
// session owns no write buffer.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() > 64<<10 {
		return // do not keep buffers grown by an unusually large payload
	}
	bufPool.Put(b)
}

// encode appends the wire form of pk to buf, by packet type.
func encode(pk *packets.Packet, buf *bytes.Buffer) error {
	pk.ProtocolVersion = protocolVersion
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectEncode(buf)
	case packets.Publish:
		return pk.PublishEncode(buf)
	case packets.Puback:
		return pk.PubackEncode(buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1 // [MQTT-3.8.1-1]
		return pk.SubscribeEncode(buf)
	case packets.Pingreq:
		return pk.PingreqEncode(buf)
	case packets.Disconnect:
		return pk.DisconnectEncode(buf)
	}
	return fmt.Errorf("%w: encode %d", errUnexpectedPacket, pk.FixedHeader.Type)
}

// readPacket reads one packet's fixed header and body from r. The body is
// freshly allocated: decoded strings alias it and may be kept.
func readPacket(r byteReader) (packets.FixedHeader, []byte, error) {
	var fh packets.FixedHeader
	b, err := r.ReadByte()
	if err != nil {
		return fh, nil, err
	}
	if err := fh.Decode(b); err != nil {
		return fh, nil, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return fh, nil, noEOF(err)
	}
	if n > maxIncoming {
		return fh, nil, errPacketTooLarge
	}
	fh.Remaining = n
	if n > 4096 {
		// Grow with the data rather than trust the length up front.
		body, err := io.ReadAll(io.LimitReader(r, int64(n)))
		if err == nil && len(body) < n {
			err = io.ErrUnexpectedEOF
		}
		return fh, body, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fh, nil, noEOF(err)
	}
	return fh, body, nil
}

// noEOF turns an EOF in the middle of a packet into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decode parses the body of a packet a client may receive: CONNACK,
// PUBLISH (QoS 0 or 1), PUBACK, SUBACK, PINGRESP.
func decode(fh packets.FixedHeader, body []byte) (packets.Packet, error) {
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: protocolVersion}
	var err error
	switch fh.Type {
	case packets.Connack:
		if len(body) != 2 {
			return pk, packets.ErrMalformedPacket
		}
		err = pk.ConnackDecode(body)
	case packets.Publish:
		if fh.Qos > 1 {
			return pk, packets.ErrProtocolViolationQosOutOfRange
		}
		err = pk.PublishDecode(body)
		if err == nil && fh.Qos > 0 && pk.PacketID == 0 {
			err = packets.ErrProtocolViolationNoPacketID
		}
	case packets.Puback:
		if len(body) != 2 {
			return pk, packets.ErrMalformedPacket
		}
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Pingresp:
		if len(body) != 0 {
			return pk, packets.ErrMalformedPacket
		}
	default:
		return pk, fmt.Errorf("%w: %s", errUnexpectedPacket, packets.PacketNames[fh.Type])
	}
	return pk, err
}

// ConnackError is a CONNACK with a non-zero return code: the broker refused
// the session.
type ConnackError struct {
	Code byte // MQTT 3.1.1 return code, 1 to 5 (others are invalid)
}

func (e *ConnackError) Error() string {
	return "connack: " + connackReason(e.Code)
}

// connackReason names an MQTT 3.1.1 CONNACK return code.
func connackReason(code byte) string {
	switch code {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad username or password"
	case 5:
		return "not authorized"
	}
	return fmt.Sprintf("return code %d", code)
}
