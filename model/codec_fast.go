package model

import (
	"encoding/binary"
	"time"
)

// A hand-written encoder for the values encoded on every write: log
// entries (with the mutations, variables, events and records they carry)
// and contexts. It writes what the reflection-driven encoder (encMode)
// writes for the same value, byte for byte — a map of the non-empty
// fields with integer keys in declaration order, times as RFC 3339 text
// (null when zero), nil byte slices as null — so that every reader,
// old or new, decodes it the same way; TestFastCodecMatches holds the two
// together. A field added to one of these types must be added here too
// (the test fails until it is).
//
// Maps are written in Go's iteration order, as encMode (SortNone) does.

// CBOR major types, shifted into the initial byte.
const (
	cborUint  = 0 << 5
	cborBytes = 2 << 5
	cborText  = 3 << 5
	cborArray = 4 << 5
	cborMap   = 5 << 5
	cborNull  = 0xf6
	cborTrue  = 0xf5
)

func appendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, major|27), n)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, cborText, uint64(len(s))), s...)
}

// appendByteString writes a []byte field: null when nil.
func appendByteString(b []byte, v []byte) []byte {
	if v == nil {
		return append(b, cborNull)
	}
	return append(appendHead(b, cborBytes, uint64(len(v))), v...)
}

// appendTime writes t as RFC 3339 text with nanoseconds, null when zero.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, cborNull)
	}
	var buf [64]byte
	s := t.AppendFormat(buf[:0], time.RFC3339Nano)
	return append(appendHead(b, cborText, uint64(len(s))), s...)
}

// lastTime remembers the encoding of the last time written: the
// variables of one message, and often its entry, share one time.
type lastTime struct {
	t   time.Time
	enc []byte // where it was written in b
}

// appendTime is appendTime(b, t), copying what it wrote last time when t
// is the same (==: the same instant, location and monotonic reading, so
// the same text).
func (l *lastTime) appendTime(b []byte, t time.Time) []byte {
	if l.enc != nil && t == l.t {
		return append(b, l.enc...)
	}
	start := len(b)
	b = appendTime(b, t)
	l.t, l.enc = t, b[start:len(b):len(b)]
	return b
}

// key writes a field's integer key.
func key(b []byte, k byte) []byte { return append(b, cborUint|k) }

func count(conds ...bool) uint64 {
	n := uint64(0)
	for _, c := range conds {
		if c {
			n++
		}
	}
	return n
}

func appendEntry(b []byte, e *Entry) []byte {
	var lt lastTime
	b = append(b, cborMap|3)
	b = appendHead(key(b, 1), cborUint, e.Seq)
	b = lt.appendTime(key(b, 2), e.Time)
	return appendMutation(key(b, 3), &e.Mutation, &lt)
}

func appendMutation(b []byte, m *Mutation, lt *lastTime) []byte {
	b = appendHead(b, cborMap, 1+count(m.Path != "", m.Type != "", m.Tenant != "", len(m.Labels) > 0, len(m.Variables) > 0,
		len(m.Functions) > 0, m.SetFunctions, m.Event != nil, m.Record != nil, m.Actor != "", m.Replace))
	b = appendHead(key(b, 1), cborUint, uint64(m.Op))
	if m.Path != "" {
		b = appendText(key(b, 2), string(m.Path))
	}
	if m.Type != "" {
		b = appendText(key(b, 3), m.Type)
	}
	if m.Tenant != "" {
		b = appendText(key(b, 4), m.Tenant)
	}
	if len(m.Labels) > 0 {
		b = appendLabels(key(b, 5), m.Labels)
	}
	if len(m.Variables) > 0 {
		b = appendVariables(key(b, 6), m.Variables, lt)
	}
	if len(m.Functions) > 0 {
		b = appendFunctions(key(b, 7), m.Functions)
	}
	if m.SetFunctions {
		b = append(key(b, 8), cborTrue)
	}
	if m.Event != nil {
		b = appendEvent(key(b, 9), m.Event)
	}
	if m.Record != nil {
		b = appendRecord(key(b, 10), m.Record)
	}
	if m.Actor != "" {
		b = appendText(key(b, 11), m.Actor)
	}
	if m.Replace {
		b = append(key(b, 12), cborTrue)
	}
	return b
}

func appendLabels(b []byte, labels map[string]string) []byte {
	b = appendHead(b, cborMap, uint64(len(labels)))
	for k, v := range labels {
		b = appendText(appendText(b, k), v)
	}
	return b
}

func appendVariables(b []byte, vars map[string]Variable, lt *lastTime) []byte {
	b = appendHead(b, cborMap, uint64(len(vars)))
	for name, v := range vars {
		b = appendVariable(appendText(b, name), &v, lt)
	}
	return b
}

func appendVariable(b []byte, v *Variable, lt *lastTime) []byte {
	b = append(b, cborMap|byte(3+count(v.Quality != "")))
	b = appendByteString(key(b, 1), v.Value)
	b = appendText(key(b, 2), string(v.Type))
	b = lt.appendTime(key(b, 3), v.Time)
	if v.Quality != "" {
		b = appendText(key(b, 4), string(v.Quality))
	}
	return b
}

func appendFunctions(b []byte, fs []Function) []byte {
	b = appendHead(b, cborArray, uint64(len(fs)))
	for i := range fs {
		f := &fs[i]
		b = append(b, cborMap|byte(1+count(f.Description != "", len(f.Args) > 0, len(f.Result) > 0)))
		b = appendText(key(b, 1), f.Name)
		if f.Description != "" {
			b = appendText(key(b, 2), f.Description)
		}
		if len(f.Args) > 0 {
			b = appendByteString(key(b, 3), f.Args)
		}
		if len(f.Result) > 0 {
			b = appendByteString(key(b, 4), f.Result)
		}
	}
	return b
}

func appendEvent(b []byte, ev *Event) []byte {
	b = append(b, cborMap|byte(4+count(ev.Name != "", len(ev.Payload) > 0, ev.Tenant != "")))
	b = appendHead(key(b, 1), cborUint, ev.Seq)
	b = appendText(key(b, 2), string(ev.Path))
	if ev.Name != "" {
		b = appendText(key(b, 3), ev.Name)
	}
	b = appendText(key(b, 4), string(ev.Level))
	if len(ev.Payload) > 0 {
		b = appendByteString(key(b, 5), ev.Payload)
	}
	b = appendTime(key(b, 6), ev.Time)
	if ev.Tenant != "" {
		b = appendText(key(b, 7), ev.Tenant)
	}
	return b
}

func appendRecord(b []byte, r *Record) []byte {
	b = append(b, cborMap|byte(2+count(len(r.Value) > 0)))
	b = appendText(key(b, 1), r.Kind)
	b = appendText(key(b, 2), r.Key)
	if len(r.Value) > 0 {
		b = appendByteString(key(b, 3), r.Value)
	}
	return b
}

func appendContext(b []byte, c *Context) []byte {
	var lt lastTime
	b = append(b, cborMap|byte(5+count(c.Tenant != "", len(c.Labels) > 0, len(c.Variables) > 0, len(c.Functions) > 0)))
	b = appendText(key(b, 1), string(c.Path))
	b = appendText(key(b, 2), c.Type)
	if c.Tenant != "" {
		b = appendText(key(b, 3), c.Tenant)
	}
	if len(c.Labels) > 0 {
		b = appendLabels(key(b, 4), c.Labels)
	}
	if len(c.Variables) > 0 {
		b = appendVariables(key(b, 5), c.Variables, &lt)
	}
	if len(c.Functions) > 0 {
		b = appendFunctions(key(b, 6), c.Functions)
	}
	b = lt.appendTime(key(b, 7), c.Created)
	b = lt.appendTime(key(b, 8), c.Updated)
	return appendHead(key(b, 9), cborUint, c.Version)
}

// Size hints: what an entry or a context usually takes, so that the
// encoding is written into one allocation.
func mutationSizeHint(m *Mutation) int {
	n := 48 + len(m.Path) + len(m.Type) + len(m.Tenant) + len(m.Actor)
	for k, v := range m.Labels {
		n += 4 + len(k) + len(v)
	}
	for name, v := range m.Variables {
		n += 56 + len(name) + len(v.Value) + len(v.Type) + len(v.Quality)
	}
	if m.Event != nil {
		n += 96 + len(m.Event.Path) + len(m.Event.Name) + len(m.Event.Payload) + len(m.Event.Tenant)
	}
	if m.Record != nil {
		n += 8 + len(m.Record.Kind) + len(m.Record.Key) + len(m.Record.Value)
	}
	for i := range m.Functions {
		f := &m.Functions[i]
		n += 12 + len(f.Name) + len(f.Description) + len(f.Args) + len(f.Result)
	}
	return n
}

func contextSizeHint(c *Context) int {
	n := 48 + len(c.Path) + len(c.Type) + len(c.Tenant)
	for k, v := range c.Labels {
		n += 4 + len(k) + len(v)
	}
	for name, v := range c.Variables {
		n += 56 + len(name) + len(v.Value) + len(v.Type) + len(v.Quality)
	}
	for i := range c.Functions {
		f := &c.Functions[i]
		n += 12 + len(f.Name) + len(f.Description) + len(f.Args) + len(f.Result)
	}
	return n
}
