package alerts

import (
	"encoding/json"
	"testing"
)

// FuzzParseRule: any body either is refused or gives a rule that parses
// again to the same rule from its own encoding.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		`{"name":"hot","kind":"threshold","var":"temp","op":">","value":80,"for":"30s","labels":{"team":"ops"}}`,
		`{"name":"gone","kind":"offline","for":"5m","selector":{"path":"/devices","labels":{"site":"a"}}}`,
		`{"name":"heat","kind":"event","event":"overheat*","level":"alert"}`,
		`{"name":"climb","kind":"rate","var":"t","op":"!=","value":-1e300,"window":"1h","severity":"critical"}`,
		`{"name":"x","kind":"event","event":"[a-"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRule(b)
		if err != nil {
			return
		}
		enc, err := json.Marshal(r.Spec)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRule(enc)
		if err != nil {
			t.Fatalf("own encoding %s refused: %v", enc, err)
		}
		if !sameSpec(r.Spec, r2.Spec) {
			t.Fatalf("%s became %+v", enc, r2.Spec)
		}
	})
}
