package agent

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/atomicfile"
)

// softwareFile records the releases the agent installed (software.json).
const softwareFile = "software.json"

// installed is one release the agent installed, as software.json keeps
// it. Package and File are set for deb and rpm: the package's name in
// the package manager, and the kept package file (relative to the state
// directory), which a rollback reinstalls. Dir is the version directory
// of a tar or binary install. Previous is the release it replaced, kept
// for rollback.
type installed struct {
	Name      string     `json:"name"`
	Version   string     `json:"version"`
	Type      string     `json:"type"`
	SHA256    string     `json:"sha256"`
	Installed time.Time  `json:"installed"`
	Package   string     `json:"package,omitempty"`
	File      string     `json:"file,omitempty"`
	Dir       string     `json:"dir,omitempty"`
	Previous  *installed `json:"previous,omitempty"`
}

// softwareStore is software.json in memory. Every change rewrites the
// file whole (temporary file, fsync, rename, folder fsync), so a crash
// leaves the old record or the new one.
type softwareStore struct {
	path string

	mu       sync.Mutex
	releases map[string]installed
}

func openSoftware(dir string) (*softwareStore, error) {
	s := &softwareStore{path: filepath.Join(dir, softwareFile), releases: map[string]installed{}}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var file struct {
		Releases map[string]installed `json:"releases"`
	}
	if err := strictUnmarshal(data, &file); err != nil {
		return nil, errors.New(softwareFile + ": " + err.Error())
	}
	for name, r := range file.Releases {
		s.releases[name] = r
	}
	return s, nil
}

// get returns the installed release name.
func (s *softwareStore) get(name string) (installed, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.releases[name]
	return r, ok
}

// put records r durably.
func (s *softwareStore) put(r installed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]installed, len(s.releases)+1)
	for k, v := range s.releases {
		next[k] = v
	}
	next[r.Name] = r
	data, err := json.MarshalIndent(struct {
		Releases map[string]installed `json:"releases"`
	}{next}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.path, append(data, '\n'), 0o600); err != nil {
		return err
	}
	s.releases = next
	return nil
}

// list returns the installed releases sorted by name, as the inventory
// shows them.
func (s *softwareStore) list() []apitypes.InstalledSoftware {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]apitypes.InstalledSoftware, 0, len(s.releases))
	for _, r := range s.releases {
		out = append(out, apitypes.InstalledSoftware{Name: r.Name, Version: r.Version, Type: r.Type, Installed: r.Installed})
	}
	slices.SortFunc(out, func(a, b apitypes.InstalledSoftware) int { return strings.Compare(a.Name, b.Name) })
	return out
}
