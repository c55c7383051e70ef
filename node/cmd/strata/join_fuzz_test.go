package main

import (
	"testing"

	"github.com/strata-dm/strata/node/config"
)

// FuzzEditUpstreams edits arbitrary files: no panic, and an edit of a file
// that parsed as a config parses again with the upstream added or gone.
func FuzzEditUpstreams(f *testing.F) {
	f.Add([]byte(joinBase), "eu.example:7443")
	f.Add([]byte(""), "a.example:1")
	f.Add([]byte("federation:\n  upstreams: []\n"), "a:1")
	f.Add([]byte("federation: {upstreams: [{address: 'a:1'}]}\n"), "a:1")
	f.Add([]byte("&a [*a]"), "a:1")
	f.Fuzz(func(t *testing.T, data []byte, addr string) {
		if config.ValidUpstreamAddress(addr) != nil {
			return // join checks the address first
		}
		// Files whose YAML does not survive a round trip unchanged in
		// meaning (a null key) are out of scope for the property.
		_, before := config.Parse(data)
		if before == nil {
			doc, _, err := parseDoc(data)
			var again []byte
			if err == nil {
				again, err = encodeDoc(doc)
			}
			if err == nil {
				_, err = config.Parse(again)
			}
			before = err
		}
		out, _, err := setUpstream(data, config.Upstream{Address: addr, Token: "t"})
		if err != nil {
			return
		}
		if before == nil {
			cfg, err := config.Parse(out)
			if err != nil {
				t.Fatalf("set: %v\n%s", err, out)
			}
			if findAddr(cfg, addr) < 0 {
				t.Fatalf("set: %s missing\n%s", addr, out)
			}
		}
		out, found, err := removeUpstream(out, addr)
		if err != nil || !found {
			t.Fatalf("remove after set: %v %v", found, err)
		}
		if before == nil {
			if _, err := config.Parse(out); err != nil {
				t.Fatalf("remove: %v\n%s", err, out)
			}
		}
	})
}

func findAddr(cfg config.Config, addr string) int {
	for i, u := range cfg.Federation.Upstreams {
		if u.Address == addr {
			return i
		}
	}
	return -1
}
