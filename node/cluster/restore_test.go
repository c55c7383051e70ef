package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// An install interrupted at any step leaves the old store or the new one,
// whole: at open the live directory is the one store.current names (or
// "store"), and the others are removed.
func TestLiveStoreDirAfterInterruptedInstall(t *testing.T) {
	for _, c := range []struct {
		name    string
		current string   // store.current's content, "" for none
		dirs    []string // store directories present
		want    string
	}{
		{"fresh", "", nil, "store"},
		{"crash while restoring into the new directory", "", []string{"store", "store-17"}, "store"},
		{"crash after switching, before removing the old", "store-17\n", []string{"store", "store-17"}, "store-17"},
		{"second install interrupted", "store-17\n", []string{"store-17", "store-42"}, "store-17"},
	} {
		dir := t.TempDir()
		for _, d := range append(c.dirs, "raft") {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if c.current != "" {
			if err := os.WriteFile(filepath.Join(dir, currentFile), []byte(c.current), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		got, err := liveStoreDir(dir)
		if err != nil || got != c.want {
			t.Errorf("%s: live %q, %v; want %q", c.name, got, err, c.want)
			continue
		}
		ents, _ := os.ReadDir(dir)
		var left []string
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, e.Name())
			}
		}
		want := []string{"raft"}
		if slices.Contains(c.dirs, c.want) {
			want = append(want, c.want)
		}
		slices.Sort(want)
		if !slices.Equal(left, want) {
			t.Errorf("%s: directories left %v, want %v", c.name, left, want)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, currentFile), []byte("../etc\n"), 0o600)
	if _, err := liveStoreDir(dir); err == nil {
		t.Error("store.current naming a path outside the data directory was accepted")
	}
}
