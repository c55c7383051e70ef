package model

import (
	"errors"
	"testing"
)

func TestSearchVarValue(t *testing.T) {
	for in, want := range map[string]string{
		"linux": `"linux"`, `"linux"`: `"linux"`, "4": "4", "4.0": "4.0", "true": "true", "null": "null",
		`{ "a" : 1 }`: `{"a":1}`, "": `""`, "{a": `"{a"`, " 7 ": "7", "1 2": `"1 2"`,
	} {
		if got := string(SearchVarValue(in)); got != want {
			t.Errorf("SearchVarValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestValidText(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"plant-7", true}, {"Zürich", true}, {"", false}, {"abcdefghi", false}, {"a\tb", false}, {"a\x7f", false}, {"\xff", false},
	} {
		err := ValidText("label", c.s, 8)
		if (err == nil) != c.ok {
			t.Errorf("ValidText(%q) = %v, want ok %v", c.s, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidText(%q) = %v, not ErrInvalid", c.s, err)
		}
	}
}
