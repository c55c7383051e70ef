package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain runs a child's role when the bench started this test binary
// as one of its processes.
func TestMain(m *testing.M) {
	if os.Getenv(strings.Split(childEnv, "=")[0]) != "" {
		os.Exit(runMain(os.Args[1:], os.Stdout))
	}
	os.Exit(m.Run())
}

// TestDistribTiny runs the bench small (2 probes, 1 MB), so it keeps
// working: every probe holds the artifact, fetched once per tier, the
// baseline copied the same bytes, and the links carried at least them.
func TestDistribTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	var out bytes.Buffer
	const size = 1 << 20
	res, err := run(options{size: size, probes: 2, rounds: 1, timeout: time.Minute, poll: 10 * time.Millisecond, dir: t.TempDir(), baseline: true, out: &out})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Raw) != 1 || len(res.Strata) != 1 {
		t.Fatalf("rounds: %d raw, %d strata", len(res.Raw), len(res.Strata))
	}
	raw, s := res.Raw[0], res.Strata[0]
	if len(raw.Down) != 2 || raw.Wall <= 0 {
		t.Fatalf("raw copy: %+v", raw)
	}
	if len(s.Probes) != 2 || s.Wall <= 0 || s.EU <= 0 {
		t.Fatalf("staging: %+v", s)
	}
	// eu fetched the artifact once and served it to each probe once; each
	// probe fetched it once.
	if eu := s.Tiers["eu"]; eu.Fetched != size || eu.Served != 2*size {
		t.Errorf("eu: %+v", eu)
	}
	for _, p := range []string{"p1", "p2"} {
		if st := s.Tiers[p]; st.Fetched != size || st.Objects != 1 {
			t.Errorf("%s: %+v", p, st)
		}
		if s.Artifact[p] != size || s.Links[p].Down < size {
			t.Errorf("%s's link: artifact %v bytes, %+v", p, s.Artifact[p], s.Links[p])
		}
	}
	if s.Links["eu"].Down < size {
		t.Errorf("eu's link: %+v", s.Links["eu"])
	}
	for _, want := range []string{"raw QUIC copy", "strata stage", "× the raw copy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report has no %q", want)
		}
	}
}
