package model

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on paths. They bound memory and key sizes in every store and on the
// federation wire, so they are part of the contract (docs/api.md).
const (
	MaxPathLen = 1024 // bytes of the whole path, including slashes
	MaxNameLen = 128  // bytes of one segment
	MaxDepth   = 32   // segments
)

// ErrInvalidPath is wrapped by every path and name validation error.
var ErrInvalidPath = errors.New("invalid path")

// Path is a validated, canonical context path: "/" or "/a/b" with no empty,
// "." or ".." segments and no trailing slash. The zero value is not a valid
// path; obtain one from ParsePath, Root or Child.
type Path string

// Root is the root of a node's tree.
const Root Path = "/"

// ParsePath validates s and returns it as a Path. A missing leading slash is
// added ("devices/a" is "/devices/a"); a single trailing slash is tolerated.
// Everything else that is not canonical is rejected, never repaired, so that
// two spellings can never name one context.
func ParsePath(s string) (Path, error) {
	if s == "" || s == "/" {
		return Root, nil
	}
	if len(s) > MaxPathLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidPath, MaxPathLen)
	}
	if s[0] != '/' {
		s = "/" + s
	}
	if len(s) > 1 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	depth := 0
	for rest := s[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		if err := ValidateName(seg); err != nil {
			return "", err
		}
		depth++
		if depth > MaxDepth {
			return "", fmt.Errorf("%w: deeper than %d segments", ErrInvalidPath, MaxDepth)
		}
		if !more {
			break
		}
		rest = tail
	}
	return Path(s), nil
}

// MustPath is ParsePath for constants in code and tests; it panics on error.
func MustPath(s string) Path {
	p, err := ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

// ValidateName checks one path segment (a context name).
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty segment", ErrInvalidPath)
	case name == "." || name == "..":
		return fmt.Errorf("%w: segment %q is not allowed", ErrInvalidPath, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: segment longer than %d bytes", ErrInvalidPath, MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: segment is not valid UTF-8", ErrInvalidPath)
	}
	if asciiName(name) {
		return nil
	}
	return checkNameRunes(name)
}

// checkNameRunes is ValidateName's check of every character.
func checkNameRunes(name string) error {
	for _, r := range name {
		switch {
		case unicode.IsControl(r) || r == utf8.RuneError:
			return fmt.Errorf("%w: control character %U in segment", ErrInvalidPath, r)
		case unicode.IsSpace(r):
			return fmt.Errorf("%w: whitespace in segment %q", ErrInvalidPath, name)
		case strings.ContainsRune(forbiddenInName, r):
			return fmt.Errorf("%w: character %q not allowed in segment", ErrInvalidPath, r)
		case unicode.Is(unicode.Cf, r):
			return fmt.Errorf("%w: format character %U in segment", ErrInvalidPath, r)
		}
	}
	return nil
}

// asciiName reports whether name is plain printable ASCII without a
// character a segment forbids: the common case, decided without decoding
// runes. Anything else takes ValidateName's full check, which names the
// offending character.
func asciiName(name string) bool {
	for i := 0; i < len(name); i++ {
		if !nameByte[name[i]] {
			return false
		}
	}
	return true
}

// forbiddenInName lists the printable characters a segment may not hold.
const forbiddenInName = `/\?#%*"<>|`

// nameByte marks the bytes asciiName accepts.
var nameByte = func() (t [256]bool) {
	for b := 0x21; b < 0x7f; b++ {
		t[b] = !strings.ContainsRune(forbiddenInName, rune(b))
	}
	return t
}()

func (p Path) String() string { return string(p) }

// IsRoot reports whether p is the root.
func (p Path) IsRoot() bool { return p == Root }

// Name is the last segment; "" for the root.
func (p Path) Name() string {
	if p.IsRoot() {
		return ""
	}
	return string(p[strings.LastIndexByte(string(p), '/')+1:])
}

// Parent is the enclosing path; the root's parent is the root.
func (p Path) Parent() Path {
	i := strings.LastIndexByte(string(p), '/')
	if i <= 0 {
		return Root
	}
	return p[:i]
}

// Child returns p/name after validating name and the resulting length.
func (p Path) Child(name string) (Path, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	var c Path
	if p.IsRoot() {
		c = Path("/" + name)
	} else {
		c = Path(string(p) + "/" + name)
	}
	if len(c) > MaxPathLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidPath, MaxPathLen)
	}
	if c.Depth() > MaxDepth {
		return "", fmt.Errorf("%w: deeper than %d segments", ErrInvalidPath, MaxDepth)
	}
	return c, nil
}

// Depth is the number of segments; 0 for the root.
func (p Path) Depth() int {
	if p.IsRoot() {
		return 0
	}
	return strings.Count(string(p), "/")
}

// Segments splits p into its names; nil for the root.
func (p Path) Segments() []string {
	if p.IsRoot() {
		return nil
	}
	return strings.Split(string(p[1:]), "/")
}

// Within reports whether p is prefix itself or lies below it.
func (p Path) Within(prefix Path) bool {
	if prefix.IsRoot() || p == prefix {
		return true
	}
	return strings.HasPrefix(string(p), string(prefix)) && len(p) > len(prefix) && p[len(prefix)] == '/'
}

// Ancestors returns the paths from the root's first child down to p's
// parent: for /a/b/c that is /a, /a/b.
func (p Path) Ancestors() []Path {
	var out []Path
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	return out
}
