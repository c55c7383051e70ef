package agent

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentLinksNothingOfTheNode holds the import rule of strata-agent: it
// must stay small, so it links no store, no Raft, no PostgreSQL driver, no
// MQTT broker and nothing of the node.
func TestAgentLinksNothingOfTheNode(t *testing.T) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Skipf("go tool not available: %v", err)
	}
	cmd := exec.Command("go", "list", "-deps", "./probes/agent/cmd/strata-agent")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	// Prefixes, so that major versions (badger/v4, pgx/v5) match too.
	forbidden := []string{
		"github.com/dgraph-io/badger",
		"github.com/hashicorp/raft",
		"github.com/jackc/pgx",
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("strata-agent links %s (forbidden: %s)", pkg, f)
			}
		}
		if pkg == "github.com/strata-dm/strata/node" || strings.HasPrefix(pkg, "github.com/strata-dm/strata/node/") {
			t.Errorf("strata-agent links the node: %s", pkg)
		}
		// The broker itself is forbidden; its packets subpackage would do no harm.
		if pkg == "github.com/mochi-mqtt/server/v2" || strings.HasPrefix(pkg, "github.com/mochi-mqtt/server/v2/") &&
			!strings.HasPrefix(pkg, "github.com/mochi-mqtt/server/v2/packets") {
			t.Errorf("strata-agent links the MQTT broker: %s", pkg)
		}
	}
}
