// Package layout holds the project's import rules as a test: only node
// knows the world.
package layout

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/config"
)

const module = "github.com/strata-dm/strata"

type pkg struct {
	ImportPath string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// rules: packages under the prefix must not depend (even indirectly) on
// any of the forbidden prefixes.
var rules = []struct {
	pkg       string
	forbidden []string
}{
	{"model", []string{module + "/", "github.com/prometheus/prometheus"}},
	{"apitypes", []string{module + "/"}},
	{"federation", []string{module + "/node", "github.com/prometheus/prometheus"}},
	// History knows the model and its chunk encoding, not how it is
	// served or stored.
	{"node/history", []string{module + "/node/api", module + "/node/store", module + "/federation", module + "/probes"}},
	{"probes/agent", []string{module + "/node", "github.com/dgraph-io/badger", "github.com/hashicorp/raft"}},
	// Device downloads are shared by the agent and the simulator: a leaf
	// that knows only the wire types.
	{"probes/download", []string{module + "/node", module + "/probes/", module + "/model", module + "/federation"}},
	{"node/client", []string{module + "/node/store", module + "/node/api", module + "/model", "github.com/dgraph-io/badger"}},
	{"node/auth", []string{module + "/node/api", module + "/node/store"}},
	{"node/api", []string{module + "/node/store"}},
	// The object store holds bytes and knows nothing else; releases
	// know the model and the object store, not how they are served.
	{"node/objects", []string{module + "/"}},
	{"node/releases", []string{module + "/node/api", module + "/node/store", module + "/federation"}},
	// The console's files are served by a package that knows nothing of
	// the node: the console talks to the node through the public API only.
	{"node/console", []string{module + "/"}},
	// The call rule is one function that the API and federation both call;
	// it knows neither of them.
	{"node/calls", []string{module + "/node/api", module + "/node/store", module + "/federation", module + "/probes"}},
}

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		if strings.HasSuffix(rel, "_test") || strings.Contains(rel, ".test") {
			continue
		}
		for _, r := range rules {
			if rel != r.pkg && !strings.HasPrefix(rel, r.pkg+"/") {
				continue
			}
			for _, d := range p.Deps {
				for _, f := range r.forbidden {
					if strings.HasPrefix(d, f) && d != p.ImportPath {
						t.Errorf("%s depends on %s (forbidden: %s)", p.ImportPath, d, f)
					}
				}
			}
		}
	}
}

// stdlibOnly lists the packages that may import nothing outside the
// standard library: the wire types are linked by the agent and by anyone
// who talks to a node.
var stdlibOnly = []string{"apitypes"}

func TestStdlibOnly(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		for _, want := range stdlibOnly {
			if rel != want && !strings.HasPrefix(rel, want+"/") {
				continue
			}
			for _, d := range p.Deps {
				// Standard library paths have no dot in their first element.
				if first, _, _ := strings.Cut(d, "/"); strings.Contains(first, ".") {
					t.Errorf("%s depends on %s: it may import the standard library only", p.ImportPath, d)
				}
			}
		}
	}
}

// The example configurations in deploy/ must load and validate.
func TestDeployConfigs(t *testing.T) {
	files, err := filepath.Glob("../../deploy/config/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestNoKubernetesInMainModule: Helm and the Kubernetes API modules are
// for the chart's tests only, in their own module (deploy/helm/go.mod):
// no package the main module builds (tests included) comes from them,
// its go.mod does not require them and its go.sum holds no hash of
// theirs, so they are never downloaded for it. The module graph
// (`go list -m all`) may still name them: it lists what dependencies'
// go.mod files require, and Prometheus's (whose tsdb/chunkenc history
// uses) requires client-go for service discovery no package here
// imports.
func TestNoKubernetesInMainModule(t *testing.T) {
	k8s := func(s string) bool {
		return strings.HasPrefix(s, "helm.sh/") || strings.HasPrefix(s, "k8s.io/") || strings.HasPrefix(s, "sigs.k8s.io/")
	}
	out, err := exec.Command("go", "list", "-deps", "-test", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if k8s(p) {
			t.Errorf("the main module builds %s", p)
		}
	}
	for _, f := range []string{"../../go.mod", "../../go.sum"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if fs := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require ")); len(fs) > 0 && k8s(fs[0]) {
				t.Errorf("%s names %s", f, line)
			}
		}
	}
}
