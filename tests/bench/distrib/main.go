// Command distrib measures software distribution across tiers: the time
// to bring a release of one large artifact from HQ to several probes
// under a regional node, beside a raw QUIC copy of the same bytes along
// the same topology in the same run, and the bytes each link carried.
//
//	go run ./tests/bench/distrib -size 200000000 -probes 4 -rounds 3
//
// Every node is a process of its own (this executable, -role node:
// node.New on a temporary Badger store and fs object store, as strata
// serve builds it): hq, eu (joined to hq with a peer token, grant
// operate) and the probes p1…pN (joined to eu, grant operate), all
// trusting a release signing key generated for the run
// (software.trusted_keys). Loopback only.
//
// Each round:
//
//  1. An artifact of -size random bytes is written to disk; a release
//     holding it is signed and sent to hq (PUT /api/v1/releases/…), and
//     the artifact uploaded (PUT …/artifacts/{sha256}).
//  2. Baseline (before Strata in odd rounds, after it in even ones):
//     the same file copied over raw quic-go streams between processes
//     of their own (-role raw: each its own quic.Transport and UDP
//     socket, the federation's QUIC settings): hq → eu, then eu → the
//     probes at once. Each receiver writes the bytes to a partial file
//     while hashing them (SHA-256), syncs it, renames it into place and
//     syncs the folder; the time runs from asking eu to fetch until the
//     last probe has its copy durable.
//  3. Strata: POST /api/v1/releases/{name}/{version}/stage at hq, peers
//     /peers/eu/peers/pN; the time runs from the request until every
//     probe's cache (its own GET /api/v1/software/cache, polled every
//     -poll; eu's too) holds the artifact with no fetch running. Per tier: bytes
//     fetched from above and served below (hq's cache listing, taken
//     before and after), the QUIC bytes of each link in each direction
//     (strata_federation_bytes_sent/received of the node below, before
//     and after: packet bytes without UDP/IP headers) and what they cost
//     beyond the artifact; the CPU each process used.
//
// The probes are polled on their own API, not through hq, so the polls
// add nothing to the links measured.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

type options struct {
	size     int64
	probes   int
	rounds   int
	keep     bool
	timeout  time.Duration
	poll     time.Duration
	dir      string
	profile  string
	baseline bool
	verbose  bool
	out      io.Writer
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout))
}

// runMain parses args and runs the bench or the child role they name.
func runMain(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("distrib", flag.ContinueOnError)
	role := fs.String("role", "bench", "bench, or the child processes it starts: node, raw")
	o := options{out: out}
	fs.Int64Var(&o.size, "size", 200_000_000, "bytes of the release's artifact")
	fs.IntVar(&o.probes, "probes", 4, "probes under eu")
	fs.IntVar(&o.rounds, "rounds", 1, "releases distributed, one after the other (a new artifact each)")
	fs.BoolVar(&o.keep, "keep", false, "keep the folder of the nodes (printed) instead of removing it")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a step after this long")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "how often the caches of eu and the probes are polled (the time is late by up to this)")
	fs.StringVar(&o.dir, "dir", "", "folder of the nodes (default: a temporary one)")
	fs.StringVar(&o.profile, "cpuprofile", "", "write CPU profiles of eu (FILE.eu) and p1 (FILE.p1) over the last round's staging")
	fs.BoolVar(&o.baseline, "baseline", true, "run the raw QUIC baseline each round")
	fs.BoolVar(&o.verbose, "v", false, "nodes log at info (each fetch with its time)")
	var na nodeArgs
	fs.StringVar(&na.name, "name", "", "(-role node) the node's name")
	fs.StringVar(&na.role, "node-role", config.RoleProbe, "(-role node) hq, regional or probe")
	fs.StringVar(&na.upstream, "upstream", "", "(-role node) the consumer's federation address")
	fs.StringVar(&na.token, "token", "", "(-role node) the join token")
	fs.StringVar(&na.trusted, "trusted", "", "(-role node) the release signing key, base64")
	fs.BoolVar(&na.listen, "listen", false, "(-role node) listen for federation")
	var cert, key, ca string
	fs.StringVar(&cert, "raw-cert", "", "(-role raw) certificate file")
	fs.StringVar(&key, "raw-key", "", "(-role raw) key file")
	fs.StringVar(&ca, "raw-ca", "", "(-role raw) CA file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	switch *role {
	case "bench":
		_, err = run(o)
	case "node":
		na.dir, na.verbose = o.dir, o.verbose
		err = runNode(na)
	case "raw":
		err = runRaw(cert, key, ca)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "distrib (%s): %v\n", *role, err)
		return 1
	}
	return 0
}

// proc is a node process as the bench sees it.
type proc struct {
	name  string
	child *benchproc.Child
	info  nodeInfo
	dir   string
	admin *client.Client
	ca    []byte
	token string
}

func (p *proc) stop() {
	if p != nil && p.child != nil {
		p.child.Stop()
	}
}

// startNode starts a node process and waits for it to serve.
func startNode(o options, name, role string, listen bool, upstream, token, trusted string, verbose bool) (*proc, error) {
	p := &proc{name: name, dir: filepath.Join(o.dir, name)}
	args := []string{"-role", "node", "-dir", p.dir, "-name", name, "-node-role", role, "-trusted", trusted}
	if listen {
		args = append(args, "-listen")
	}
	if upstream != "" {
		args = append(args, "-upstream", upstream, "-token", token)
	}
	if verbose {
		args = append(args, "-v")
	}
	c, err := benchproc.StartChild(name, 0, false, []string{childEnv}, args...)
	if err != nil {
		return nil, err
	}
	p.child = c
	if err := c.Read(&p.info); err != nil {
		c.Stop()
		return nil, err
	}
	if p.ca, err = os.ReadFile(filepath.Join(p.dir, "tls/ca.crt")); err != nil {
		return p, err
	}
	tok, err := os.ReadFile(filepath.Join(p.dir, node.AdminTokenFile))
	if err != nil {
		return p, err
	}
	p.token = string(tok)
	p.admin, err = client.New("https://"+p.info.API, p.token, p.ca)
	return p, err
}

// hierarchy is the run's nodes.
type hierarchy struct {
	hq, eu *proc
	probes []*proc
}

func (h *hierarchy) all() []*proc { return append([]*proc{h.hq, h.eu}, h.probes...) }

func (h *hierarchy) stop() {
	// The lowest tiers first, so no link retries meanwhile.
	for _, p := range h.probes {
		p.stop()
	}
	h.eu.stop()
	h.hq.stop()
}

// join starts the hierarchy: hq, eu joined to it, the probes joined to eu.
func startHierarchy(ctx context.Context, o options, trusted string) (*hierarchy, error) {
	h := &hierarchy{}
	var err error
	if h.hq, err = startNode(o, "hq", config.RoleHQ, true, "", "", trusted, o.verbose); err != nil {
		return h, err
	}
	tok, err := h.hq.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: "eu", Grant: "operate", TTL: time.Hour})
	if err != nil {
		return h, fmt.Errorf("peer token: %w", err)
	}
	if h.eu, err = startNode(o, "eu", config.RoleRegional, true, h.hq.info.Fed, tok.Token, trusted, o.verbose); err != nil {
		return h, err
	}
	for i := range o.probes {
		name := fmt.Sprintf("p%d", i+1)
		tok, err := h.eu.admin.CreatePeerToken(ctx, client.NewPeerToken{Peer: name, Grant: "operate", TTL: time.Hour})
		if err != nil {
			return h, fmt.Errorf("peer token: %w", err)
		}
		p, err := startNode(o, name, config.RoleProbe, false, h.eu.info.Fed, tok.Token, trusted, o.verbose)
		if p != nil {
			h.probes = append(h.probes, p)
		}
		if err != nil {
			return h, err
		}
	}
	connected := func(p *proc, want ...string) func() bool {
		return func() bool {
			ps, err := p.admin.Peers(ctx)
			if err != nil {
				return false
			}
			up := map[string]bool{}
			for _, x := range ps {
				if x.Direction == "provider" && x.State == "connected" {
					up[x.Name] = true
				}
			}
			for _, w := range want {
				if !up[w] {
					return false
				}
			}
			return true
		}
	}
	if err := poll(o.timeout, 20*time.Millisecond, connected(h.hq, "eu")); err != nil {
		return h, fmt.Errorf("eu connected to hq: %w", err)
	}
	var names []string
	for _, p := range h.probes {
		names = append(names, p.name)
	}
	if err := poll(o.timeout, 20*time.Millisecond, connected(h.eu, names...)); err != nil {
		return h, fmt.Errorf("probes connected to eu: %w", err)
	}
	return h, nil
}

// raws are the baseline's processes.
type raws struct {
	hq, eu *benchproc.Child
	probes []*benchproc.Child
	dir    string
}

func (r *raws) stop() {
	for _, c := range append([]*benchproc.Child{r.hq, r.eu}, r.probes...) {
		if c != nil {
			c.Stop()
		}
	}
}

func startRaws(o options) (*raws, error) {
	r := &raws{dir: filepath.Join(o.dir, "raw")}
	ca, err := certs.NewCA("raw CA")
	if err != nil {
		return r, err
	}
	srv, err := ca.IssueServer("raw", certs.ServerHosts())
	if err != nil {
		return r, err
	}
	caFile, certFile, keyFile := filepath.Join(r.dir, "ca.crt"), filepath.Join(r.dir, "raw.crt"), filepath.Join(r.dir, "raw.key")
	if err := ca.WriteFiles(caFile, filepath.Join(r.dir, "ca.key")); err != nil {
		return r, err
	}
	if err := srv.WriteFiles(certFile, keyFile); err != nil {
		return r, err
	}
	start := func(name string) (*benchproc.Child, string, error) {
		if err := os.MkdirAll(filepath.Join(r.dir, name), 0o700); err != nil {
			return nil, "", err
		}
		c, err := benchproc.StartChild("raw "+name, 0, false, []string{childEnv}, "-role", "raw", "-raw-cert", certFile, "-raw-key", keyFile, "-raw-ca", caFile)
		if err != nil {
			return nil, "", err
		}
		var info rawInfo
		if err := c.Read(&info); err != nil {
			c.Stop()
			return nil, "", err
		}
		return c, info.Addr, nil
	}
	var hqAddr, euAddr string
	if r.hq, hqAddr, err = start("hq"); err != nil {
		return r, err
	}
	if r.eu, euAddr, err = start("eu"); err != nil {
		return r, err
	}
	if err := r.eu.Call(nil, "dial", hqAddr); err != nil {
		return r, err
	}
	for i := range o.probes {
		c, _, err := start(fmt.Sprintf("p%d", i+1))
		if err != nil {
			return r, err
		}
		r.probes = append(r.probes, c)
		if err := c.Call(nil, "dial", euAddr); err != nil {
			return r, err
		}
	}
	return r, nil
}

// rawRound is one baseline copy.
type rawRound struct {
	Up     rawFetch   // hq → eu
	Down   []rawFetch // eu → each probe
	Wall   time.Duration
	UpWall time.Duration // until eu's copy was durable
	CPU    map[string]time.Duration
}

// copyRaw copies file (size bytes, SHA-256 sum) hq → eu → every probe.
func copyRaw(r *raws, file, sum string, size int64, round int) (rawRound, error) {
	var out rawRound
	name := fmt.Sprintf("artifact-%d", round)
	if err := r.hq.Call(nil, "serve", file); err != nil {
		return out, err
	}
	all := append([]*benchproc.Child{r.hq, r.eu}, r.probes...)
	names := []string{"hq", "eu"}
	for i := range r.probes {
		names = append(names, fmt.Sprintf("p%d", i+1))
	}
	for _, c := range all {
		c.Call(nil, "begin")
	}
	euFile := filepath.Join(r.dir, "eu", name)
	t0 := time.Now()
	if err := r.eu.Call(&out.Up, "fetch", euFile, fmt.Sprint(size)); err != nil {
		return out, err
	}
	out.UpWall = time.Since(t0)
	if err := r.eu.Call(nil, "serve", euFile); err != nil {
		return out, err
	}
	out.Down = make([]rawFetch, len(r.probes))
	errs := make([]error, len(r.probes))
	var wg sync.WaitGroup
	for i, c := range r.probes {
		wg.Go(func() {
			errs[i] = c.Call(&out.Down[i], "fetch", filepath.Join(r.dir, names[i+2], name), fmt.Sprint(size))
		})
	}
	wg.Wait()
	out.Wall = time.Since(t0)
	out.CPU = map[string]time.Duration{}
	for i, c := range all {
		var u benchproc.Usage
		if c.Call(&u, "end") == nil {
			out.CPU[names[i]] = u.CPU
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	for i, f := range append([]rawFetch{out.Up}, out.Down...) {
		if f.SHA256 != sum || f.Bytes != size {
			return out, fmt.Errorf("raw copy %d: %d bytes, sha256 %s, want %d, %s", i, f.Bytes, f.SHA256, size, sum)
		}
	}
	// The copies are not needed after: free the disk for the next round.
	os.Remove(euFile)
	for i := range r.probes {
		os.Remove(filepath.Join(r.dir, names[i+2], name))
	}
	return out, nil
}

// writeArtifact writes size random bytes to file and returns their
// SHA-256.
func writeArtifact(file string, size int64) (string, error) {
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var seed [32]byte
	rand.Read(seed[:])
	src := mrand.NewChaCha8(seed)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		b := buf[:min(int64(len(buf)), left)]
		src.Read(b)
		h.Write(b)
		if _, err := f.Write(b); err != nil {
			return "", err
		}
		left -= int64(len(b))
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// tierState is one tier's cache figures.
type tierState struct {
	Fetched, Served int64
	Objects         int
	Fetching        int
}

// linkBytes are a link's QUIC bytes as its lower node counts them.
type linkBytes struct {
	Down, Up float64 // received from the tier above, sent to it
}

// strataRound is one staging.
type strataRound struct {
	Wall     time.Duration
	Upload   time.Duration
	EU       time.Duration            // until eu holds the artifact
	Probes   map[string]time.Duration // until each probe holds it
	Tiers    map[string]tierState     // deltas over the staging, by node
	Links    map[string]linkBytes     // deltas, by lower node
	Artifact map[string]float64       // artifact bytes over each link (its upper node's count), by lower node
	CPU      map[string]time.Duration
}

// stage distributes the release with the artifact in file, and measures.
func stage(ctx context.Context, o options, h *hierarchy, key ed25519.PrivateKey, file, sum string, round int, profile bool) (strataRound, error) {
	out := strataRound{Probes: map[string]time.Duration{}, Tiers: map[string]tierState{}, Links: map[string]linkBytes{}, Artifact: map[string]float64{}, CPU: map[string]time.Duration{}}
	version := fmt.Sprintf("1.0.%d", round)
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: "bench", Version: version, Created: now.Format(time.RFC3339), Expires: now.Add(24 * time.Hour).Format(time.RFC3339),
		Artifacts: []apitypes.Artifact{{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactBinary, Size: o.size, SHA256: sum}}}
	sm, err := m.Sign(key)
	if err != nil {
		return out, err
	}
	if _, _, err := h.hq.admin.PutRelease(ctx, m.Name, version, sm); err != nil {
		return out, fmt.Errorf("put release: %w", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return out, err
	}
	t0 := time.Now()
	_, err = h.hq.admin.UploadArtifact(ctx, m.Name, version, sum, 0, f, o.size)
	f.Close()
	if err != nil {
		return out, fmt.Errorf("upload: %w", err)
	}
	out.Upload = time.Since(t0)

	below := append([]*proc{h.eu}, h.probes...)
	before := map[string]tierState{}
	for _, p := range below {
		st, err := ownCache(ctx, p)
		if err != nil {
			return out, err
		}
		before[p.name] = st
	}
	tiersBefore, err := hqTiers(ctx, h)
	if err != nil {
		return out, err
	}
	mBefore := linkMetrics(h)
	var peers []string
	for _, p := range h.probes {
		peers = append(peers, "/peers/eu/peers/"+p.name)
	}
	for _, p := range h.all() {
		p.child.Call(nil, "begin")
	}
	if profile {
		h.eu.child.Call(nil, "profile-start", o.profile+".eu")
		h.probes[0].child.Call(nil, "profile-start", o.profile+".p1")
	}
	t0 = time.Now()
	res, err := h.hq.admin.StageRelease(ctx, m.Name, version, peers)
	if err != nil {
		return out, fmt.Errorf("stage: %w", err)
	}
	for _, r := range res {
		if r.Error != "" {
			return out, fmt.Errorf("stage to %s: %s", r.Peer, r.Error)
		}
	}
	var mu sync.Mutex
	done := map[string]bool{}
	err = poll(o.timeout, o.poll, func() bool {
		var wg sync.WaitGroup
		for _, p := range below {
			mu.Lock()
			d := done[p.name]
			mu.Unlock()
			if d {
				continue
			}
			wg.Go(func() {
				st, err := ownCache(ctx, p)
				if err != nil || st.Objects <= before[p.name].Objects || st.Fetching > 0 {
					return
				}
				at := time.Since(t0)
				mu.Lock()
				done[p.name] = true
				if p == h.eu {
					out.EU = at
				} else {
					out.Probes[p.name] = at
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		return len(done) == len(below)
	})
	if profile {
		h.eu.child.Call(nil, "profile-stop")
		h.probes[0].child.Call(nil, "profile-stop")
	}
	for _, p := range h.all() {
		var u benchproc.Usage
		if p.child.Call(&u, "end") == nil {
			out.CPU[p.name] = u.CPU
		}
	}
	if err != nil {
		return out, fmt.Errorf("%d of %d tiers hold the artifact: %w", len(done), len(below), err)
	}
	for _, d := range out.Probes {
		out.Wall = max(out.Wall, d)
	}
	mAfter := linkMetrics(h)
	tiersAfter, err := hqTiers(ctx, h)
	if err != nil {
		return out, err
	}
	for name, a := range tiersAfter {
		b := tiersBefore[name]
		out.Tiers[name] = tierState{Fetched: a.Fetched - b.Fetched, Served: a.Served - b.Served, Objects: a.Objects - b.Objects, Fetching: a.Fetching}
	}
	upper := func(p *proc) *proc {
		if p == h.eu {
			return h.hq
		}
		return h.eu
	}
	for _, p := range below {
		up := upper(p).name
		recv := fmt.Sprintf(`strata_federation_bytes_received{direction="consumer",peer=%q}`, up)
		sent := fmt.Sprintf(`strata_federation_bytes_sent{direction="consumer",peer=%q}`, up)
		out.Links[p.name] = linkBytes{Down: mAfter[p.name][recv] - mBefore[p.name][recv], Up: mAfter[p.name][sent] - mBefore[p.name][sent]}
		art := fmt.Sprintf(`strata_federation_artifact_bytes_total{direction="provider",peer=%q}`, p.name)
		out.Artifact[p.name] = mAfter[up][art] - mBefore[up][art]
	}
	return out, nil
}

// ownCache is a node's own cache tier, as its API shows it.
func ownCache(ctx context.Context, p *proc) (tierState, error) {
	ts, err := p.admin.SoftwareCache(ctx)
	if err != nil {
		return tierState{}, err
	}
	for _, t := range ts {
		if t.Path == "/" {
			return tierState{Fetched: t.FetchedBytes, Served: t.ServedBytes, Objects: t.Objects, Fetching: t.Fetching}, nil
		}
	}
	return tierState{}, fmt.Errorf("%s: no cache tier /", p.name)
}

// hqTiers are every tier's cache figures from hq's listing, by node.
func hqTiers(ctx context.Context, h *hierarchy) (map[string]tierState, error) {
	ts, err := h.hq.admin.SoftwareCache(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]tierState{}
	for _, t := range ts {
		if t.Error != "" {
			return nil, fmt.Errorf("cache of %s: %s", t.Path, t.Error)
		}
		out[t.Node] = tierState{Fetched: t.FetchedBytes, Served: t.ServedBytes, Objects: t.Objects, Fetching: t.Fetching}
	}
	if len(out) != len(h.all()) {
		return nil, fmt.Errorf("hq's cache listing has %d tiers, want %d", len(out), len(h.all()))
	}
	return out, nil
}

// linkMetrics reads every node's federation byte counters, by node.
func linkMetrics(h *hierarchy) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, p := range h.all() {
		out[p.name] = benchproc.Metrics(p.info.API, p.token, p.ca, "strata_federation_bytes_", "strata_federation_artifact_bytes_total")
	}
	return out
}

// result is the whole run, for the test.
type result struct {
	Raw    []rawRound
	Strata []strataRound
}

func run(o options) (*result, error) {
	if o.out == nil {
		o.out = os.Stdout
	}
	if o.probes < 1 || o.size < 1 || o.rounds < 1 {
		return nil, errors.New("-probes, -size and -rounds must be positive")
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "strata-distrib")
		if err != nil {
			return nil, err
		}
		if o.keep {
			fmt.Fprintf(o.out, "nodes in %s (kept)\n", d)
		} else {
			defer os.RemoveAll(d)
		}
		o.dir = d
	}
	ctx := context.Background()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.out, "machine: %d cores, load average %s; %s, artifact %s, %d probes under eu, %d round(s); loopback\n",
		runtime.NumCPU(), benchproc.LoadAvg(), runtime.Version(), mb(float64(o.size)), o.probes, o.rounds)
	h, err := startHierarchy(ctx, o, base64.StdEncoding.EncodeToString(pub))
	defer h.stop()
	if err != nil {
		return nil, err
	}
	var r *raws
	if o.baseline {
		r, err = startRaws(o)
		defer r.stop()
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
	}
	res := &result{}
	for round := 1; round <= o.rounds; round++ {
		file := filepath.Join(o.dir, fmt.Sprintf("artifact-%d.bin", round))
		sum, err := writeArtifact(file, o.size)
		if err != nil {
			return res, err
		}
		// The baseline first in odd rounds, second in even ones: what
		// one leaves to the other (dirty pages, a warm cache) evens out.
		first := "raw QUIC copy first"
		if round%2 == 0 {
			first = "Strata first"
		}
		fmt.Fprintf(o.out, "\nround %d (%s): load average %s\n", round, first, benchproc.LoadAvg())
		var raw *rawRound
		doRaw := func() error {
			if r == nil {
				return nil
			}
			rr, err := copyRaw(r, file, sum, o.size, round)
			if err != nil {
				return fmt.Errorf("baseline: %w", err)
			}
			res.Raw = append(res.Raw, rr)
			raw = &rr
			return nil
		}
		if round%2 == 1 {
			if err := doRaw(); err != nil {
				return res, err
			}
		}
		sr, err := stage(ctx, o, h, key, file, sum, round, o.profile != "" && round == o.rounds)
		if err != nil {
			return res, err
		}
		res.Strata = append(res.Strata, sr)
		if round%2 == 0 {
			if err := doRaw(); err != nil {
				return res, err
			}
		}
		if raw != nil {
			printRaw(o, *raw)
		}
		printStrata(o, h, sr, raw)
		fmt.Fprintf(o.out, "  load average after the round %s\n", benchproc.LoadAvg())
		os.Remove(file)
	}
	return res, nil
}

func printRaw(o options, r rawRound) {
	fmt.Fprintf(o.out, "  raw QUIC copy: hq→eu %s, then eu→%d probes at once %s; total %s (%s)\n",
		sec(r.UpWall), len(r.Down), sec(r.Wall-r.UpWall), sec(r.Wall), rate(o.size, r.Wall))
	fmt.Fprintf(o.out, "    link bytes (QUIC, down/up, beyond the artifact): eu %s", overhead(float64(r.Up.Received), float64(r.Up.Sent), o.size))
	for i, d := range r.Down {
		fmt.Fprintf(o.out, ", p%d %s", i+1, overhead(float64(d.Received), float64(d.Sent), o.size))
	}
	fmt.Fprintf(o.out, "\n    CPU: %s\n", cpus(r.CPU))
}

func printStrata(o options, h *hierarchy, s strataRound, raw *rawRound) {
	var last []string
	for name, d := range s.Probes {
		last = append(last, fmt.Sprintf("%s %s", name, sec(d)))
	}
	sort.Strings(last)
	fmt.Fprintf(o.out, "  strata stage: eu holds it at %s, probes at %s; total %s (%s)",
		sec(s.EU), strings.Join(last, ", "), sec(s.Wall), rate(o.size, s.Wall))
	if raw != nil {
		fmt.Fprintf(o.out, "; %.2f× the raw copy (hq→eu %.2f×)", s.Wall.Seconds()/raw.Wall.Seconds(), s.EU.Seconds()/raw.UpWall.Seconds())
	}
	fmt.Fprintf(o.out, "\n    upload to hq (PUT …/artifacts, before the staging): %s (%s)\n", sec(s.Upload), rate(o.size, s.Upload))
	for _, p := range h.all() {
		t := s.Tiers[p.name]
		fmt.Fprintf(o.out, "    %-3s fetched from above %s, served below %s", p.name, mb(float64(t.Fetched)), mb(float64(t.Served)))
		if l, ok := s.Links[p.name]; ok {
			fmt.Fprintf(o.out, "; link bytes (QUIC, down/up, beyond the artifact) %s; artifact stream bytes %s", overhead(l.Down, l.Up, o.size), mb(s.Artifact[p.name]))
		}
		fmt.Fprintln(o.out)
	}
	fmt.Fprintf(o.out, "    CPU: %s\n", cpus(s.CPU))
}

// overhead shows a link's bytes down and up, and the bytes down beyond
// the artifact's size (as a share of it).
func overhead(down, up float64, size int64) string {
	extra := down - float64(size)
	return fmt.Sprintf("%s/%s (+%s, %.2f%%)", mb(down), mb(up), mb(extra), 100*extra/float64(size))
}

func cpus(m map[string]time.Duration) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return order(names[i]) < order(names[j]) })
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f s", n, m[n].Seconds()))
	}
	return strings.Join(parts, ", ")
}

func order(name string) string {
	switch name {
	case "hq":
		return "0"
	case "eu":
		return "1"
	}
	return fmt.Sprintf("2%04s", name[1:])
}

func mb(b float64) string {
	switch {
	case b >= 1e6 || b <= -1e6:
		return fmt.Sprintf("%.2f MB", b/1e6)
	case b >= 1e3 || b <= -1e3:
		return fmt.Sprintf("%.1f kB", b/1e3)
	}
	return fmt.Sprintf("%.0f B", b)
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func rate(size int64, d time.Duration) string {
	return fmt.Sprintf("%.1f MB/s", float64(size)/1e6/d.Seconds())
}

// poll calls f every interval until it reports true, for at most d.
func poll(d, every time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		time.Sleep(every) // polling a counter, not synchronising
	}
	return nil
}
