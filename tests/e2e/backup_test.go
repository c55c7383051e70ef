package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// An online backup taken under write load, restored into an empty store,
// holds every write acknowledged before the backup started, and none
// asked for after it ended; on both stores.
func TestBackupUnderLoad(t *testing.T) {
	n := initNode(t, "hq")
	n.start()
	backupRestore(t, n, nil, func(r *nodeDir) []string {
		return []string{"--config", r.config()}
	})
}

func TestBackupUnderLoadOnPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	dsn := pg.NewDatabase(t)
	n := initNode(t, "hq", "--store", "postgres", "--dsn", dsn)
	n.start()
	restored := pg.NewDatabase(t)
	backupRestore(t, n, func(yaml string) string {
		if !strings.Contains(yaml, dsn) {
			t.Fatalf("the config does not name the dsn:\n%s", yaml)
		}
		return strings.ReplaceAll(yaml, dsn, restored)
	}, func(r *nodeDir) []string {
		return []string{"--config", r.config()}
	})
}

// write is one context write through the API.
type write struct {
	path            string
	i               int
	asked, answered time.Time
}

// writeLoad runs writers that each put contexts under /load until
// stopped, recording every write the node acknowledged.
type writeLoad struct {
	mu    sync.Mutex
	acked []write // guarded by mu
	errs  []error // guarded by mu
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWriteLoad(c *client.Client, writers int) *writeLoad {
	l := &writeLoad{stop: make(chan struct{})}
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				wr := write{path: fmt.Sprintf("/load/w%d/c%d", w, i), i: i, asked: time.Now()}
				_, _, err := c.PutContext(context.Background(), wr.path, client.ContextUpdate{Type: "pump",
					Variables: map[string]json.RawMessage{"i": json.RawMessage(fmt.Sprint(i)), "pad": json.RawMessage(`"` + strings.Repeat("x", 512) + `"`)}})
				wr.answered = time.Now()
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, fmt.Errorf("%s: %w", wr.path, err))
				} else {
					l.acked = append(l.acked, wr)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *writeLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitFor polls until at least k writes were acknowledged.
func (l *writeLoad) waitFor(t *testing.T, k int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.count() < k {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes acknowledged", l.count())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func (l *writeLoad) end(t *testing.T) []write {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.errs) > 0 {
		t.Fatalf("%d writes failed under the backup, first: %v", len(l.errs), l.errs[0])
	}
	return l.acked
}

// backupRestore takes strata backup of n under write load, restores it
// into a copy of n's folder without its data directory (the config,
// TLS files and admin token are what an operator keeps beside the
// backup) and checks the restored node. editConfig, when set, changes
// the copy's strata.yaml; restoreArgs names where strata restore puts it.
func backupRestore(t *testing.T, n *nodeDir, editConfig func(string) string, restoreArgs func(*nodeDir) []string) {
	ctx := context.Background()
	load := startWriteLoad(n.admin(), 4)
	load.waitFor(t, 300)

	file := filepath.Join(t.TempDir(), "hq.strata")
	started := time.Now()
	out, err := exec.Command(strataBin, "backup", "--config", n.config(), "--out", file, "-o", "json").CombinedOutput()
	ended := time.Now()
	if err != nil {
		t.Fatalf("strata backup: %v\n%s", err, out)
	}
	var res struct {
		File    string  `json:"file"`
		Bytes   int64   `json:"bytes"`
		Store   string  `json:"store"`
		Node    string  `json:"node"`
		LastSeq uint64  `json:"last_seq"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("strata backup -o json: %v\n%s", err, out)
	}
	if st, err := os.Stat(file); err != nil || st.Size() != res.Bytes || res.Node != "hq" || res.LastSeq == 0 {
		t.Fatalf("backup %+v, file %v", res, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("%s.tmp left: %v", file, err)
	}
	t.Logf("backup of %d bytes (%s), last seq %d, in %.2fs (%.1f MB/s)", res.Bytes, res.Store, res.LastSeq, res.Seconds, float64(res.Bytes)/1e6/res.Seconds)
	// Writes go on after the backup, then stop.
	k := load.count()
	load.waitFor(t, k+200)
	acked := load.end(t)

	// Never over an existing file.
	if out, err := exec.Command(strataBin, "backup", "--config", n.config(), "--out", file).CombinedOutput(); err == nil || !strings.Contains(string(out), "exists") {
		t.Fatalf("backup over an existing file: %v\n%s", err, out)
	}

	// The restored node's folder: n's files, an empty data directory,
	// its own port.
	r := &nodeDir{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	copyFile(t, filepath.Join(n.dir, "admin.token"), filepath.Join(r.dir, "admin.token"))
	for _, f := range []string{"ca.crt", "ca.key", "api.crt", "api.key"} {
		copyFile(t, filepath.Join(n.dir, "tls", f), filepath.Join(r.dir, "tls", f))
	}
	yaml, err := os.ReadFile(n.config())
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(yaml), n.addr, r.addr)
	if editConfig != nil {
		cfg = editConfig(cfg)
	}
	if err := os.WriteFile(r.config(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// A cut backup restores nothing.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.strata")
	if err := os.WriteFile(cut, data[:len(data)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(strataBin, append([]string{"restore", "--from", cut}, restoreArgs(r)...)...).CombinedOutput(); err == nil || !strings.Contains(string(out), "cut short") {
		t.Fatalf("restore of a cut backup: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("a failed restore left the data directory: %v", err)
	}

	out, err = exec.Command(strataBin, append([]string{"restore", "--from", file}, restoreArgs(r)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("strata restore: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// Once: the place is no longer empty.
	if out, err := exec.Command(strataBin, append([]string{"restore", "--from", file}, restoreArgs(r)...)...).CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Fatalf("a second restore: %v\n%s", err, out)
	}

	r.start()
	c := r.admin()
	before, after, later := 0, 0, 0
	for _, w := range acked {
		got, err := c.GetContext(ctx, w.path)
		switch {
		case w.answered.Before(started):
			before++
			if err != nil {
				t.Fatalf("%s, acknowledged before the backup started, is not in it: %v", w.path, err)
			}
			if v := string(got.Variables["i"].Value); v != fmt.Sprint(w.i) {
				t.Fatalf("%s: i = %s, want %d", w.path, v, w.i)
			}
		case w.asked.After(ended):
			after++
			if err == nil {
				t.Fatalf("%s, asked for after the backup ended, is in it", w.path)
			}
		case err == nil:
			later++ // under way while the backup started: either way
		}
	}
	if before < 300 || after < 100 {
		t.Fatalf("%d writes before the backup, %d after it", before, after)
	}
	t.Logf("restored: all %d writes acknowledged before the backup, %d of those under way meanwhile, none of the %d asked for after", before, later, after)
	// The restored node carries on: it writes, and numbers after the backup's log.
	if _, _, err := c.PutContext(ctx, "/load/after-restore", client.ContextUpdate{Type: "pump"}); err != nil {
		t.Fatal(err)
	}
	r.stop()
	n.stop()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
