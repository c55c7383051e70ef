package mqtt

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/strata-dm/strata/model"
)

// decodeFlat decodes the usual telemetry payload without reflection: one
// object whose keys need no unescaping and whose values are numbers,
// strings without escapes, true, false or null. ok is false for anything
// else, including every payload the general path would refuse; the caller
// then takes the general path. Where ok is true the result is exactly the
// general path's (FuzzDecodeFlat holds the two together): values are the
// bytes as sent (a scalar is already compact), the last of duplicate keys
// wins, "ts" stamps the point.
func decodeFlat(data []byte, now time.Time) (vars map[string]model.Variable, ok bool) {
	return decodeFlatNames(data, now, nil)
}

// names keeps the variable names a connection sent, so that a device
// sending the same names in every message does not make new strings of
// them each time. It holds at most maxNames names; it is used by one
// goroutine at a time (the connection's reader).
type names map[string]string

const maxNames = 256

// name returns key as a string, from ns when it is there.
func (ns names) name(key []byte) string {
	if s, ok := ns[string(key)]; ok {
		return s
	}
	s := string(key)
	if ns != nil && len(ns) < maxNames {
		ns[s] = s
	}
	return s
}

// decodeFlatNames is decodeFlat taking the names of variables from ns
// (nil: none).
func decodeFlatNames(data []byte, now time.Time, ns names) (vars map[string]model.Variable, ok bool) {
	data = bytes.TrimSpace(data)
	if len(data) < 2 || data[0] != '{' {
		return nil, false
	}
	type member struct {
		key, val []byte
		typ      model.ValueType
	}
	var buf [24]member
	members := buf[:0]
	var ts []byte
	size := 0
	i := skipSpace(data, 1)
	if i < len(data) && data[i] == '}' {
		return nil, i == len(data)-1
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return nil, false
		}
		end := plainString(data, i)
		if end < 0 {
			return nil, false
		}
		key := data[i+1 : end-1]
		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return nil, false
		}
		i = skipSpace(data, i+1)
		if i >= len(data) {
			return nil, false
		}
		var typ model.ValueType
		switch c := data[i]; {
		case c == '"':
			end, typ = plainString(data, i), model.TypeString
		case c == '-' || (c >= '0' && c <= '9'):
			end, typ = number(data, i), model.TypeNumber
		case c == 't':
			end, typ = literal(data, i, "true"), model.TypeBool
		case c == 'f':
			end, typ = literal(data, i, "false"), model.TypeBool
		case c == 'n':
			end, typ = literal(data, i, "null"), model.TypeNull
		default: // objects, arrays, anything else: the general path
			return nil, false
		}
		if end < 0 {
			return nil, false
		}
		val := data[i:end]
		if string(key) == "ts" {
			ts = val
		} else {
			if !utf8.Valid(key) || model.ValidateName(string(key)) != nil || len(val) > model.MaxValueBytes || model.CheckValue(val) != nil {
				return nil, false
			}
			members = append(members, member{key, val, typ})
			size += len(val)
		}
		i = skipSpace(data, end)
		if i >= len(data) {
			return nil, false
		}
		if data[i] == '}' {
			if i != len(data)-1 {
				return nil, false
			}
			break
		}
		if data[i] != ',' {
			return nil, false
		}
		i = skipSpace(data, i+1)
	}
	t := now.UTC()
	if ts != nil {
		var good bool
		if t, good = flatTS(ts); !good {
			return nil, false
		}
	}
	if len(members) == 0 {
		return nil, true
	}
	vars = make(map[string]model.Variable, len(members))
	arena := make([]byte, 0, size) // one allocation for every value
	for _, m := range members {
		start := len(arena)
		arena = append(arena, m.val...)
		vars[ns.name(m.key)] = model.Variable{Value: arena[start:len(arena):len(arena)], Type: m.typ, Time: t}
	}
	if len(vars) > model.MaxVariables {
		return nil, false
	}
	return vars, true
}

// flatTS reads a "ts" value as parseTS does; good is false where parseTS
// would fail or where the value is not a plain string or a number.
func flatTS(v []byte) (time.Time, bool) {
	switch v[0] {
	case '"':
		s := v[1 : len(v)-1]
		if !utf8.Valid(s) {
			return time.Time{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, string(s))
		return t.UTC(), err == nil
	case 't', 'f', 'n':
		return time.Time{}, false
	}
	ms, err := strconv.ParseFloat(string(v), 64)
	if err != nil || ms < 0 || ms > 1e14 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)).UTC(), true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainString returns the index after the string starting at data[i]
// (a '"'), or -1 if it has escapes or control characters or no end.
func plainString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return j + 1
		case c == '\\' || c < 0x20:
			return -1
		}
	}
	return -1
}

// number returns the index after the JSON number starting at data[i], or
// -1 if it is not one.
func number(data []byte, i int) int {
	digits := func(j int) int {
		k := j
		for k < len(data) && data[k] >= '0' && data[k] <= '9' {
			k++
		}
		if k == j {
			return -1
		}
		return k
	}
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return -1
	case data[i] == '0':
		i++
	default:
		if i = digits(i); i < 0 {
			return -1
		}
	}
	if i < len(data) && data[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

// literal returns the index after word at data[i], or -1.
func literal(data []byte, i int, word string) int {
	if len(data)-i < len(word) || string(data[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}
