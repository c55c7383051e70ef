package releases

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/objects"
	"github.com/strata-dm/strata/node/store"
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

// TestUploadSurvivesRestart: a partial upload is resumed by a new
// service over the same staging folder and model (a node restarted).
func TestUploadSurvivesRestart(t *testing.T) {
	st, err := store.OpenBadger(store.BadgerOptions{Dir: t.TempDir(), CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := model.New(model.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	objs, err := objects.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg := Config{Records: m, Objects: objs, StagingDir: filepath.Join(t.TempDir(), "uploads"), TrustedKeys: []ed25519.PublicKey{pub}}
	ctx := context.Background()
	s1, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 10_000)
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	now := time.Now().UTC()
	mf := apitypes.Manifest{Name: "a", Version: "1", Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339),
		Artifacts: []apitypes.Artifact{{OS: "linux", Arch: "amd64", Type: "tar", Size: int64(len(data)), SHA256: hexSum}}}
	sm, _ := mf.Sign(key)
	sys := &auth.Principal{User: "admin", System: true}
	ref := Ref{Name: "a", Version: "1"}
	if _, _, err := s1.Put(ctx, sys, ref, *sm); err != nil {
		t.Fatal(err)
	}
	// The body breaks after 40,000 bytes.
	broken := io.MultiReader(bytes.NewReader(data[:40_000]), iotest.ErrReader(errors.New("connection reset")))
	if _, err := s1.Upload(ctx, sys, ref, hexSum, 0, broken); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("broken body: %v, want invalid", err)
	}
	s2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stt, err := s2.UploadState(ctx, sys, ref, hexSum)
	if err != nil || stt.Offset != 40_000 {
		t.Fatalf("after restart: %+v %v", stt, err)
	}
	if stt, err = s2.Upload(ctx, sys, ref, hexSum, 40_000, bytes.NewReader(data[40_000:])); err != nil || !stt.Complete {
		t.Fatalf("resume: %+v %v", stt, err)
	}
	rd, _, err := s2.Open(ctx, sys, ref, hexSum)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got, _ := io.ReadAll(rd)
	if !bytes.Equal(got, data) {
		t.Fatal("stored bytes differ")
	}
}
