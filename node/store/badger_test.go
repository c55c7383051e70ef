package store

import (
	"context"
	"errors"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/storetest"
)

func openTestBadger(t *testing.T, dir string, key []byte) *Badger {
	t.Helper()
	s, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: key, CacheMB: 8})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBadgerConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) model.Store { return openTestBadger(t, t.TempDir(), nil) })
}

func TestBadgerEncryptedConformance(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	storetest.Run(t, func(t *testing.T) model.Store { return openTestBadger(t, t.TempDir(), key) })
}

func TestBadgerReopen(t *testing.T) {
	dir := t.TempDir()
	key := []byte("0123456789abcdef")
	s := openTestBadger(t, dir, key)
	writeOneAndClose(t, s)
	if _, err := OpenBadger(BadgerOptions{Dir: dir, EncryptionKey: []byte("fedcba9876543210")}); err == nil {
		t.Fatal("opened an encrypted store with the wrong key")
	}
	s = openTestBadger(t, dir, key)
	defer s.Close()
	last, err := s.LastSeq()
	if err != nil || last != 2 {
		t.Fatalf("last = %d, %v", last, err)
	}
	if _, err := s.Context("/devices/a"); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/b", Type: "device"})
	if err != nil || es[0].Seq != 3 {
		t.Fatalf("sequence after reopen: %v, %v", es, err)
	}
	if _, err := OpenBadger(BadgerOptions{Dir: dir}); err == nil || errors.Is(err, nil) {
		t.Fatal("a second open of a locked directory succeeded")
	}
}

// writeOneAndClose writes /devices/a through a model on s, then closes s
// twice (the second close must be harmless).
func writeOneAndClose(t *testing.T, s model.Store) {
	t.Helper()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
