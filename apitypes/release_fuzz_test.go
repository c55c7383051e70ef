package apitypes

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// FuzzParseManifest: any input either fails or is a valid manifest whose
// canonical form is the input itself, and which signs and verifies.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"name":"a","version":"1","artifacts":[{"os":"linux","arch":"arm64","type":"deb","size":1,"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `"}],"created":"2026-01-01T00:00:00Z","expires":"2027-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"a"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	seed := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		canon, err := m.Canonical()
		if err != nil || !bytes.Equal(canon, data) {
			t.Fatalf("accepted %q, canonical %q, %v", data, canon, err)
		}
		sm, err := m.Sign(seed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sm.Verify([]ed25519.PublicKey{seed.Public().(ed25519.PublicKey)}); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
	})
}
