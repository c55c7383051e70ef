package api

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzUploadOffset: the offset headers of an artifact upload never
// panic, and an accepted offset is non-negative and is what the headers
// say.
func FuzzUploadOffset(f *testing.F) {
	for _, s := range [][2]string{{"0", ""}, {"", "bytes 0-9/10"}, {"5", "bytes 5-9/*"}, {"-1", ""}, {"99999999999999999999", ""},
		{"", "bytes 9-5/10"}, {"", "bytes 0-10/10"}, {"1", "bytes 2-3/4"}, {"", "bytes -/"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, uo, cr string) {
		off, err := parseUploadOffset(uo, cr)
		if err != nil {
			return
		}
		if off < 0 {
			t.Fatalf("offset %d from %q %q", off, uo, cr)
		}
		if uo != "" && strconv.FormatInt(off, 10) != strings.TrimLeft(uo, "0") && !(off == 0 && strings.Trim(uo, "0") == "") {
			t.Fatalf("offset %d from Upload-Offset %q", off, uo)
		}
	})
}
