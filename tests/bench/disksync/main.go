// Command disksync measures how long the disk takes to make a small write
// durable (write + fsync), from one or several writers at once: the floor
// under every durable commit, and under propagation latency when several
// tiers share one disk.
//
//	go run ./tests/bench/disksync -dir . -writers 3 -duration 30s
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

func main() {
	dir := flag.String("dir", ".", "directory on the disk to measure (a temporary file is made there)")
	writers := flag.Int("writers", 1, "concurrent writers, each with its own file")
	size := flag.Int("size", 8<<10, "bytes written before each fsync")
	interval := flag.Duration("interval", time.Millisecond, "pause between one writer's syncs")
	duration := flag.Duration("duration", 30*time.Second, "how long to measure")
	flag.Parse()

	tmp, err := os.MkdirTemp(*dir, ".disksync-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	var (
		mu  sync.Mutex
		all []time.Duration
		wg  sync.WaitGroup
	)
	end := time.Now().Add(*duration)
	for w := range *writers {
		f, err := os.Create(filepath.Join(tmp, fmt.Sprintf("w%d", w)))
		if err != nil {
			log.Fatal(err)
		}
		wg.Go(func() {
			defer f.Close()
			buf := make([]byte, *size)
			var ds []time.Duration
			for time.Now().Before(end) {
				start := time.Now()
				if _, err := f.Write(buf); err != nil {
					log.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					log.Fatal(err)
				}
				ds = append(ds, time.Since(start))
				time.Sleep(*interval)
			}
			mu.Lock()
			all = append(all, ds...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		return all[min(len(all)-1, int(p*float64(len(all))))].Round(10 * time.Microsecond)
	}
	fmt.Printf("%d writers, %d B per sync: %d syncs in %v\n", *writers, *size, len(all), *duration)
	fmt.Printf("write+fsync p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1))
}
