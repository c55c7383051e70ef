package main

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

// TestStoreTruncateWAL damages the write-ahead log of a stopped node in
// its middle: the store refuses to open, naming segment and offset;
// truncate-wal refuses while the store is open and at an offset inside a
// record, then cuts there, and the store opens again with every record
// before the damage.
func TestStoreTruncateWAL(t *testing.T) {
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	cfgPath := filepath.Join(dir, configFile)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := cfg.Path(cfg.DataDir)
	s, err := node.OpenBadger(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []model.Path{"/devices/a", "/devices/b", "/devices/c"} {
		if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpPut, Path: p, Type: "device"}); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	s.Close()

	// A segment of three records as a crash leaves it, the second one
	// damaged: open refuses.
	segs, _ := filepath.Glob(filepath.Join(dataDir, "wal", "*.log"))
	for _, seg := range segs {
		os.Remove(seg)
	}
	rec := func(n int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(8+n))
		return append(b, make([]byte, 4+8+n)...)
	}
	good := func(n int) []byte {
		r := rec(n)
		binary.LittleEndian.PutUint32(r[4:], crc(r[8:]))
		return r
	}
	first := good(0)
	bad := good(3)
	bad[len(bad)-1] = 7 // checksum no longer matches
	data := append(append(append([]byte{}, first...), bad...), good(0)...)
	seg := filepath.Join(dataDir, "wal", "0000000000000100.log")
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = node.OpenBadger(&cfg, nil)
	var d *store.WALDamageError
	if !errors.As(err, &d) || d.Offset != int64(len(first)) {
		t.Fatalf("open with a damaged log: %v", err)
	}

	truncate := func(offset string) (int, string, string) {
		return runCmd(t, nil, "", "store", "truncate-wal", "--config", cfgPath, "--segment", filepath.Base(seg), "--offset", offset)
	}
	if code, _, e := truncate("3"); code != 1 || !strings.Contains(e, "inside the record") {
		t.Fatalf("truncate inside a record: exit %d, %s", code, e)
	}
	lock, err := os.OpenFile(filepath.Join(dataDir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := flock(lock); err != nil {
		t.Fatal(err)
	}
	if code, _, e := truncate("16"); code != 1 || !strings.Contains(e, "stop the node first") {
		t.Fatalf("truncate while the store is open: exit %d, %s", code, e)
	}
	lock.Close()
	code, out, e := truncate("16")
	if code != 0 || !strings.Contains(out, "bytes removed") {
		t.Fatalf("truncate: exit %d, %s %s", code, out, e)
	}
	if b, _ := os.ReadFile(seg); len(b) != len(first) {
		t.Fatalf("segment is %d bytes after the cut, want %d", len(b), len(first))
	}
	s, err = node.OpenBadger(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Context("/devices/c"); err != nil {
		t.Fatal(err)
	}
}

func crc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

func flock(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }
