package releases

import "testing"

// FuzzInstallArgs: an install's args, as operators send them and as
// links carry them, are parsed without panicking, and what parses keeps
// its meaning when encoded again.
func FuzzInstallArgs(f *testing.F) {
	for _, s := range []string{
		`{"release":"fw","version":"1.0"}`,
		`{"release":"fw","version":"1.0","tenant":"acme","downgrade":true,"check":"true"}`,
		`{"release":{"manifest":{"name":"a"},"signature":"AA==","key_id":"00"}}`,
		`{"release":1}`, `{"release":"fw"}`, `{}`, `[]`, `{"release":"fw","version":"1"} {}`, `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if in, ref, given, err := parseOperatorInstall(b); err == nil {
			if ref.Name == "" || (given == nil && ref.Version == "") || len(in.Check) > MaxCheckBytes {
				t.Fatalf("parsed %q into %+v", b, ref)
			}
		}
		ins, err := ParseInstall(b)
		if err != nil {
			return
		}
		again, err := EncodeInstall(ins)
		if err != nil {
			t.Fatal(err)
		}
		ins2, err := ParseInstall(again)
		if err != nil || string(ins2.Release.Manifest) != string(ins.Release.Manifest) || ins2.Tenant != ins.Tenant || ins2.Downgrade != ins.Downgrade || ins2.Check != ins.Check {
			t.Fatalf("%q: again %q: %v", b, again, err)
		}
	})
}
