package apitypes

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	less := [][2]string{
		{"1.0", "1.1"},
		{"1.9", "1.10"},
		{"1.2.9", "1.10.0"},
		{"1.2", "1.2.1"},
		{"1.2.0-rc.1", "1.2.0"},
		{"1.2.0-rc.1", "1.2.0-rc.2"},
		{"1.2.0-rc.2", "1.2.0-rc.10"},
		{"1.2.0-alpha", "1.2.0-alpha.1"},
		{"1.2.0-1", "1.2.0-alpha"},
		{"1.2.0~beta", "1.2.0"},
		{"v1.2", "1.3"},
		{"2", "10"},
		{"1.a", "1.b"},
		{"1.9", "1.a"},
		{"0009", "10"},
		{"1.99999999999999999999999", "1.100000000000000000000000"},
	}
	for _, p := range less {
		if c := CompareVersions(p[0], p[1]); c != -1 {
			t.Errorf("%s vs %s: %d, want -1", p[0], p[1], c)
		}
		if c := CompareVersions(p[1], p[0]); c != 1 {
			t.Errorf("%s vs %s: %d, want 1", p[1], p[0], c)
		}
	}
	for _, p := range [][2]string{{"1.2", "1.2.0"}, {"v1.2.0", "1.2.0"}, {"1.2.0+build.5", "1.2.0"}, {"01.2", "1.2"}, {"abc", "abc"}} {
		if c := CompareVersions(p[0], p[1]); c != 0 {
			t.Errorf("%s vs %s: %d, want 0", p[0], p[1], c)
		}
	}
}

func testManifest(arts ...Artifact) *Manifest {
	return &Manifest{Name: "app", Version: "1.0", Artifacts: arts}
}

func TestChooseArtifact(t *testing.T) {
	a := func(os, arch, typ string) Artifact {
		return Artifact{OS: os, Arch: arch, Type: typ, Size: 1, SHA256: strings.Repeat("a", 64)}
	}
	all := testManifest(a("linux", "amd64", "binary"), a("linux", "amd64", "deb"), a("linux", "amd64", "rpm"),
		a("linux", "amd64", "script"), a("linux", "amd64", "tar"), a("linux", "arm64", "deb"))
	has := func(set ...string) func(string) bool {
		return func(t string) bool {
			for _, s := range set {
				if s == t {
					return true
				}
			}
			return false
		}
	}
	for _, c := range []struct {
		m      *Manifest
		arch   string
		has    []string
		want   string
		failed bool
	}{
		{all, "amd64", []string{"deb", "rpm"}, "deb", false},
		{all, "amd64", []string{"rpm"}, "rpm", false},
		{all, "amd64", nil, "tar", false},
		{testManifest(a("linux", "amd64", "binary"), a("linux", "amd64", "script")), "amd64", []string{"deb"}, "binary", false},
		{testManifest(a("linux", "amd64", "script")), "amd64", nil, "script", false},
		{all, "arm64", []string{"deb"}, "deb", false},
		{all, "arm64", nil, "", true},
		{all, "riscv64", []string{"deb"}, "", true},
	} {
		got, err := ChooseArtifact(c.m, "linux", c.arch, has(c.has...))
		if c.failed {
			if !errors.Is(err, ErrNoArtifact) || !strings.Contains(err.Error(), "linux/"+c.arch) {
				t.Errorf("%s with %v: %+v, %v; want no artifact", c.arch, c.has, got, err)
			}
			continue
		}
		if err != nil || got.Type != c.want || got.Arch != c.arch {
			t.Errorf("%s with %v: %+v, %v; want %s", c.arch, c.has, got, err, c.want)
		}
	}
}

func TestParseInstallArgs(t *testing.T) {
	good := `{"release":{"manifest":{"name":"a"},"signature":"c2ln","key_id":"0123456789abcdef"},"downgrade":true,"check":"test -x /opt/a"}`
	a, err := ParseInstallArgs([]byte(good))
	if err != nil || !a.Downgrade || a.Check != "test -x /opt/a" || a.Release.KeyID != "0123456789abcdef" ||
		string(a.Release.Manifest) != `{"name":"a"}` {
		t.Fatalf("good args: %+v %v", a, err)
	}
	// The node adds the release's tenant; devices accept it.
	if a, err := ParseInstallArgs([]byte(`{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef"},"tenant":"acme"}`)); err != nil || a.Tenant != "acme" {
		t.Fatalf("with a tenant: %+v %v", a, err)
	}
	// Encoding gives the contract's shape back.
	out, _ := json.Marshal(InstallArgs{Release: a.Release})
	if !strings.Contains(string(out), `"downgrade":false`) || strings.Contains(string(out), "check") {
		t.Fatalf("encoded: %s", out)
	}
	for name, bad := range map[string]string{
		"empty":              ``,
		"not an object":      `[]`,
		"no release":         `{"downgrade":true}`,
		"unknown key":        `{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef"},"force":true}`,
		"unknown in release": `{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef","url":"x"}}`,
		"no signature":       `{"release":{"manifest":{},"key_id":"0123456789abcdef"}}`,
		"bad key id":         `{"release":{"manifest":{},"signature":"x","key_id":"ABC"}}`,
		"null manifest":      `{"release":{"manifest":null,"signature":"x","key_id":"0123456789abcdef"}}`,
		"check NUL":          `{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef"},"check":"a\u0000b"}`,
		"long check":         `{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef"},"check":"` + strings.Repeat("x", MaxCheckBytes+1) + `"}`,
		"trailing":           good + `{}`,
		"downgrade str":      `{"release":{"manifest":{},"signature":"x","key_id":"0123456789abcdef"},"downgrade":"yes"}`,
	} {
		if _, err := ParseInstallArgs([]byte(bad)); !errors.Is(err, ErrInstallArgs) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseInstallArgs: any input either fails with ErrInstallArgs or
// gives args of the promised shape that encode and parse again to the
// same args.
func FuzzParseInstallArgs(f *testing.F) {
	f.Add([]byte(`{"release":{"manifest":{"name":"a"},"signature":"c2ln","key_id":"0123456789abcdef"},"downgrade":false,"check":"true"}`))
	f.Add([]byte(`{"release":{}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseInstallArgs(data)
		if err != nil {
			if !errors.Is(err, ErrInstallArgs) {
				t.Fatalf("error not wrapping ErrInstallArgs: %v", err)
			}
			return
		}
		if len(a.Release.Manifest) == 0 || a.Release.Signature == "" || len(a.Release.KeyID) != 16 || len(a.Check) > MaxCheckBytes {
			t.Fatalf("accepted %q as %+v", data, a)
		}
		enc, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseInstallArgs(enc)
		if err != nil || b.Downgrade != a.Downgrade || b.Check != a.Check || b.Release.KeyID != a.Release.KeyID || b.Release.Signature != a.Release.Signature {
			t.Fatalf("round trip of %q: %+v, %v", enc, b, err)
		}
	})
}

// FuzzCompareVersions: the order is antisymmetric and never panics.
func FuzzCompareVersions(f *testing.F) {
	f.Add("1.2.0", "1.10")
	f.Add("1.2.0-rc.1", "v1.2.0+b")
	f.Add("", "~")
	f.Fuzz(func(t *testing.T, a, b string) {
		if x, y := CompareVersions(a, b), CompareVersions(b, a); x != -y || x < -1 || x > 1 {
			t.Fatalf("%q vs %q: %d, reverse %d", a, b, x, y)
		}
	})
}
