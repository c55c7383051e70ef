// Package testbin builds the binaries the packaging tests put into
// packages and images, the way make packages and make images do: static
// (CGO_ENABLED=0), for linux on this machine's architecture.
package testbin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Binaries are the main packages of the repository that are packaged, by
// binary name.
var Binaries = map[string]string{
	"strata":       "./node/cmd/strata",
	"strata-agent": "./probes/agent/cmd/strata-agent",
}

// RepoRoot is the folder of the repository's main module, found from the
// working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/strata-dm/strata\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbin: no github.com/strata-dm/strata go.mod above the working directory")
		}
		dir = parent
	}
}

// Build builds every binary of Binaries into dir with version stamped in.
func Build(root, dir, version string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("testbin: %w", err)
	}
	for name, pkg := range Binaries {
		cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
			"-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("testbin: go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
