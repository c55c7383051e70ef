package helm

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/replicas from the chart")

// goldenDir holds each replica's strata.yaml as the chart renders it for
// values-hq.yaml (release hq-... in namespace strata): "bootstrap" while
// the cluster is made, "joined" with cluster.bootstrap false. The
// end-to-end test TestChartReplicas (tests/e2e) runs real strata
// processes on them, laid out as the pods' volumes are.
const goldenDir = "testdata/replicas"

// TestReplicaConfigsGolden keeps testdata/replicas what the chart renders:
// go test -run Golden -update rewrites them after a change to the chart.
func TestReplicaConfigsGolden(t *testing.T) {
	c := loadChart(t)
	for variant, set := range map[string]map[string]any{
		"bootstrap": nil,
		"joined":    {"cluster": map[string]any{"bootstrap": false}},
	} {
		out, _, err := renderChart(t, c, "strata-hq", []string{"values-hq.yaml"}, set)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeAll(t, out)
		cm := r.cms[r.sts.Name]
		if cm == nil || len(cm.Data) != 3 {
			t.Fatalf("ConfigMap %s: %v", r.sts.Name, cm)
		}
		dir := filepath.Join(goldenDir, variant)
		for name, body := range cm.Data {
			file := filepath.Join(dir, name)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(file)
			if err != nil || string(got) != body {
				t.Errorf("%s differs from what the chart renders (go test -run Golden -update): %v\n%s", file, err, body)
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != len(cm.Data) {
			t.Errorf("%s holds %d files, the chart renders %d", dir, len(ents), len(cm.Data))
		}
	}
}
