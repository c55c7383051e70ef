package model

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxValueDepth bounds how deeply arrays and objects nest in a JSON value
// the tree stores (a variable's value, an event's payload, a function's
// argument or result schema, a job's arguments or result). Every reader
// of the tree, with whatever JSON decoder, can take back a value this
// deep inside the documents that carry it.
const MaxValueDepth = 64

// ErrInvalidValue refuses a JSON value that breaks CheckValue's rule. It
// wraps ErrInvalid.
var ErrInvalidValue = fmt.Errorf("%w value", ErrInvalid)

// CheckValue is the rule every JSON value from outside the node must
// follow before the tree stores it (I-JSON, RFC 7493, with bounded
// nesting):
//
//   - one JSON value, nothing but white space around it;
//   - valid UTF-8, with no escaped surrogate that is not part of a pair;
//   - every number finite as a float64 (1e999 is not);
//   - arrays and objects nested at most MaxValueDepth deep.
//
// Mutation.Validate applies it to every value of a mutation, so every
// writer (the API, devices over MQTT, federation mirrors) is held to it;
// decoders of outside input call it too, to refuse early with their own
// context. It only ever applies to new writes: values stored before the
// rule existed are read back as they are. Errors wrap ErrInvalidValue.
func CheckValue(raw []byte) error {
	if plainScalar(raw) {
		return nil // the usual telemetry value, without the general scan
	}
	if !json.Valid(raw) {
		if !utf8.Valid(raw) {
			return fmt.Errorf("%w: not valid UTF-8", ErrInvalidValue)
		}
		return fmt.Errorf("%w: not valid JSON", ErrInvalidValue)
	}
	depth := 0
	for i := 0; i < len(raw); {
		switch c := raw[i]; {
		case c == '[' || c == '{':
			if depth++; depth > MaxValueDepth {
				return fmt.Errorf("%w: nested deeper than %d levels", ErrInvalidValue, MaxValueDepth)
			}
			i++
		case c == ']' || c == '}':
			depth--
			i++
		case c == '"':
			end, err := checkString(raw, i)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			end, err := checkNumber(raw, i)
			if err != nil {
				return err
			}
			i = end
		default: // white space, ',', ':', true, false, null
			i++
		}
	}
	return nil
}

// checkString checks the (syntactically valid) string starting at raw[i]
// and returns the index after it.
func checkString(raw []byte, i int) (int, error) {
	for i++; i < len(raw); {
		c := raw[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if raw[i+1] != 'u' {
				i += 2
				continue
			}
			r := hex4(raw[i+2 : i+6])
			i += 6
			switch {
			case r >= 0xdc00 && r <= 0xdfff:
				return 0, fmt.Errorf("%w: unpaired surrogate \\u%04x in a string", ErrInvalidValue, r)
			case r >= 0xd800 && r <= 0xdbff:
				if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
					return 0, fmt.Errorf("%w: unpaired surrogate \\u%04x in a string", ErrInvalidValue, r)
				}
				if lo := hex4(raw[i+2 : i+6]); lo < 0xdc00 || lo > 0xdfff {
					return 0, fmt.Errorf("%w: unpaired surrogate \\u%04x in a string", ErrInvalidValue, r)
				}
				i += 6
			}
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && n <= 1 {
				return 0, fmt.Errorf("%w: a string is not valid UTF-8", ErrInvalidValue)
			}
			i += n
		}
	}
	return i, nil
}

// hex4 reads four hexadecimal digits (already checked by json.Valid).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		default:
			r = r<<4 | rune(c-'A'+10)
		}
	}
	return r
}

// checkNumber checks the (syntactically valid) number starting at raw[i]
// and returns the index after it. Only a number with an exponent or of
// more than 300 characters can be out of range.
func checkNumber(raw []byte, i int) (int, error) {
	j, exp := i, false
	for ; j < len(raw); j++ {
		c := raw[j]
		if c == 'e' || c == 'E' {
			exp = true
		} else if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' {
			break
		}
	}
	if exp || j-i > 300 {
		f, err := strconv.ParseFloat(string(raw[i:j]), 64)
		if err != nil || math.IsInf(f, 0) {
			n := raw[i:j]
			if len(n) > 32 {
				n = append(n[:32:32], "..."...)
			}
			return 0, fmt.Errorf("%w: number %s is out of range", ErrInvalidValue, n)
		}
	}
	return j, nil
}

// plainScalar reports whether raw is, exactly, a JSON number without an
// exponent of at most 300 characters (finite as a float64), true, false,
// null, or a string of valid UTF-8 without escapes or control
// characters: values that follow CheckValue's rule whatever they are.
// False says nothing.
func plainScalar(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	switch c := raw[0]; {
	case c == '"':
		if len(raw) < 2 || raw[len(raw)-1] != '"' {
			return false
		}
		body := raw[1 : len(raw)-1]
		for _, b := range body {
			if b == '"' || b == '\\' || b < 0x20 {
				return false
			}
		}
		return utf8.Valid(body)
	case c == 't':
		return string(raw) == "true"
	case c == 'f':
		return string(raw) == "false"
	case c == 'n':
		return string(raw) == "null"
	case c != '-' && (c < '0' || c > '9'):
		return false
	}
	if len(raw) > 300 {
		return false
	}
	i := 0
	if raw[i] == '-' {
		i++
	}
	switch {
	case i == len(raw):
		return false
	case raw[i] == '0':
		i++
	case raw[i] >= '1' && raw[i] <= '9':
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(raw) && raw[i] == '.' {
		i++
		start := i
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(raw)
}
