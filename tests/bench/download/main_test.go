package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain runs a child's role when the bench started this test binary as
// its node or file server (the children are this executable).
func TestMain(m *testing.M) {
	k, v, _ := strings.Cut(childEnv, "=")
	if os.Getenv(k) == v {
		os.Exit(mainArgs(os.Args[1:], os.Stdout))
	}
	os.Exit(m.Run())
}

// TestTinyRun is the whole bench, small: a node and a file server in
// processes of their own, 5 devices enrolled, a 1 MB artifact published
// and uploaded, every device downloading it once from each side, every
// download verified; then again with 2 downloads at a time.
func TestTinyRun(t *testing.T) {
	for _, c := range []struct{ concurrency, rounds int }{{0, 1}, {2, 1}} {
		out, err := run(options{devices: 5, size: 1 << 20, concurrency: c.concurrency, rounds: c.rounds, timeout: time.Minute, rcvbuf: 64 << 10}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		for _, side := range [][]roundResult{out.Strata, out.FileServer} {
			if len(side) != c.rounds {
				t.Fatalf("%d rounds, want %d", len(side), c.rounds)
			}
			for _, r := range side {
				if r.OK != 5 || r.Failed != 0 || r.Bytes != 5<<20 || len(r.Times) != 5 || r.throughput() <= 0 || r.Server.CPU <= 0 {
					t.Fatalf("%s: %+v", r.Side, r)
				}
			}
		}
		if len(out.ratios()) != c.rounds || out.Protocol[0] != out.Protocol[1] || !strings.HasPrefix(out.Protocol[0], "HTTP/1.1") {
			t.Fatalf("ratios %v, protocols %q", out.ratios(), out.Protocol)
		}
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"50MB": 50e6, "1MiB": 1 << 20, "4096": 4096, "2kB": 2000, "0": -1, "x": -1, "-1MB": -1, "MB": -1} {
		got, err := parseSize(s)
		if (err == nil) != (want > 0) || err == nil && got != want {
			t.Errorf("%q: %d, %v", s, got, err)
		}
	}
}
