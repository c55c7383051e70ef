package model

import (
	"slices"
	"testing"
)

func TestSubtrees(t *testing.T) {
	ps := func(s ...string) []Path {
		out := make([]Path, len(s))
		for i, x := range s {
			out[i] = Path(x)
		}
		return out
	}
	if got, want := NormalizeSubtrees(ps("/b", "/a/x", "/a", "/b", "/a-b")), ps("/a", "/a-b", "/b"); !slices.Equal(got, want) {
		t.Errorf("NormalizeSubtrees = %v, want %v", got, want)
	}
	if got, want := IntersectSubtrees(ps("/a", "/c/d"), ps("/a/x", "/c", "/e")), ps("/a/x", "/c/d"); !slices.Equal(got, want) {
		t.Errorf("IntersectSubtrees = %v, want %v", got, want)
	}
	if got := IntersectSubtrees(ps("/a"), nil); len(got) != 0 {
		t.Errorf("IntersectSubtrees with nothing = %v, want nothing", got)
	}
}
