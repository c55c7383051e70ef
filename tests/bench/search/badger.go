package main

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

// runBadger measures search on the embedded store: the devices are
// written straight to their keys (LoadContexts: a store as an earlier
// version left it, without the search index), the store is reopened,
// which builds the index (timed), and the query mix runs through Search
// (the index) and, for scanQueries of the same queries, ScanSearch (the
// scan every search was before the index), in one run. Both must find the
// same contexts.
func runBadger(dir string, reuse bool, devices, queries, scanQueries, clients, limit, sites int) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if dir == "" {
		tmp, err := os.MkdirTemp("", "strata-search-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	opts := store.BadgerOptions{Dir: dir, Logger: log, CacheMB: 256}
	if reuse {
		s, err := store.OpenBadger(opts)
		if err != nil {
			return err
		}
		defer s.Close()
		fmt.Printf("reusing the store in %s (%s), loaded by an earlier run with the same -devices and -sites; warm-up of %d queries\n", dir, dirSize(dir), queries)
		return queryBadger(ctx, s, queries, queries, scanQueries, clients, limit, sites, devices)
	}
	s, err := store.OpenBadger(opts)
	if err != nil {
		return err
	}
	m, err := model.New(model.Config{Store: s, Logger: log})
	if err != nil {
		s.Close()
		return err
	}
	_, err = m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices", Type: model.FolderType})
	m.Close()
	if err != nil {
		s.Close()
		return err
	}
	t0 := time.Now()
	err = load(ctx, func(cs []*model.Context) error {
		_, err := s.LoadContexts(cs)
		return err
	}, devices, sites)
	if err == nil {
		err = s.Close()
	} else {
		s.Close()
	}
	if err != nil {
		return err
	}
	fmt.Printf("loaded %d devices in %v (%.0f/s), without the search index\n", devices,
		time.Since(t0).Round(time.Millisecond), float64(devices)/time.Since(t0).Seconds())

	t0 = time.Now()
	s, err = store.OpenBadger(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Printf("reopened, building the search index, in %v\n", time.Since(t0).Round(time.Millisecond))
	fmt.Printf("store size: %s\n", dirSize(dir))
	return queryBadger(ctx, s, queries, 200, scanQueries, clients, limit, sites, devices)
}

// queryBadger runs the query mix through the index and its first
// scanQueries through the scan, after unmeasured warm-ups, and prints
// the figures. A store just opened (-reuse) has cold caches: its warm-up
// is as long as the measured mix, where a build at open leaves them warm.
func queryBadger(ctx context.Context, s *store.Badger, queries, warmN, scanQueries, clients, limit, sites, devices int) error {
	rng := rand.New(rand.NewPCG(7, 7))
	mix := queryMix(rng, queries, limit, sites, devices)
	warm := queryMix(rand.New(rand.NewPCG(8, 8)), min(warmN, queries), limit, sites, devices)
	measure(ctx, s, warm, clients) // warm-up, not measured
	idx := measure(ctx, s, mix, clients)
	if idx.err != nil {
		return idx.err
	}
	// The scan, on the first scanQueries of the same mix (each kind in
	// turn), after a few unmeasured ones.
	scanMix := mix[:min(scanQueries, len(mix))]
	scan := searchFunc(s.ScanSearch)
	measure(ctx, scan, warm[:min(len(kinds), len(warm))], clients)
	sc := measure(ctx, scan, scanMix, clients)
	if sc.err != nil {
		return sc.err
	}
	for i := range scanMix {
		if !slices.Equal(idx.found[i], sc.found[i]) {
			return fmt.Errorf("query %d (%s): the index and the scan found different contexts", i, describe(mix[i].q))
		}
	}

	fmt.Printf("%d devices, %d sites; %d queries through the index, %d through the scan, %d clients, first page of %d\n",
		devices, sites, len(mix), len(scanMix), clients, limit)
	fmt.Printf("%-8s %9s %9s %9s %9s %9s %10s\n", "side", "queries/s", "p50", "p95", "p99", "max", "hits/query")
	idx.print("index")
	sc.print("scan")
	fmt.Println("\nper kind: index p50 / p99 | scan p50 / p99, mean hits")
	for _, k := range kinds {
		fmt.Printf("  %-24s %s | %s\n", k, idx.kindLine(k), sc.kindLine(k))
	}
	if p99 := idx.pct(0.99); p99 >= 50*time.Millisecond {
		fmt.Printf("\ntarget missed: index p99 %v >= 50ms\n", p99)
	} else {
		fmt.Printf("\ntarget met: index p99 %v < 50ms\n", p99)
	}
	return nil
}

// kindLine is p50 / p99 and mean hits of one kind.
func (r *result) kindLine(kind string) string {
	var ls []time.Duration
	for i, q := range r.mix {
		if q.kind == kind {
			ls = append(ls, r.lat[i])
		}
	}
	return fmt.Sprintf("%9s / %9s %6.1f", ms(pctOf(ls, 0.5)), ms(pctOf(ls, 0.99)), r.hits(kind))
}

// dirSize is the size of the files in dir and below.
func dirSize(dir string) string {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}
