package releases

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

func recordOf(t *testing.T, key ed25519.PrivateKey, arts ...apitypes.Artifact) []byte {
	t.Helper()
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: "a", Version: "1", Artifacts: arts, Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339)}
	sm, err := m.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(record{By: "x", Signed: *sm})
	return b
}

// TestUpdate: the model's updater lets a release gain artifacts and
// never lose or change one, whatever a writer saw before.
func TestUpdate(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	a := apitypes.Artifact{OS: "linux", Arch: "amd64", Type: "deb", Size: 1, SHA256: strings.Repeat("a", 64)}
	b := apitypes.Artifact{OS: "linux", Arch: "arm64", Type: "deb", Size: 1, SHA256: strings.Repeat("b", 64)}
	changed := a
	changed.SHA256 = strings.Repeat("c", 64)
	one, two := recordOf(t, key, a), recordOf(t, key, a, b)
	if got, err := Update("k", nil, one); err != nil || string(got) != string(one) {
		t.Fatalf("create: %v", err)
	}
	if got, err := Update("k", one, two); err != nil || string(got) != string(two) {
		t.Fatalf("extend: %v", err)
	}
	if _, err := Update("k", two, one); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("dropping an artifact: %v, want conflict", err)
	}
	if _, err := Update("k", one, recordOf(t, key, changed)); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("changing an artifact: %v, want conflict", err)
	}
}
