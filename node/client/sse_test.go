package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func parseAll(r io.Reader) ([]sseEvent, error) {
	p := newSSEParser(r)
	var out []sseEvent
	for {
		ev, err := p.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

func TestSSEParser(t *testing.T) {
	in := ": comment\n" +
		"data: a\n" +
		"data:b\n" +
		"data\n" + // empty data line
		"\n" +
		"id: 7\r\n" +
		"event: change\r\n" +
		"data:  two spaces\r\n" +
		"\r\n" +
		"id\n" + // empty id resets the last id
		"retry: 250\n" +
		"retry: 12x\n" + // ignored
		"unknown: field\n" +
		"event: x\n" +
		"\n" + // no data: not dispatched, type reset
		"id: a\x00b\n" + // NUL: ignored
		"data: c\r" +
		"\r" +
		"data: partial" // never dispatched
	want := []sseEvent{
		{Type: "message", Data: "a\nb\n"},
		{ID: "7", Type: "change", Data: " two spaces"},
		{ID: "", Type: "message", Data: "c", Retry: 250 * time.Millisecond},
	}
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
	} {
		got, err := parseAll(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: got %d events %+v, want %d", name, len(got), got, len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: event %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
}

func TestSSECRLFAcrossReads(t *testing.T) {
	// A CR at the end of one read and its LF at the start of the next make
	// one line end, not an extra blank line that would dispatch early.
	r := io.MultiReader(strings.NewReader("data: a\r"), strings.NewReader("\ndata: b\r\n\r\n"))
	got, err := parseAll(r)
	if err != nil || len(got) != 1 || got[0].Data != "a\nb" {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestSSEFinalCRLF(t *testing.T) {
	// The LF of a CRLF ending the stream is no blank line of its own.
	for _, in := range []string{"data: a\r\n", "data: a\r"} {
		for _, r := range []io.Reader{strings.NewReader(in), iotest.OneByteReader(strings.NewReader(in))} {
			if got, err := parseAll(r); err != nil || len(got) != 0 {
				t.Errorf("%q: got %+v, %v; want nothing", in, got, err)
			}
		}
	}
}

func TestSSETooLarge(t *testing.T) {
	long := "data: " + strings.Repeat("x", maxSSELine) + "\n\n"
	if _, err := parseAll(strings.NewReader(long)); !errors.Is(err, errSSETooLarge) {
		t.Errorf("long line: %v", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("y", 1000)+"\n", maxSSEEvent/1000+1) + "\n"
	if _, err := parseAll(strings.NewReader(many)); !errors.Is(err, errSSETooLarge) {
		t.Errorf("large event: %v", err)
	}
}
