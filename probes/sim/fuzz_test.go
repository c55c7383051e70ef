package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzClientRead feeds arbitrary bytes to what the client does with a
// broker's stream: read packets, decode them, and for publishes on a
// command topic, parse the command and build the answer. Nothing may
// panic, and every answer must be valid JSON.
func FuzzClientRead(f *testing.F) {
	var seed bytes.Buffer
	for _, pk := range []packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "strata/d/cmd/j1", PacketID: 1,
			Payload: []byte(`{"job":"j1","function":"ping","args":{"x":1},"deadline":"2026-11-23T10:05:00Z"}`)},
		{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 9},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
	} {
		_ = encode(&pk, &seed)
	}
	f.Add(seed.Bytes())
	f.Add([]byte{0x20, 0x02, 0x00, 0x00})            // CONNACK accepted
	f.Add([]byte{0x90, 0x03, 0x00, 0x01, 0x80})      // SUBACK failure
	f.Add([]byte{0xd0, 0x00})                        // PINGRESP
	f.Add([]byte{0x32, 0x05, 0x00, 0x01, 'a', 0, 0}) // QoS 1, packet id 0
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 64 {
			fh, body, err := readPacket(r)
			if err != nil {
				return
			}
			pk, err := decode(fh, body)
			if err != nil || fh.Type != packets.Publish {
				continue
			}
			if _, ok := jobID("strata/d/", pk.TopicName); !ok {
				continue
			}
			cmd, err := parseCommand(pk.Payload)
			if out := appendResult(nil, &cmd, err); !json.Valid(out) {
				t.Fatalf("invalid answer %s to %q", out, pk.Payload)
			}
		}
	})
}

// FuzzCommand checks the command parser and the echo on any payload.
func FuzzCommand(f *testing.F) {
	f.Add([]byte(`{"job":"j","function":"f","args":{"a":[1,"x",null]}}`))
	f.Add([]byte(`{"args":"\u0000"}`))
	f.Add([]byte(`{"deadline":"2026-11-23T10:05:00.123+02:00"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		cmd, err := parseCommand(payload)
		if out := appendResult(nil, &cmd, err); !json.Valid(out) {
			t.Fatalf("invalid answer %s to %q", out, payload)
		}
	})
}
