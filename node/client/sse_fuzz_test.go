package client

import (
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzSSEParser feeds arbitrary streams to the parser: it must not panic,
// must give the same events however the stream is split into reads, and
// must only dispatch what the stream's bytes can account for.
func FuzzSSEParser(f *testing.F) {
	for _, s := range []string{
		"",
		"data: x\n\n",
		"id: 1\nevent: change\ndata: {\"seq\":1}\n\n",
		"id: 2\revent: reset\rdata: {}\r\r",
		": keepalive\r\n\r\ndata\r\ndata:\r\n\r\n",
		"retry: 10\nid: \x00\ndata: a\n\n",
		"data: a\r",
		"data: a\r\n",
		"\r\n\r\n\n\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, errWhole := parseAll(bytes.NewReader(in))
		split, errSplit := parseAll(iotest.OneByteReader(bytes.NewReader(in)))
		if (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("errors differ: %v vs %v", errWhole, errSplit)
		}
		if len(whole) != len(split) {
			t.Fatalf("%d events whole, %d split", len(whole), len(split))
		}
		total := 0
		for i := range whole {
			if whole[i] != split[i] {
				t.Fatalf("event %d: %+v vs %+v", i, whole[i], split[i])
			}
			ev := whole[i]
			if ev.Type == "" || strings.ContainsAny(ev.ID, "\x00\r\n") || strings.ContainsAny(ev.Type, "\r\n") || strings.Contains(ev.Data, "\r") {
				t.Fatalf("malformed event %+v", ev)
			}
			total += len(ev.Data)
		}
		if total > len(in) {
			t.Fatalf("events hold %d data bytes from %d input bytes", total, len(in))
		}
	})
}
