package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/apitypes"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	var vals []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		v := time.Duration(r.ExpFloat64() * float64(3*time.Millisecond))
		vals = append(vals, v)
		h.record(v)
	}
	slices.Sort(vals)
	l := h.latency()
	if l.Count != 10000 || l.Max != vals[len(vals)-1] {
		t.Fatalf("count %d max %v (want %v)", l.Count, l.Max, vals[len(vals)-1])
	}
	for _, c := range []struct {
		got  time.Duration
		want time.Duration
	}{{l.P50, vals[4999]}, {l.P90, vals[8999]}, {l.P99, vals[9899]}} {
		if err := float64(c.got-c.want) / float64(c.want); err > 0.02 || err < -0.02 {
			t.Errorf("quantile %v, exact %v", c.got, c.want)
		}
	}
	for v := uint64(0); v < 1<<20; v += 7 {
		i := bucketOf(v)
		if m := bucketMid(i); bucketOf(m) != i {
			t.Fatalf("bucket %d of %d: mid %d is in bucket %d", i, v, m, bucketOf(m))
		}
	}
	if bucketOf(^uint64(0)) >= len(h.counts) {
		t.Fatal("largest value out of range")
	}
	var empty histogram
	if l := empty.latency(); l.P99 != 0 || l.Count != 0 {
		t.Fatalf("empty: %+v", l)
	}
}

func TestTelemetryPayload(t *testing.T) {
	now := time.UnixMilli(1764000000000)
	for _, size := range []int{0, 50, 100, 300, 1000, 100000} {
		b := appendTelemetry(nil, 42, now, size)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("size %d: %v: %s", size, err, b)
		}
		if m["ts"] != float64(1764000000000) || m["seq"] != float64(42) {
			t.Fatalf("size %d: %s", size, b)
		}
		if size >= 50 && (len(b) < size-15 || len(b) > size+15) {
			t.Errorf("size %d: got %d bytes", size, len(b))
		}
		if len(m) > maxVars+3 {
			t.Errorf("size %d: %d variables", size, len(m))
		}
	}
}

// The answers the simulator writes by hand, for speed, are exactly what
// apitypes.CommandResult encodes.
func TestResultIsTheSharedShape(t *testing.T) {
	cmd, _ := parseCommand([]byte(`{"job":"j1","function":"ping","args":{"a":1}}`))
	none, _ := parseCommand([]byte(`{"job":"j1","function":"ping"}`))
	for _, out := range [][]byte{
		appendResult(nil, &cmd, nil), appendResult(nil, &none, nil), appendResult(nil, &cmd, errBadCommand),
	} {
		var r apitypes.CommandResult
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if again, _ := json.Marshal(r); !bytes.Equal(again, out) {
			t.Errorf("simulator wrote %s, apitypes encodes %s", out, again)
		}
	}
}

func TestCommandParsing(t *testing.T) {
	cmd, err := parseCommand([]byte(`{"job":"j1","function":"ping","args":{"a":[1,2]},"deadline":"2026-11-23T10:05:00Z"}`))
	if err != nil || cmd.Function != "ping" || string(cmd.Args) != `{"a":[1,2]}` || cmd.Deadline.IsZero() {
		t.Fatalf("%+v %v", cmd, err)
	}
	if got := string(appendResult(nil, &cmd, nil)); got != `{"status":"succeeded","result":{"echo":{"a":[1,2]}}}` {
		t.Fatal(got)
	}
	cmd, err = parseCommand([]byte(`{"job":"j1","function":"ping"}`))
	if err != nil || string(appendResult(nil, &cmd, nil)) != `{"status":"succeeded","result":{"echo":null}}` {
		t.Fatalf("no args: %v %s", err, appendResult(nil, &cmd, nil))
	}
	for _, bad := range []string{`nope`, `[]`, `{"deadline":"tomorrow"}`} {
		cmd, err := parseCommand([]byte(bad))
		if !errors.Is(err, errBadCommand) {
			t.Errorf("%s: %v", bad, err)
		}
		if !json.Valid(appendResult(nil, &cmd, err)) {
			t.Errorf("%s: invalid answer", bad)
		}
	}
	for topic, want := range map[string]string{
		"strata/d1/cmd/j01": "j01", "strata/d1/cmd/j01/result": "", "strata/d1/cmd/": "",
		"strata/d2/cmd/j01": "", "strata/d1/telemetry": "",
	} {
		if got, _ := jobID("strata/d1/", topic); got != want {
			t.Errorf("jobID(%s) = %q, want %q", topic, got, want)
		}
	}
}

func TestCredentialsRoundTrip(t *testing.T) {
	in := []Credentials{
		{Enrollment: apitypes.Enrollment{DeviceID: "d-1", MQTTUsername: "d-1", MQTTPassword: "sd_1", MQTTAddress: "h:8883", CAPEM: "-----BEGIN"}, HardwareID: "sim-x-0"},
		{Enrollment: apitypes.Enrollment{DeviceID: "d-2", MQTTUsername: "d-2", MQTTPassword: "sd_2", MQTTAddress: "h:8883", CAPEM: "-----BEGIN"}},
	}
	var buf bytes.Buffer
	if err := WriteCredentials(&buf, in); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 2 {
		t.Fatalf("not JSON lines: %s", buf.String())
	}
	out, err := ReadCredentials(strings.NewReader(buf.String() + "\n\n"))
	if err != nil || !slices.Equal(in, out) {
		t.Fatalf("%v %+v", err, out)
	}
	if _, err := ReadCredentials(strings.NewReader(`{"device_id":"d"}`)); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("missing password: %v", err)
	}
	if _, err := ReadCredentials(strings.NewReader(`{`)); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("bad json: %v", err)
	}
}

// Packets the client encodes decode as mochi's broker reads them.
func TestPacketRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	pub := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "strata/d/cmd/j", PacketID: 7, Payload: []byte(`{"job":"j"}`),
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7}
	for _, pk := range []*packets.Packet{&pub, &ack} {
		if err := encode(pk, &buf); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&buf)
	fh, body, err := readPacket(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(fh, body)
	if err != nil || got.TopicName != pub.TopicName || got.PacketID != 7 || string(got.Payload) != string(pub.Payload) {
		t.Fatalf("publish: %+v %v", got, err)
	}
	fh, body, err = readPacket(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decode(fh, body); err != nil || got.PacketID != 7 || fh.Type != packets.Puback {
		t.Fatalf("puback: %+v %v", got, err)
	}
	if _, _, err := readPacket(bufio.NewReader(bytes.NewReader([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}))); !errors.Is(err, errPacketTooLarge) {
		t.Fatalf("huge packet: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Devices, ok.Anonymous, ok.MQTTAddr = 1, true, "127.0.0.1:1883"
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"devices":   func(c *Config) { c.Devices = 0 },
		"qos":       func(c *Config) { c.QoS = 2 },
		"inflight":  func(c *Config) { c.Inflight = 0 },
		"payload":   func(c *Config) { c.PayloadBytes = 1 << 20 },
		"keepalive": func(c *Config) { c.Keepalive = 0 },
		"addr":      func(c *Config) { c.MQTTAddr = "nohostport" },
		"no creds":  func(c *Config) { c.Anonymous = false },
		"token":     func(c *Config) { c.Anonymous, c.API = false, "https://x:1" },
		"api":       func(c *Config) { c.Anonymous, c.API, c.EnrollToken = false, "ftp://x", "t" },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
