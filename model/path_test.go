package model

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	good := map[string]Path{
		"":                  Root,
		"/":                 Root,
		"/devices/pump-12":  "/devices/pump-12",
		"devices/pump-12":   "/devices/pump-12",
		"/devices/pump-12/": "/devices/pump-12",
		"/a/b.c/d_e/f:g@h":  "/a/b.c/d_e/f:g@h",
		"/usine/capteur-é":  "/usine/capteur-é",
		"/..a/a..":          "/..a/a..",
	}
	for in, want := range good {
		got, err := ParsePath(in)
		if err != nil || got != want {
			t.Errorf("ParsePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"//", "/a//b", "/a/./b", "/a/../b", "/..", "/.", "/a/b//",
		"/a\x00b", "/a\nb", "/a\tb", "/a b", "/a\\b", "/a?b", "/a#b", "/a%2fb", "/a*", "/a\x7f",
		"/a\u200bb", "/\xff", "/" + strings.Repeat("x", MaxNameLen+1),
		strings.Repeat("/abcdefgh", MaxPathLen/9+1),
		strings.Repeat("/a", MaxDepth+1),
	}
	for _, in := range bad {
		if _, err := ParsePath(in); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ParsePath(%q) err = %v, want ErrInvalidPath", in, err)
		}
	}
}

func TestPathMethods(t *testing.T) {
	p := MustPath("/peers/eu/devices/pump-12")
	if p.Name() != "pump-12" || p.Parent() != "/peers/eu/devices" || p.Depth() != 4 {
		t.Fatalf("name %q parent %q depth %d", p.Name(), p.Parent(), p.Depth())
	}
	if Root.Parent() != Root || MustPath("/a").Parent() != Root || Root.Name() != "" {
		t.Fatal("root edges")
	}
	if !p.Within("/peers/eu") || !p.Within(Root) || !p.Within(p) || p.Within("/peers/e") || MustPath("/a-b").Within("/a") {
		t.Fatal("Within")
	}
	if got := p.Ancestors(); len(got) != 3 || got[0] != "/peers" || got[2] != "/peers/eu/devices" {
		t.Fatalf("ancestors = %v", got)
	}
	c, err := Root.Child("x")
	if err != nil || c != "/x" {
		t.Fatalf("child = %q, %v", c, err)
	}
	if _, err := p.Child(".."); err == nil {
		t.Fatal("child .. accepted")
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "/devices/pump-12", "a/b/", "//", "/a/../b", "/a\x00", "/é/ü", strings.Repeat("/a", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("error %v does not wrap ErrInvalidPath", err)
			}
			return
		}
		// A valid path is canonical: parsing it again is the identity, and
		// rebuilding it from its segments gives the same path.
		again, err := ParsePath(string(p))
		if err != nil || again != p {
			t.Fatalf("reparse %q = %q, %v", p, again, err)
		}
		q := Root
		for _, seg := range p.Segments() {
			if q, err = q.Child(seg); err != nil {
				t.Fatalf("rebuild %q: %v", p, err)
			}
		}
		if q != p {
			t.Fatalf("rebuilt %q from %q", q, p)
		}
		if len(p) > MaxPathLen || p.Depth() > MaxDepth {
			t.Fatalf("limits exceeded by %q", p)
		}
	})
}

// The ASCII shortcut must accept exactly the names the full check accepts.
func TestASCIINameAgreesWithFullCheck(t *testing.T) {
	for b := 0; b < 0x80; b++ {
		name := "a" + string(rune(b)) + "z"
		if fast, full := asciiName(name), checkNameRunes(name) == nil; fast != full {
			t.Errorf("byte %#x: shortcut accepts %v, full check accepts %v", b, fast, full)
		}
	}
	if asciiName("caf\u00e9") {
		t.Error("shortcut accepted a non-ASCII name; it must defer to the full check")
	}
}
