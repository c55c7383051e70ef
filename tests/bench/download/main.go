// Command download measures simulated devices downloading one artifact
// from one node, beside Go's http.FileServer serving the same file over
// the same TLS, in the same run.
//
//	go build -o /tmp/dlbench ./tests/bench/download && /tmp/dlbench -devices 1000 -size 50MB -rounds 2
//
// The node is a process of its own (this executable, -role node: node.New
// on a temporary Badger store and fs object store, as strata serve builds
// it, its API on loopback HTTPS), trusting a release signing key the bench
// makes (software.trusted_keys). The bench writes an artifact of -size
// random bytes, publishes a release naming it (a manifest signed with
// that key, PUT /api/v1/releases/...), uploads the bytes through the API
// (PUT .../artifacts/{sha256}), and enrolls -devices devices through
// POST /api/v1/enroll.
//
// Then, -rounds times, each side once a round (strata first in odd
// rounds, the file server first in even ones, so that a drift of the
// machine's load over the run favours neither), every device downloads
// the artifact once, at most -concurrency at a time (default: all at
// once):
//
//   - strata: GET /api/v1/device/artifacts/{sha256} on the node, with the
//     device's id and secret in HTTP Basic authentication;
//   - fileserver (the baseline): the same path on Go's http.FileServer
//     serving the same file, in a process of its own (-role fileserver),
//     over TLS with the node's certificate and TLS and http.Server
//     settings and the node's GOMAXPROCS; it ignores the same
//     Authorization header.
//
// The devices are probes/sim's Downloader in this process, each download
// verifying the SHA-256 while discarding the bytes; their connections
// come from 127.0.1.x source addresses, at most 200 per address (the
// node allows 256 per client address). A round reports the aggregate
// throughput (body bytes over the wall time from the first request to
// the last byte), each download's time (p50, p99), failures by kind, and
// the server process's CPU time; the end prints the ratio of the two
// sides' throughput, round by round (target ≥ 0.8).
//
// Everything listens on 127.0.0.1 only; the bench stops (and, past a
// grace, kills) only the processes it started.
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
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// options are the bench's flags.
type options struct {
	devices     int
	size        int64
	concurrency int
	rounds      int
	timeout     time.Duration
	keep        bool
	dir         string
	profile     string
	rcvbuf      int
}

// childEnv marks a child process of the bench (so that a test binary
// runs the child's role instead of its tests).
const childEnv = "STRATA_DLBENCH_CHILD=1"

func main() { os.Exit(mainArgs(os.Args[1:], os.Stdout)) }

func mainArgs(args []string, stdout io.Writer) int {
	fl := flag.NewFlagSet("download", flag.ContinueOnError)
	role := fl.String("role", "bench", "bench, or the child processes it starts: node, fileserver")
	var o options
	size := fl.String("size", "50MB", "the artifact's size: bytes, or with kB, MB, GB (powers of 1000) or KiB, MiB, GiB")
	fl.IntVar(&o.devices, "devices", 1000, "simulated devices, each downloading the artifact once a round")
	fl.IntVar(&o.concurrency, "concurrency", 0, "downloads in progress at most (0: every device at once)")
	fl.IntVar(&o.rounds, "rounds", 2, "rounds, each a strata side and a fileserver side (odd rounds strata first, even rounds fileserver first)")
	fl.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long (the whole run)")
	fl.BoolVar(&o.keep, "keep", false, "keep the run's folder (node store, artifact) and print its path")
	fl.StringVar(&o.dir, "dir", "", "the run's folder (default: a temporary one; with -role, the bench's)")
	fl.IntVar(&o.rcvbuf, "device-rcvbuf", 256<<10, "each device connection's receive buffer (SO_RCVBUF), as a device's own memory would bound it; 0: the kernel's autotuning, which lets 1,000 connections on one machine reach its TCP memory pressure")
	fl.StringVar(&o.profile, "cpuprofile", "", "write CPU profiles of the node (FILE) and the file server (FILE.fileserver) over their first round")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	var err error
	switch *role {
	case "bench":
		if o.size, err = parseSize(*size); err != nil {
			break
		}
		_, err = run(o, stdout)
	case "node":
		err = runNode(o.dir)
	case "fileserver":
		err = runFileServer(o.dir)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "download (%s): %v\n", *role, err)
		return 1
	}
	return 0
}

// parseSize reads 50MB, 1MiB, 4096.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = num, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("-size %q: want a positive size such as 50MB", s)
	}
	return n * mult, nil
}

// outcome is what a run measured, side by side.
type outcome struct {
	Strata, FileServer []roundResult
	Protocol           [2]string // what each side's connections negotiated
}

// ratios are strata's throughput over the file server's, round by round.
func (o *outcome) ratios() []float64 {
	var out []float64
	for i := range min(len(o.Strata), len(o.FileServer)) {
		if fs := o.FileServer[i].throughput(); fs > 0 {
			out = append(out, o.Strata[i].throughput()/fs)
		}
	}
	return out
}

func run(o options, w io.Writer) (*outcome, error) {
	if o.devices <= 0 || o.rounds <= 0 {
		return nil, errors.New("-devices and -rounds must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if o.dir == "" {
		d, err := os.MkdirTemp("", "strata-dlbench")
		if err != nil {
			return nil, err
		}
		o.dir = d
		if o.keep {
			defer fmt.Fprintf(w, "kept: %s\n", d)
		} else {
			defer os.RemoveAll(d)
		}
	}
	if n, err := sim.RaiseFileLimit(); err == nil && n > 0 && n < uint64(concurrencyOf(o))+256 {
		fmt.Fprintf(w, "warning: RLIMIT_NOFILE is %d\n", n)
	}
	fmt.Fprintf(w, "machine: %d cores, load average %s; %d devices, artifact %d bytes, concurrency %d, %d rounds, device SO_RCVBUF %d\n",
		runtime.NumCPU(), benchproc.LoadAvg(), o.devices, o.size, concurrencyOf(o), o.rounds, o.rcvbuf)

	// The release key and the artifact.
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.dir, pubKey), []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644); err != nil {
		return nil, err
	}
	t0 := time.Now()
	sum, err := writeArtifact(o.dir, o.size)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "artifact %s: %d random bytes written in %s\n", sum, o.size, time.Since(t0).Round(time.Millisecond))

	// The node.
	nd, err := benchproc.StartChild("node", 0, false, []string{childEnv}, "-role", "node", "-dir", o.dir)
	if err != nil {
		return nil, err
	}
	defer nd.StopWithin(30 * time.Second)
	var ni childInfo
	if err := nd.Read(&ni); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(o.dir, nodeDir, "tls/ca.crt"))
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(filepath.Join(o.dir, nodeDir, node.AdminTokenFile))
	if err != nil {
		return nil, err
	}
	admin, err := client.New("https://"+ni.API, strings.TrimSpace(string(token)), caPEM)
	if err != nil {
		return nil, err
	}
	defer admin.CloseIdleConnections()
	t0 = time.Now()
	if err := publish(ctx, admin, key, o.dir, sum, o.size); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "node (pid %d, GOMAXPROCS %d) at %s: release published and artifact uploaded through the API in %s\n",
		ni.PID, ni.GOMAXPROCS, ni.API, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	creds, err := enroll(ctx, admin, o.devices)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "enrolled %d devices through POST /api/v1/enroll in %s\n", len(creds), time.Since(t0).Round(time.Millisecond))

	// The baseline's file server.
	fsc, err := benchproc.StartChild("fileserver", 0, false, []string{childEnv, fmt.Sprintf("GOMAXPROCS=%d", ni.GOMAXPROCS)},
		"-role", "fileserver", "-dir", o.dir)
	if err != nil {
		return nil, err
	}
	defer fsc.StopWithin(30 * time.Second)
	var fi childInfo
	if err := fsc.Read(&fi); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "file server (pid %d, GOMAXPROCS %d) at %s\n", fi.PID, fi.GOMAXPROCS, fi.API)

	fl, err := newFleet(creds, o.concurrency, o.rcvbuf, caPEM)
	if err != nil {
		return nil, err
	}
	out := &outcome{}
	type side struct {
		name  string
		api   string
		child *benchproc.Child
		res   *[]roundResult
		prof  string
	}
	sides := []side{
		{"strata", "https://" + ni.API, nd, &out.Strata, o.profile},
		{"fileserver", "https://" + fi.API, fsc, &out.FileServer, o.profile + ".fileserver"},
	}
	for i, s := range sides {
		if out.Protocol[i], err = fl.probe(ctx, s.api, sum); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(w, "%s: %s\n", s.name, out.Protocol[i])
	}
	for r := range o.rounds {
		// Odd rounds start with the file server (strata, fileserver,
		// fileserver, strata, ...): a machine whose load drifts over the
		// run favours neither side over two rounds.
		order := sides
		if r%2 == 1 {
			order = []side{sides[1], sides[0]}
		}
		for _, s := range order {
			if ctx.Err() != nil {
				return out, fmt.Errorf("-timeout %s reached", o.timeout)
			}
			profile := r == 0 && o.profile != ""
			if profile {
				if err := s.child.Call(nil, "profile-start", s.prof); err != nil {
					return out, err
				}
			}
			load := benchproc.LoadAvg()
			cpu0 := benchproc.CPUTime()
			if err := s.child.Call(nil, "begin"); err != nil {
				return out, err
			}
			res := fl.downloadAll(ctx, s.api, sum)
			if err := s.child.Call(&res.Server, "end"); err != nil {
				return out, err
			}
			if profile {
				if err := s.child.Call(nil, "profile-stop"); err != nil {
					return out, err
				}
			}
			res.Side, res.Load, res.Client = s.name, load, benchproc.CPUTime()-cpu0
			*s.res = append(*s.res, res)
			fmt.Fprintf(w, "round %d %s\n", r+1, res.line())
		}
	}
	out.print(w)
	return out, nil
}

func concurrencyOf(o options) int {
	if o.concurrency <= 0 || o.concurrency > o.devices {
		return o.devices
	}
	return o.concurrency
}

// line is a round's result on one line.
func (r *roundResult) line() string {
	errs := ""
	if r.Failed > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			errs += fmt.Sprintf(" %s:%d", k, r.Errors[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.RequestErrors)) {
		errs += fmt.Sprintf("; %d requests unanswered (%s), first: %s", r.RequestErrors[k], k, r.FirstRequestError[k])
	}
	return fmt.Sprintf("%-10s %d ok, %d failed%s; %d requests, %d resumes; %.2f GB in %s = %.1f MB/s; per download p50 %s, p99 %s, max %s; server CPU %.1f s (%.2f cores), devices' CPU %.1f s; load %s",
		r.Side, r.OK, r.Failed, errs, r.Requests, r.Resumes, float64(r.Bytes)/1e9, r.Wall.Round(time.Millisecond), r.throughput()/1e6,
		r.quantile(0.5).Round(time.Millisecond), r.quantile(0.99).Round(time.Millisecond), r.quantile(1).Round(time.Millisecond),
		r.Server.CPU.Seconds(), r.Server.CPU.Seconds()/max(r.Wall.Seconds(), 1e-9), r.Client.Seconds(), r.Load)
}

// print writes the two sides' throughput round by round and their ratio.
func (o *outcome) print(w io.Writer) {
	fmt.Fprintln(w, "=== strata beside http.FileServer (aggregate throughput, MB/s)")
	for i, ratio := range o.ratios() {
		s, f := &o.Strata[i], &o.FileServer[i]
		fmt.Fprintf(w, "round %d: strata %.1f, fileserver %.1f: %.2f× (target ≥ 0.8×); server CPU per GB served: strata %.2f s, fileserver %.2f s\n",
			i+1, s.throughput()/1e6, f.throughput()/1e6, ratio, cpuPerGB(s), cpuPerGB(f))
	}
	if r := o.ratios(); len(r) > 1 {
		slices.Sort(r)
		fmt.Fprintf(w, "ratio over %d rounds: %.2f× to %.2f×, median %.2f×\n", len(r), r[0], r[len(r)-1], median(r))
	}
}

// median of sorted values.
func median(v []float64) float64 {
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func cpuPerGB(r *roundResult) float64 {
	if r.Bytes == 0 {
		return 0
	}
	return r.Server.CPU.Seconds() / (float64(r.Bytes) / 1e9)
}

// writeArtifact writes size random bytes to dir/files/<sha256> and
// returns the SHA-256.
func writeArtifact(dir string, size int64) (string, error) {
	fd := filepath.Join(dir, filesDir)
	if err := os.MkdirAll(fd, 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(fd, "artifact.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	return sum, os.Rename(tmp, filepath.Join(fd, sum))
}

// release is the bench's release.
const (
	releaseName    = "dlbench"
	releaseVersion = "1.0.0"
)

// publish creates the release naming the artifact, with a manifest signed
// by key, and uploads the artifact's bytes, as strata ctl artifacts
// upload does.
func publish(ctx context.Context, admin *client.Client, key ed25519.PrivateKey, dir, sum string, size int64) error {
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: releaseName, Version: releaseVersion,
		Artifacts: []apitypes.Artifact{{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactBinary, Size: size, SHA256: sum}},
		Created:   now.Format(time.RFC3339), Expires: now.Add(24 * time.Hour).Format(time.RFC3339)}
	sm, err := m.Sign(key)
	if err != nil {
		return err
	}
	if _, _, err := admin.PutRelease(ctx, releaseName, releaseVersion, sm); err != nil {
		return fmt.Errorf("put release: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, filesDir, sum))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := admin.UploadArtifact(ctx, releaseName, releaseVersion, sum, 0, f, size)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if !st.Complete {
		return fmt.Errorf("upload: the node holds %d of %d bytes", st.Offset, size)
	}
	return nil
}

// enroll enrolls n devices (benchproc.Enroll).
func enroll(ctx context.Context, admin *client.Client, n int) ([]sim.Credentials, error) {
	return benchproc.Enroll(ctx, admin, n, "dlbench", "dlbench")
}
