package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidText accepts what the model accepts in types, labels and other
// free-text fields: 1 to max bytes of UTF-8 without control characters.
// Its error wraps ErrInvalid and names the field as what.
func ValidText(what, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%w: %s must be 1 to %d bytes", ErrInvalid, what, max)
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: %s %q has a control character or is not UTF-8", ErrInvalid, what, s)
	}
	return nil
}

// SearchVarValue is the JSON value a search's var.<name> filter stands
// for: the text itself when it is JSON (4, true, null, "4", {"a":1}),
// else the text as a JSON string (linux stands for "linux").
func SearchVarValue(s string) json.RawMessage {
	if t := bytes.TrimSpace([]byte(s)); len(t) > 0 && json.Valid(t) {
		var b bytes.Buffer
		if json.Compact(&b, t) == nil {
			return b.Bytes()
		}
	}
	b, _ := json.Marshal(s) // a string always marshals
	return b
}
