// Command disksync measures how long the disk takes to make a small write
// durable (write + fsync), from one or several writers at once: the floor
// under every durable commit, and under propagation latency when several
// tiers share one disk.
//
//	go run ./tests/bench/disksync -dir . -writers 3 -duration 30s
//
// -datasync syncs with fdatasync, as the Badger store's write-ahead log
// does; -prealloc writes the file full of zeros first (and syncs it), so
// that each write overwrites blocks the file already has and the sync
// has no size change to record. It also prints the process's CPU per
// sync (user + system), what a sync costs the node beside its latency.
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

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", ".", "directory on the disk to measure (a temporary file is made there)")
	writers := flag.Int("writers", 1, "concurrent writers, each with its own file")
	size := flag.Int("size", 8<<10, "bytes written before each fsync")
	interval := flag.Duration("interval", time.Millisecond, "pause between one writer's syncs")
	duration := flag.Duration("duration", 30*time.Second, "how long to measure")
	datasync := flag.Bool("datasync", false, "sync with fdatasync instead of fsync")
	prealloc := flag.Int64("prealloc", 0, "write this many bytes of zeros into each file first (and sync), then overwrite them from the start")
	flag.Parse()
	syncFile := func(f *os.File) error { return f.Sync() }
	if *datasync {
		syncFile = func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
	}

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
	var files []*os.File
	for w := range *writers {
		f, err := os.Create(filepath.Join(tmp, fmt.Sprintf("w%d", w)))
		if err != nil {
			log.Fatal(err)
		}
		if *prealloc > 0 {
			zeros := make([]byte, 1<<20)
			for n := int64(0); n < *prealloc; n += int64(len(zeros)) {
				if _, err := f.Write(zeros[:min(int64(len(zeros)), *prealloc-n)]); err != nil {
					log.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				log.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				log.Fatal(err)
			}
		}
		files = append(files, f)
	}
	cpu0 := processCPU()
	end := time.Now().Add(*duration)
	for _, f := range files {
		wg.Go(func() {
			defer f.Close()
			buf := make([]byte, *size)
			var ds []time.Duration
			for time.Now().Before(end) {
				start := time.Now()
				if _, err := f.Write(buf); err != nil {
					log.Fatal(err)
				}
				if err := syncFile(f); err != nil {
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
	cpu := processCPU() - cpu0
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		return all[min(len(all)-1, int(p*float64(len(all))))].Round(10 * time.Microsecond)
	}
	fmt.Printf("%d writers, %d B per sync: %d syncs in %v\n", *writers, *size, len(all), *duration)
	what := "fsync"
	if *datasync {
		what = "fdatasync"
	}
	if *prealloc > 0 {
		what += " over preallocated zeros"
	}
	fmt.Printf("write+%s p50 %v  p90 %v  p99 %v  p99.9 %v  max %v; process CPU %v per sync\n", what, pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1),
		(cpu / time.Duration(len(all))).Round(time.Microsecond))
}

// processCPU is this process's user and system CPU so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
