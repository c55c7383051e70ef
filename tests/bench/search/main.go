// Command search measures inventory search (the query behind GET
// /api/v1/search) on 1,000,000 device contexts: on PostgreSQL
// (store.Postgres.Search) served by a streaming read replica, beside the
// same queries on the primary, in one run; with -store badger, the
// embedded store's search index beside its scan, in one run (badger.go).
//
//	go run ./tests/bench/search -devices 1000000 -queries 2000 -clients 4
//	go run ./tests/bench/search -store badger -devices 1000000 -queries 2000 -clients 2
//
// It starts a throwaway PostgreSQL primary and a streaming replica of it
// (pgtest: initdb, pg_basebackup -R, loopback ports; as the postgres user
// when run as root), creates the schema through the store, then loads the
// devices with COPY in the rows the store's Commit writes (CopyContexts:
// the same columns and encodings, but no change-log entries) through the
// search index's pending list, runs VACUUM ANALYZE, waits until the
// replica has replayed everything and reads every row on it once (hint
// bits, see readOnce), and runs the query mix twice: through a store
// reading from the replica (asserting from its read counter that the
// replica served every query), then through a store on the primary alone.
// Both runs must find the same contexts.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

func main() {
	devices := flag.Int("devices", 1_000_000, "device contexts to load")
	queries := flag.Int("queries", 2000, "measured queries per side")
	clients := flag.Int("clients", 4, "concurrent searches")
	limit := flag.Int("limit", 100, "page size of each search")
	sites := flag.Int("sites", 100, "sites (label site=plant-N)")
	explain := flag.Bool("explain", true, "print the plan of one query of each kind, from the replica")
	backend := flag.String("store", "postgres", "postgres (replica beside primary) or badger (index beside scan)")
	scanQueries := flag.Int("scan-queries", 70, "badger: measured queries through the scan")
	dir := flag.String("dir", "", "badger: the store's directory (default: a temporary one, removed at exit)")
	reuse := flag.Bool("reuse", false, "badger: query the store in -dir as an earlier run left it, without loading")
	flag.Parse()
	var err error
	switch *backend {
	case "postgres":
		err = run(*devices, *queries, *clients, *limit, *sites, *explain)
	case "badger":
		err = runBadger(*dir, *reuse && *dir != "", *devices, *queries, *scanQueries, *clients, *limit, *sites)
	default:
		err = fmt.Errorf("-store %q: postgres or badger", *backend)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "search:", err)
		os.Exit(1)
	}
}

func run(devices, queries, clients, limit, sites int, explain bool) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if pgtest.BinDir() == "" {
		return fmt.Errorf("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (or $STRATA_PG_BIN)")
	}
	t0 := time.Now()
	primary, err := pgtest.Start()
	if err != nil {
		return err
	}
	defer primary.Stop()
	replica, err := primary.StartReplica()
	if err != nil {
		return err
	}
	defer replica.Stop()
	fmt.Printf("primary 127.0.0.1:%d, replica 127.0.0.1:%d (started in %v)\n", primary.Port, replica.Port, time.Since(t0).Round(time.Millisecond))

	admin, err := pgx.Connect(ctx, primary.DSN("postgres"))
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, `CREATE DATABASE strata`)
	admin.Close(ctx)
	if err != nil {
		return err
	}
	dsn, replicaDSN := primary.DSN("strata"), replica.DSN("strata")

	// Schema, and the /devices folder through the model.
	loader, err := store.OpenPostgres(ctx, store.PostgresOptions{DSN: dsn, Logger: log})
	if err != nil {
		return err
	}
	defer loader.Close()
	m, err := model.New(model.Config{Store: loader, Logger: log})
	if err != nil {
		return err
	}
	_, err = m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices", Type: model.FolderType})
	m.Close()
	if err != nil {
		return err
	}

	// A bulk load: the search index takes the rows through its pending
	// list (merged into the index a list at a time) and goes back to
	// direct inserts, as the store keeps it (migration 0003), once VACUUM
	// has emptied the list. VACUUM ANALYZE also gives the planner the
	// statistics it needs, which autovacuum keeps fresh in production.
	if _, err := loader.Pool().Exec(ctx, `ALTER INDEX contexts_props SET (fastupdate = on)`); err != nil {
		return err
	}
	t0 = time.Now()
	copyRows := func(cs []*model.Context) error {
		_, err := loader.CopyContexts(ctx, cs)
		return err
	}
	if err := load(ctx, copyRows, devices, sites); err != nil {
		return err
	}
	loaded := time.Since(t0)
	t0 = time.Now()
	if _, err := loader.Pool().Exec(ctx, `VACUUM ANALYZE contexts`); err != nil {
		return err
	}
	if _, err := loader.Pool().Exec(ctx, `ALTER INDEX contexts_props SET (fastupdate = off)`); err != nil {
		return err
	}
	fmt.Printf("loaded %d devices in %v (%.0f/s), VACUUM ANALYZE %v\n", devices, loaded.Round(time.Millisecond),
		float64(devices)/loaded.Seconds(), time.Since(t0).Round(time.Millisecond))
	if err := printSizes(ctx, loader); err != nil {
		return err
	}
	var typical int
	if err := loader.Pool().QueryRow(ctx, `SELECT count(*) FROM contexts WHERE type = 'device'
		AND props @> '{"l":{"site":"plant-7"},"v":{"os":"linux","arch":"arm64"}}'`).Scan(&typical); err != nil {
		return err
	}
	fmt.Printf("os=linux AND arch=arm64 AND site=plant-7 matches %d devices (%.2f %%)\n", typical, 100*float64(typical)/float64(devices))

	t0 = time.Now()
	if err := waitReplay(ctx, loader, replicaDSN); err != nil {
		return err
	}
	fmt.Printf("replica caught up in %v\n", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := readOnce(ctx, replicaDSN); err != nil {
		return err
	}
	fmt.Printf("replica read every row once in %v\n", time.Since(t0).Round(time.Millisecond))

	fromReplica, err := store.OpenPostgres(ctx, store.PostgresOptions{DSN: dsn, ReadDSNs: []string{replicaDSN},
		Logger: log, MaxConns: int32(max(clients, 4))})
	if err != nil {
		return err
	}
	defer fromReplica.Close()
	if err := waitInRotation(fromReplica); err != nil {
		return err
	}
	onPrimary, err := store.OpenPostgres(ctx, store.PostgresOptions{DSN: dsn, Logger: log, MaxConns: int32(max(clients, 4))})
	if err != nil {
		return err
	}
	defer onPrimary.Close()

	rng := rand.New(rand.NewPCG(7, 7))
	mix := queryMix(rng, queries, limit, sites, devices)
	warm := queryMix(rand.New(rand.NewPCG(8, 8)), min(200, queries), limit, sites, devices)

	if explain {
		seen := map[string]bool{}
		for _, q := range mix {
			if seen[q.kind] {
				continue
			}
			seen[q.kind] = true
			plan, served, err := fromReplica.ExplainSearch(ctx, q.q, true)
			if err != nil {
				return err
			}
			fmt.Printf("\n-- %s on %s: %s\n%s", q.kind, served, describe(q.q), plan)
		}
		fmt.Println()
	}

	readsBefore := fromReplica.ReplicaStatus()[0].Reads
	measure(ctx, fromReplica, warm, clients) // warm-up, not measured
	rep := measure(ctx, fromReplica, mix, clients)
	reads := fromReplica.ReplicaStatus()[0].Reads - readsBefore
	if rep.err != nil {
		return rep.err
	}
	if want := uint64(len(warm) + len(mix)); reads != want {
		return fmt.Errorf("the replica served %d of %d searches", reads, want)
	}
	measure(ctx, onPrimary, warm, clients)
	pri := measure(ctx, onPrimary, mix, clients)
	if pri.err != nil {
		return pri.err
	}
	for i := range mix {
		if !slices.Equal(rep.found[i], pri.found[i]) {
			return fmt.Errorf("query %d (%s): replica and primary found different contexts", i, describe(mix[i].q))
		}
	}

	fmt.Printf("%d devices, %d sites; %d queries per side, %d clients, first page of %d\n", devices, sites, len(mix), clients, limit)
	fmt.Printf("replica served %d of %d searches (read counter)\n", reads, len(warm)+len(mix))
	fmt.Printf("%-8s %9s %9s %9s %9s %9s %10s\n", "side", "queries/s", "p50", "p95", "p99", "max", "hits/query")
	rep.print("replica")
	pri.print("primary")
	fmt.Println("\nper kind (replica): p50 / p99, mean hits")
	for _, k := range kinds {
		rep.printKind(k)
	}
	if p99 := rep.pct(0.99); p99 >= 100*time.Millisecond {
		fmt.Printf("\ntarget missed: replica p99 %v >= 100ms\n", p99)
	} else {
		fmt.Printf("\ntarget met: replica p99 %v < 100ms\n", p99)
	}
	return nil
}

// Inventory distributions: weights in percent.
var (
	oses = []weighted{{"linux", 70}, {"windows", 20}, {"darwin", 10}}
	// distros and versions per os.
	distros = map[string][]weighted{
		"linux":   {{"debian", 35}, {"ubuntu", 35}, {"rhel", 20}, {"alpine", 10}},
		"windows": {{"windows-server", 60}, {"windows-iot", 40}},
		"darwin":  {{"macos", 100}},
	}
	versions = map[string][]weighted{
		"debian": {{"11", 30}, {"12", 70}}, "ubuntu": {{"20.04", 20}, {"22.04", 50}, {"24.04", 30}},
		"rhel": {{"8", 40}, {"9", 60}}, "alpine": {{"3.19", 50}, {"3.20", 50}},
		"windows-server": {{"2019", 40}, {"2022", 60}}, "windows-iot": {{"10", 70}, {"11", 30}},
		"macos": {{"13", 30}, {"14", 70}},
	}
	archs  = []weighted{{"amd64", 60}, {"arm64", 30}, {"armv7", 10}}
	cpus   = []int{1, 2, 4, 8, 16, 32}
	memory = []int{512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
)

type weighted struct {
	v string
	w int
}

func pick(r *rand.Rand, ws []weighted) string {
	n := r.IntN(100)
	for _, w := range ws {
		if n < w.w {
			return w.v
		}
		n -= w.w
	}
	return ws[len(ws)-1].v
}

func raw(v any) model.Variable {
	b, _ := json.Marshal(v)
	x, err := model.NewVariable(b, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	if err != nil {
		panic(err)
	}
	return x
}

// device is device i's context: inventory variables (as probes/mqtt
// stores an inventory message), a site label, and two telemetry values.
func device(i, sites int) *model.Context {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	os := pick(r, oses)
	distro := pick(r, distros[os])
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return &model.Context{
		Path:   model.Path(fmt.Sprintf("/devices/d%07d", i)),
		Type:   "device",
		Tenant: []string{"acme", "globex"}[i%2],
		Labels: map[string]string{"site": fmt.Sprintf("plant-%d", r.IntN(sites))},
		Variables: map[string]model.Variable{
			"os":       raw(os),
			"distro":   raw(distro),
			"version":  raw(pick(r, versions[distro])),
			"arch":     raw(pick(r, archs)),
			"cpus":     raw(cpus[r.IntN(len(cpus))]),
			"memory":   raw(memory[r.IntN(len(memory))]),
			"hostname": raw(fmt.Sprintf("host-%07d", i)),
			"agent":    raw("1.4." + fmt.Sprint(r.IntN(10))),
			"temp":     raw(15 + r.Float64()*30),
			"online":   raw(r.IntN(10) != 0),
		},
		Created: at, Updated: at, Version: 1,
	}
}

// load copies the devices in chunks, the next chunk encoded while the
// last is copied.
func load(ctx context.Context, write func([]*model.Context) error, devices, sites int) error {
	const chunk = 20_000
	chunks := make(chan []*model.Context, 2)
	go func() {
		defer close(chunks)
		for start := 0; start < devices; start += chunk {
			cs := make([]*model.Context, 0, chunk)
			for i := start; i < min(start+chunk, devices); i++ {
				cs = append(cs, device(i, sites))
			}
			select {
			case chunks <- cs:
			case <-ctx.Done():
				return
			}
		}
	}()
	for cs := range chunks {
		if err := write(cs); err != nil {
			for range chunks { // let the producer finish
			}
			return err
		}
	}
	return nil
}

func printSizes(ctx context.Context, s *store.Postgres) error {
	rows, err := s.Pool().Query(ctx, `SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))
		FROM pg_class c WHERE c.relname LIKE 'contexts%' ORDER BY pg_relation_size(c.oid) DESC`)
	if err != nil {
		return err
	}
	var parts []string
	var name, size string
	_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error {
		parts = append(parts, name+" "+size)
		return nil
	})
	fmt.Println("sizes:", strings.Join(parts, ", "))
	return err
}

// waitReplay waits until the replica has replayed the primary's WAL as
// of now.
func waitReplay(ctx context.Context, s *store.Postgres, replicaDSN string) error {
	var target int64
	if err := s.Pool().QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&target); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, replicaDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var replay int64
		if err := conn.QueryRow(ctx, `SELECT coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, 0)`).Scan(&replay); err != nil {
			return err
		}
		if replay >= target {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica at %d, primary at %d after 10 minutes", replay, target)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

// readOnce reads every row of contexts on the replica, as a replica in
// service has: the first read of a heap page on a standby checks each
// row's transaction status and records it in the page (hint bits, which
// the primary's VACUUM does not send), so the page is written back once.
// Without this pass the first searches pay those writes for the whole
// table, a cost of a freshly loaded table, not of the search.
func readOnce(ctx context.Context, replicaDSN string) error {
	conn, err := pgx.Connect(ctx, replicaDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int64
	// version is in no index: the rows themselves are read.
	return conn.QueryRow(ctx, `SELECT count(*) FROM contexts WHERE version > 0`).Scan(&n)
}

func waitInRotation(s *store.Postgres) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if _, name := s.ReadPool(); name != "primary" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica never in rotation: %+v", s.ReplicaStatus())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// The query kinds of the mix.
var kinds = []string{"site+os+arch", "site+os", "os+distro+version+arch", "site+cpus+memory", "os+arch+cpus", "hostname", "site+tenant"}

type query struct {
	kind string
	q    store.SearchQuery
}

func vars(kv ...any) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		b, _ := json.Marshal(kv[i+1])
		m[kv[i].(string)] = b
	}
	return m
}

// queryMix makes n selective queries, the kinds in turn, each over
// /devices with type=device.
func queryMix(r *rand.Rand, n, limit, sites, devices int) []query {
	out := make([]query, n)
	for i := range out {
		site := map[string]string{"site": fmt.Sprintf("plant-%d", r.IntN(sites))}
		q := store.SearchQuery{Prefix: "/devices", Type: "device", Limit: limit}
		k := kinds[i%len(kinds)]
		switch k {
		case "site+os+arch":
			q.Labels, q.Vars = site, vars("os", "linux", "arch", pick(r, archs[1:]))
		case "site+os":
			q.Labels, q.Vars = site, vars("os", pick(r, oses[1:]))
		case "os+distro+version+arch":
			os := pick(r, oses)
			d := pick(r, distros[os])
			q.Vars = vars("os", os, "distro", d, "version", pick(r, versions[d]), "arch", "armv7")
		case "site+cpus+memory":
			q.Labels, q.Vars = site, vars("cpus", cpus[r.IntN(len(cpus))], "memory", memory[r.IntN(len(memory))])
		case "os+arch+cpus":
			q.Vars = vars("os", "darwin", "arch", "arm64", "cpus", cpus[r.IntN(len(cpus))])
		case "hostname":
			q.Vars = vars("hostname", fmt.Sprintf("host-%07d", r.IntN(devices)))
		case "site+tenant":
			q.Labels, q.Vars, q.Tenants = site, vars("arch", "arm64"), []string{"globex"}
		}
		out[i] = query{kind: k, q: q}
	}
	return out
}

func describe(q store.SearchQuery) string {
	var parts []string
	for k, v := range q.Labels {
		parts = append(parts, "label."+k+"="+v)
	}
	for k, v := range q.Vars {
		parts = append(parts, "var."+k+"="+string(v))
	}
	if q.Tenants != nil {
		parts = append(parts, "tenant="+strings.Join(q.Tenants, ","))
	}
	slices.Sort(parts)
	return fmt.Sprintf("path=%s type=%s %s limit=%d", q.Prefix, q.Type, strings.Join(parts, " "), q.Limit)
}

// searcher is what measure runs the queries on.
type searcher interface {
	Search(ctx context.Context, q store.SearchQuery) (store.SearchPage, error)
}

// searchFunc makes a function a searcher.
type searchFunc func(ctx context.Context, q store.SearchQuery) (store.SearchPage, error)

func (f searchFunc) Search(ctx context.Context, q store.SearchQuery) (store.SearchPage, error) {
	return f(ctx, q)
}

type result struct {
	mix     []query
	lat     []time.Duration // per query, in mix order
	found   [][]model.Path
	elapsed time.Duration
	err     error
}

// measure runs the mix on s from clients goroutines, each taking the next
// query.
func measure(ctx context.Context, s searcher, mix []query, clients int) *result {
	res := &result{mix: mix, lat: make([]time.Duration, len(mix)), found: make([][]model.Path, len(mix))}
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				failed := res.err != nil
				mu.Unlock()
				if i >= len(mix) || failed {
					return
				}
				t0 := time.Now()
				page, err := s.Search(ctx, mix[i].q)
				res.lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					res.err = fmt.Errorf("%s: %w", describe(mix[i].q), err)
					mu.Unlock()
					return
				}
				for _, c := range page.Contexts {
					res.found[i] = append(res.found[i], c.Path)
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func pctOf(ls []time.Duration, p float64) time.Duration {
	if len(ls) == 0 {
		return 0
	}
	s := slices.Clone(ls)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func (r *result) pct(p float64) time.Duration { return pctOf(r.lat, p) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func (r *result) hits(kind string) float64 {
	n, total := 0, 0
	for i, q := range r.mix {
		if kind == "" || q.kind == kind {
			n++
			total += len(r.found[i])
		}
	}
	return float64(total) / float64(max(n, 1))
}

func (r *result) print(side string) {
	fmt.Printf("%-8s %9.0f %9s %9s %9s %9s %10.1f\n", side, float64(len(r.mix))/r.elapsed.Seconds(),
		ms(r.pct(0.50)), ms(r.pct(0.95)), ms(r.pct(0.99)), ms(slices.MaxFunc(r.lat, cmp.Compare)), r.hits(""))
}

func (r *result) printKind(kind string) {
	var ls []time.Duration
	for i, q := range r.mix {
		if q.kind == kind {
			ls = append(ls, r.lat[i])
		}
	}
	fmt.Printf("  %-24s %9s / %9s  %6.1f\n", kind, ms(pctOf(ls, 0.5)), ms(pctOf(ls, 0.99)), r.hits(kind))
}
