package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// httpClient replays the browser's search requests from Go: keep-alive
// HTTPS with the browser session's token.
type httpClient struct {
	hc    *http.Client
	token string
}

func newHTTPClient(caPEM []byte, token string) (*httpClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("bad CA certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 1}
	return &httpClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, token: token}, nil
}

func (c *httpClient) close() { c.hc.CloseIdleConnections() }

// search GETs url and returns its duration (request written to body
// read) and the first context's path.
func (c *httpClient) search(url string) (time.Duration, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	t0 := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	var page struct {
		Contexts []struct{ Path string } `json:"contexts"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return 0, "", err
	}
	first := ""
	if len(page.Contexts) > 0 {
		first = page.Contexts[0].Path
	}
	return d, first, nil
}

// results holds, per kind, the browser's render and server times and
// the Go client's times of the same requests, in ms.
type results struct {
	kinds               []string
	render, server, goc map[string][]float64
	rows                map[string][]int
}

const pageLoadKind = "none (page load)"

// rounds runs warmup unmeasured rounds, then queries measured ones: a
// page load of /devices, then each filter kind submitted in turn, each
// followed by the Go client's replay of the same request.
func rounds(b *browser, hc *httpClient, base string, devices, sites, warmup, queries int) (*results, error) {
	rs := &results{kinds: append([]string{pageLoadKind}, kinds...),
		render: map[string][]float64{}, server: map[string][]float64{}, goc: map[string][]float64{}, rows: map[string][]int{}}
	r := rand.New(rand.NewPCG(18, 18))
	for round := range warmup + queries {
		measured := round >= warmup
		one := func(kind, line string, s sample, err error) error {
			if err != nil {
				return fmt.Errorf("%s %q: %w", kind, line, err)
			}
			if s.URL == "" {
				return fmt.Errorf("%s %q: the browser's Resource Timing has no /api/v1/search entry", kind, line)
			}
			d, first, err := hc.search(s.URL)
			if err != nil {
				return err
			}
			if first != s.First {
				return fmt.Errorf("%s %q: the browser shows %s first, the API answers %s", kind, line, s.First, first)
			}
			if measured {
				rs.render[kind] = append(rs.render[kind], s.Render)
				rs.server[kind] = append(rs.server[kind], s.Server)
				rs.goc[kind] = append(rs.goc[kind], float64(d)/float64(time.Millisecond))
				rs.rows[kind] = append(rs.rows[kind], s.Rows)
			}
			return nil
		}
		s, err := b.pageLoad(base)
		if err := one(pageLoadKind, "", s, err); err != nil {
			return nil, err
		}
		for _, k := range kinds {
			f := filterFor(k, r, sites, devices)
			s, err := b.submit(f.line)
			if err := one(k, f.line, s, err); err != nil {
				return nil, err
			}
		}
	}
	return rs, nil
}

// pct is the p-quantile of xs (sorted in place).
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[min(len(xs)-1, int(p*float64(len(xs))))]
}

func triple(xs []float64) string {
	return fmt.Sprintf("%7.1f %7.1f %7.1f", pct(xs, 0.5), pct(xs, 0.95), pct(xs, 0.99))
}

func mean(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	n := 0
	for _, x := range xs {
		n += x
	}
	return float64(n) / float64(len(xs))
}

func (rs *results) print(devices, queries int, load string) {
	fmt.Printf("\n%d devices; %d measured rounds (one query of each kind a round); first page of 100; times in ms, p50 p95 p99\n", devices, queries)
	fmt.Printf("%-18s %5s | %-23s | %-23s | %-23s\n", "kind", "rows", "render (browser)", "server (browser RT)", "baseline (Go client)")
	var all [3][]float64
	var filtered []float64
	for _, k := range rs.kinds {
		fmt.Printf("%-18s %5.0f | %s | %s | %s\n", k, mean(rs.rows[k]), triple(rs.render[k]), triple(rs.server[k]), triple(rs.goc[k]))
		all[0] = append(all[0], rs.render[k]...)
		all[1] = append(all[1], rs.server[k]...)
		all[2] = append(all[2], rs.goc[k]...)
		if k != pageLoadKind {
			filtered = append(filtered, rs.render[k]...)
		}
	}
	fmt.Printf("%-18s %5s | %s | %s | %s\n", "all", "", triple(all[0]), triple(all[1]), triple(all[2]))
	fmt.Printf("load average at end: %s\n", load)
	p95 := pct(all[0], 0.95)
	verdict := "met"
	if p95 >= 500 {
		verdict = "missed"
	}
	fmt.Printf("target %s: render p95 %.1f ms (all kinds, page loads included; submitted filters alone %.1f ms) vs 500 ms\n",
		verdict, p95, pct(filtered, 0.95))
}
