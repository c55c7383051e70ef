// Command diskgrowth measures the disk a node's store takes per million
// changes, for sizing (docs/deploy.md): a node on Badger (in this
// process, as strata serve runs it) receives -changes variable updates
// of -devices device contexts through its model, the way device
// telemetry arrives (each update two numeric variables, -workers
// concurrent writers), and the size of data_dir is read before, right
// after, and after the store closed (its write-ahead log folded in).
//
//	go run ./tests/bench/diskgrowth -devices 1000 -changes 1000000
//
// The change log keeps retention.log_entries entries (default 1,000,000),
// so with the defaults every change is still in the log at the end: the
// figure is the size of a node that holds a full log.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

func main() {
	devices := flag.Int("devices", 1000, "device contexts")
	changes := flag.Int("changes", 1_000_000, "variable updates in all")
	workers := flag.Int("workers", 32, "concurrent writers")
	keep := flag.Bool("keep", false, "keep the data directory")
	flag.Parse()
	if err := run(*devices, *changes, *workers, *keep); err != nil {
		log.Fatal(err)
	}
}

// dirSize is the disk space the files below dir take (allocated blocks,
// as du counts them: Badger preallocates files it has not filled).
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func run(devices, changes, workers int, keep bool) error {
	dir, err := os.MkdirTemp("", "strata-diskgrowth")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	if _, err := node.WriteIdentity(dir, "sizing"); err != nil {
		return err
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = "sizing", dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	n, err := benchproc.StartNode(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	m := n.Model()
	now := time.Now()
	for i := range devices {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: devicePath(i), Type: "device", Tenant: "acme",
			Labels: map[string]string{"site": fmt.Sprintf("plant-%d", i%16)}}); err != nil {
			return err
		}
	}
	before, err := dirSize(cfg.DataDir)
	if err != nil {
		return err
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(changes) {
					return
				}
				t := now.Add(time.Duration(i) * time.Millisecond)
				temp, _ := model.NewVariable(json.RawMessage(fmt.Sprintf("%.2f", 20+float64(i%500)/100)), t)
				load, _ := model.NewVariable(json.RawMessage(fmt.Sprintf("%.3f", float64(i%1000)/1000)), t)
				mu := model.Mutation{Op: model.OpPut, Path: devicePath(int(i) % devices),
					Variables: map[string]model.Variable{"temperature": temp, "load1": load}}
				if _, err := m.Apply(ctx, mu); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	took := time.Since(start)
	after, err := dirSize(cfg.DataDir)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		return err
	}
	closed, err := dirSize(cfg.DataDir)
	if err != nil {
		return err
	}
	per := func(b int64) string {
		return fmt.Sprintf("%.0f MB per million changes (%.0f bytes per change)", float64(b)/float64(changes)*1e6/1e6, float64(b)/float64(changes))
	}
	fmt.Printf("devices %d, changes %d (2 numeric variables each), %d writers, %v (%.0f changes/s)\n", devices, changes, workers, took.Round(time.Millisecond), float64(changes)/took.Seconds())
	fmt.Printf("data_dir before the changes: %.1f MB\n", float64(before)/1e6)
	fmt.Printf("data_dir after the changes:  %.1f MB: %s\n", float64(after)/1e6, per(after-before))
	fmt.Printf("data_dir after the node stopped: %.1f MB: %s\n", float64(closed)/1e6, per(closed-before))
	fmt.Printf("load average: %s\n", benchproc.LoadAvg())
	return nil
}

func devicePath(i int) model.Path { return model.Path(fmt.Sprintf("/devices/d-%05d", i)) }
