// Command cmdrtt measures command round trips through a node: an operator
// calls a function on a random device over the API and waits for its
// result (API → job → MQTT → device → result → job → API answer). The
// devices are strata-sim devices answering "echo"; their credentials file
// (strata-sim --save-credentials) names them.
//
//	cmdrtt --api https://HOST:PORT --ca ca.crt --token ADMIN --credentials creds.jsonl --calls 2000 --concurrency 16
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/node/client"
)

func main() {
	api := flag.String("api", "", "node API base URL")
	caFile := flag.String("ca", "", "CA PEM of the API")
	token := flag.String("token", "", "operator bearer token (or @FILE)")
	creds := flag.String("credentials", "", "strata-sim credentials (JSON lines)")
	calls := flag.Int("calls", 2000, "function calls")
	conc := flag.Int("concurrency", 16, "calls in flight")
	flag.Parse()
	if err := run(*api, *caFile, *token, *creds, *calls, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "cmdrtt:", err)
		os.Exit(1)
	}
}

func run(api, caFile, token, creds string, calls, conc int) error {
	if strings.HasPrefix(token, "@") {
		b, err := os.ReadFile(token[1:])
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	c, err := client.New(api, token, ca)
	if err != nil {
		return err
	}
	paths, err := devicePaths(creds)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		lat     []time.Duration
		failed  atomic.Int64
		next    atomic.Int64
		wg      sync.WaitGroup
		started = time.Now()
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(calls) {
				p := paths[rand.IntN(len(paths))]
				t0 := time.Now()
				job, status, err := c.CallFunction(context.Background(), p, "echo", json.RawMessage(`{"n":1}`), 30*time.Second)
				d := time.Since(t0)
				if err != nil || status != 200 || job.State != "succeeded" {
					if failed.Add(1) <= 3 {
						fmt.Fprintf(os.Stderr, "call %s: status %d state %s: %v\n", p, status, job.State, err)
					}
					continue
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	slices.Sort(lat)
	q := func(f float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(f*float64(len(lat))))]
	}
	fmt.Printf("devices %d, calls %d ok %d failed, concurrency %d, %.0f calls/s, round trip p50 %v p90 %v p99 %v max %v\n",
		len(paths), len(lat), failed.Load(), conc, float64(len(lat))/elapsed.Seconds(),
		q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), q(1).Round(10*time.Microsecond))
	return nil
}

func devicePaths(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var paths []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct {
			Path string `json:"path"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Path != "" {
			paths = append(paths, e.Path)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no device paths", file)
	}
	return paths, sc.Err()
}
