package model

import (
	"encoding/json"
	"testing"
)

func TestEqualValues(t *testing.T) {
	for _, c := range []struct {
		got, want string
		eq        bool
	}{
		{`"2.1.0"`, `"2.1.0"`, true},
		{`"2.0.9"`, `"2.1.0"`, false},
		{`4`, `4.0`, true},
		{`4`, `"4"`, false},
		{`true`, `true`, true},
		{``, `null`, true},
		{`{"a":[1,2]}`, `{"a":[1,2.0]}`, true},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`nope`, `"nope"`, false},
	} {
		if got := EqualValues(json.RawMessage(c.got), SearchVarValue(string(c.want))); got != c.eq {
			t.Errorf("%s vs %s: %v", c.got, c.want, got)
		}
	}
}
