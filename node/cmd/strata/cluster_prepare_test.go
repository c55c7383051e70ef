package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/config"
)

func TestClusterInitAndJoin(t *testing.T) {
	d1, d2 := t.TempDir(), filepath.Join(t.TempDir(), "r2")
	if code, _, e := runCmd(t, nil, "", "init", "--dir", d1, "--name", "plant7", "--role", "probe"); code != 0 {
		t.Fatal(e)
	}
	// A replica certificate left over (e.g. from a copied folder) is dropped.
	os.WriteFile(filepath.Join(d1, "tls/replica.crt"), []byte("old"), 0o644)
	code, out, e := runCmd(t, nil, "", "cluster", "init", "--dir", d1, "--id", "r1", "--advertise", "127.0.0.1:7401")
	if code != 0 || !strings.Contains(out, "first replica of a new cluster") || !strings.Contains(out, "--join 127.0.0.1:7401") {
		t.Fatalf("cluster init: exit %d, %q, %q", code, out, e)
	}
	c1, err := config.Load(filepath.Join(d1, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if cl := c1.Cluster; cl.ID != "r1" || !cl.Bootstrap || cl.Advertise != "127.0.0.1:7401" || cl.Addr != "0.0.0.0:7400" || c1.Name != "plant7" || c1.Role != "probe" {
		t.Fatalf("r1's config: %+v", c1)
	}
	if _, err := os.Stat(filepath.Join(d1, "tls/replica.crt")); !os.IsNotExist(err) {
		t.Fatal("a replica certificate from before was kept")
	}

	code, out, e = runCmd(t, nil, "", "cluster", "join", "--dir", d2, "--from", d1, "--id", "r2",
		"--addr", "127.0.0.1:7402", "--join", "127.0.0.1:7401")
	if code != 0 || !strings.Contains(out, "joining through [127.0.0.1:7401]") {
		t.Fatalf("cluster join: exit %d, %q, %q", code, out, e)
	}
	c2, err := config.Load(filepath.Join(d2, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if cl := c2.Cluster; cl.ID != "r2" || cl.Bootstrap || !slices.Equal(cl.Join, []string{"127.0.0.1:7401"}) || c2.Name != "plant7" {
		t.Fatalf("r2's config: %+v", c2)
	}
	for _, f := range identityFiles {
		a, _ := os.ReadFile(filepath.Join(d1, f))
		b, err := os.ReadFile(filepath.Join(d2, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s not copied: %v", f, err)
		}
	}
	if st, err := os.Stat(filepath.Join(d2, caKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key copied with mode %v, %v", st.Mode(), err)
	}

	// init can make the first replica in one step.
	d3 := t.TempDir()
	if code, out, e := runCmd(t, nil, "", "init", "--dir", d3, "--name", "hq", "--cluster-id", "a", "--cluster-advertise", "10.0.0.1:7400"); code != 0 || !strings.Contains(out, "first replica") {
		t.Fatalf("init --cluster-id: exit %d, %q, %q", code, out, e)
	}
	if c3, err := config.Load(filepath.Join(d3, configFile)); err != nil || c3.Cluster.ID != "a" || !c3.Cluster.Bootstrap {
		t.Fatalf("init --cluster-id: %+v, %v", c3.Cluster, err)
	}
}

func TestClusterPrepareRefusals(t *testing.T) {
	d := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", d, "--name", "plant7"); code != 0 {
		t.Fatal(e)
	}
	os.MkdirAll(filepath.Join(d, "data"), 0o750)
	os.WriteFile(filepath.Join(d, "data", "MANIFEST"), []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "init", "--dir", d, "--id", "r1"}, "holds a store"},
		{[]string{"cluster", "init", "--dir", t.TempDir(), "--id", "r1"}, "run strata init first"},
		{[]string{"cluster", "init", "--dir", d, "--id", "bad id"}, "cluster.id"},
		{[]string{"cluster", "init", "--dir", d}, `"id" not set`},
		{[]string{"cluster", "join", "--dir", d, "--id", "r2"}, "--join"},
		{[]string{"cluster", "join", "--dir", d, "--id", "r2", "--join", "x:1", "--from", d}, "exists"},
		{[]string{"cluster", "join", "--dir", t.TempDir(), "--id", "r2", "--join", "x:1", "--from", t.TempDir()}, "--from"},
	} {
		if code, _, e := runCmd(t, nil, "", tc.args...); code == 0 || !strings.Contains(e, tc.want) {
			t.Errorf("%q: exit %d, %q, want %q", tc.args, code, e, tc.want)
		}
	}
}
