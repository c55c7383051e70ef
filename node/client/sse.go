package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
)

// Bounds on what the change stream may send.
const (
	maxSSELine  = 1 << 20 // bytes of one line
	maxSSEEvent = 4 << 20 // bytes of one event's data
)

var errSSETooLarge = errors.New("client: server-sent event larger than 4 MiB")

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	ID    string // the last event ID when the event was dispatched
	Type  string // "message" when the stream named none
	Data  string
	Retry time.Duration // the last retry the stream set, zero if none
}

// sseParser reads the text/event-stream format of the HTML standard
// (section 9.2.6): lines end in CRLF, LF or CR; a blank line dispatches the
// event; lines starting with ':' are comments; "field: value" lines set
// event, data (joined by LF), id (ignored if it holds NUL) and retry (digits
// only). An event without data is not dispatched, but its id still counts.
// A partial event at end of stream is discarded.
type sseParser struct {
	sc     *bufio.Scanner
	lastID string
	retry  time.Duration

	typ     string
	data    strings.Builder
	hasData bool
}

func newSSEParser(r io.Reader) *sseParser {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxSSELine)
	sc.Split(sseLines())
	return &sseParser{sc: sc}
}

// sseLines splits at CRLF, LF or CR without waiting for the byte after a
// CR (a stream may pause there): it remembers the CR and skips a LF that
// starts the next line.
func sseLines() bufio.SplitFunc {
	afterCR := false
	return func(data []byte, atEOF bool) (int, []byte, error) {
		skip := 0
		if afterCR && len(data) > 0 && data[0] == '\n' {
			skip = 1
		}
		rest := data[skip:]
		if i := bytes.IndexAny(rest, "\r\n"); i >= 0 {
			afterCR = rest[i] == '\r'
			return skip + i + 1, rest[:i], nil
		}
		if atEOF && len(data) > 0 {
			// A last line without its end: never part of a dispatched
			// event, but hand it over so the parser sees every byte.
			afterCR = false
			if len(rest) == 0 {
				return len(data), nil, nil // the LF of a final CRLF
			}
			return len(data), rest, nil
		}
		return 0, nil, nil
	}
}

// next returns the next dispatched event, or io.EOF at the end of the
// stream.
func (p *sseParser) next() (sseEvent, error) {
	for p.sc.Scan() {
		line := p.sc.Bytes()
		if len(line) == 0 {
			if ev, ok := p.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			p.typ = string(value)
		case "data":
			if p.data.Len()+len(value)+1 > maxSSEEvent {
				return sseEvent{}, errSSETooLarge
			}
			p.data.Write(value)
			p.data.WriteByte('\n')
			p.hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				p.lastID = string(value)
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 32); err == nil && onlyDigits(value) {
				p.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := p.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseEvent{}, errSSETooLarge
		}
		return sseEvent{}, err
	}
	return sseEvent{}, io.EOF
}

func (p *sseParser) dispatch() (sseEvent, bool) {
	typ, data, has := p.typ, p.data.String(), p.hasData
	p.typ = ""
	p.data.Reset()
	p.hasData = false
	if !has {
		return sseEvent{}, false
	}
	if typ == "" {
		typ = "message"
	}
	return sseEvent{ID: p.lastID, Type: typ, Data: strings.TrimSuffix(data, "\n"), Retry: p.retry}, true
}

func onlyDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
