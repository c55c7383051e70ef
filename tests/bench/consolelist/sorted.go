package main

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"
)

// sortedRounds measures, from the Go client only, what a sorted and a
// counted search cost beside the same search in path order (the
// baseline): the site filter (1 % of the devices) and no filter (every
// device), n of each, in turn.
func sortedRounds(hc *httpClient, base string, devices, sites, n int) error {
	type variant struct{ name, extra string }
	variants := []variant{{"path order", ""}, {"sort=-var.temp", "&sort=-var.temp"}, {"count=true", "&count=true"}}
	r := rand.New(rand.NewPCG(3, 3))
	fmt.Printf("\nsorted and counted searches (Go client, first page of 100, %d of each), times in ms\n", n)
	fmt.Printf("%-10s %-16s %9s %9s %9s\n", "filter", "variant", "p50", "p95", "max")
	for _, kind := range []string{"site", "none"} {
		times := make([][]float64, len(variants))
		for range n {
			q := url.Values{"path": {"/"}, "type": {"device"}, "limit": {"100"}}
			if kind == "site" {
				q.Set("label.site", fmt.Sprintf("plant-%d", r.IntN(sites)))
			}
			for i, v := range variants {
				d, _, err := hc.search(base + "/api/v1/search?" + q.Encode() + v.extra)
				if err != nil {
					return err
				}
				times[i] = append(times[i], float64(d)/float64(time.Millisecond))
			}
		}
		for i, v := range variants {
			fmt.Printf("%-10s %-16s %9.1f %9.1f %9.1f\n", kind, v.name, pct(times[i], 0.5), pct(times[i], 0.95), pct(times[i], 1))
		}
	}
	return nil
}
