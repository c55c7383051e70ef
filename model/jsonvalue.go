package model

import (
	"bytes"
	"encoding/json"
	"math/big"
)

// The equality of variable values that a search's variable filter
// (SearchQuery.Vars) applies, shared by the stores that answer searches
// and by whoever else compares a variable with a wanted value.

// DecodeValue decodes one JSON value with exact numbers (json.Number),
// as EqualDecoded compares them.
func DecodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// EqualDecoded compares values decoded by DecodeValue as PostgreSQL
// compares jsonb: numbers by exact decimal value (4 equals 4.0), the
// rest structurally.
func EqualDecoded(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		if a == b {
			return true
		}
		x, okx := new(big.Rat).SetString(string(a))
		y, oky := new(big.Rat).SetString(string(b))
		return okx && oky && x.Cmp(y) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !EqualDecoded(av, bv) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !EqualDecoded(a[i], b[i]) {
				return false
			}
		}
		return true
	default: // string, bool, nil
		return a == b
	}
}

// EqualValues reports whether variable value got (empty: null) matches
// want as a search's variable filter matches it. A value that does not
// decode matches nothing.
func EqualValues(got, want json.RawMessage) bool {
	if len(got) == 0 {
		got = json.RawMessage("null")
	}
	if bytes.Equal(got, want) {
		return true
	}
	a, err := DecodeValue(got)
	if err != nil {
		return false
	}
	b, err := DecodeValue(want)
	return err == nil && EqualDecoded(a, b)
}
