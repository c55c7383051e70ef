package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
)

// demoProc is a running strata demo with the lines it printed.
type demoProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	lines  chan string // stdout, line by line; closed at EOF
	done   chan error
	seen   map[string][]string // values of the "key: value" lines read so far
}

// syncBuffer is a bytes.Buffer written by exec's copier and read by the
// test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDemo(t *testing.T, args ...string) *demoProc {
	t.Helper()
	cmd := exec.Command(strataBin, append([]string{"demo"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &demoProc{t: t, cmd: cmd, stderr: &syncBuffer{}, lines: make(chan string, 64), done: make(chan error, 1), seen: map[string][]string{}}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Go(func() {
		defer close(d.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	})
	go func() {
		readers.Wait() // Wait closes the pipe: read it all first
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// value waits for the line "key: value" and returns value.
func (d *demoProc) value(key string, timeout time.Duration) string {
	d.t.Helper()
	return d.values(key, 1, timeout)[0]
}

// values waits for n lines "key: ..." and returns their values.
func (d *demoProc) values(key string, n int, timeout time.Duration) []string {
	d.t.Helper()
	deadline := time.After(timeout)
	for len(d.seen[key]) < n {
		select {
		case l, ok := <-d.lines:
			if !ok {
				d.t.Fatalf("strata demo's output ended before %d %q lines:\n%s", n, key, d.stderr.String())
			}
			d.t.Logf("demo: %s", l)
			if k, v, ok := strings.Cut(l, ": "); ok {
				d.seen[k] = append(d.seen[k], v)
			}
		case <-deadline:
			d.t.Fatalf("strata demo did not print %d %q lines within %v:\n%s", n, key, timeout, d.stderr.String())
		}
	}
	return d.seen[key][:n]
}

var demoDevicesLine = regexp.MustCompile(`^(\d+) on (probe-[ab]) `)

// TestDemo runs strata demo as a user does: it reads the console URL and
// the login it prints, logs in with them through the API, waits until HQ
// sees every simulated device of both probes two tiers down (with their
// labels), calls a function on one of them, then stops the demo with
// SIGINT and expects exit status 0 and its temporary folder gone.
func TestDemo(t *testing.T) {
	const devices = 120
	d := startDemo(t, "--devices", strconv.Itoa(devices))
	console := d.value("console", 2*time.Minute)
	user, password := d.value("user", time.Second), d.value("password", time.Second)
	caPath, _, _ := strings.Cut(d.value("ca", time.Second), " ")
	dataDir, _, _ := strings.Cut(d.value("data", 10*time.Second), " ")
	if !regexp.MustCompile(`^https://127\.0\.0\.1:\d+/$`).MatchString(console) || user != "admin" || len(password) < 16 {
		t.Fatalf("console %q user %q password %q", console, user, password)
	}

	// The devices line of each probe says how many it has.
	perProbe := map[string]int{}
	for _, v := range d.values("devices", 2, 10*time.Second) {
		m := demoDevicesLine.FindStringSubmatch(v)
		if m == nil {
			t.Fatalf("devices line %q", v)
		}
		perProbe[m[2]], _ = strconv.Atoi(m[1])
	}
	if perProbe["probe-a"]+perProbe["probe-b"] != devices {
		t.Fatalf("devices per probe %v, want %d in all", perProbe, devices)
	}

	ca, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(strings.TrimSuffix(console, "/"), "", ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := anon.Login(ctx, user, password, 0)
	if err != nil {
		t.Fatalf("login with the printed user and password: %v", err)
	}
	hq := anon.WithToken(s.Token)

	var sample string
	for probe, n := range perProbe {
		subtree := "/peers/eu/peers/" + probe + "/devices"
		tstest.WaitForErr(t, 2*time.Minute, fmt.Sprintf("hq sees the %d devices of %s", n, probe), func() (bool, error) {
			var found []client.Context
			q := client.SearchQuery{Path: subtree, Type: "device", Limit: 1000}
			for {
				page, err := hq.Search(ctx, q)
				if err != nil {
					return false, err
				}
				found = append(found, page.Contexts...)
				if page.Next == "" {
					break
				}
				q.After = page.Next
			}
			if len(found) != n {
				return false, fmt.Errorf("%d devices under %s", len(found), subtree)
			}
			for _, c := range found {
				if c.Labels["site"] == "" || c.Labels["line"] == "" || c.Labels["model"] == "" {
					return false, fmt.Errorf("%s has labels %v", c.Path, c.Labels)
				}
			}
			sample = found[0].Path
			return true, nil
		})
	}

	// A function of a device two tiers below HQ answers through the links.
	tstest.WaitForErr(t, time.Minute, "a call on "+sample, func() (bool, error) {
		j, _, err := hq.CallFunction(ctx, sample, "set-setpoint", json.RawMessage(`{"value":4.5}`), 10*time.Second)
		if err != nil {
			return false, err
		}
		if j.State != "succeeded" || !strings.Contains(string(j.Result), `"value":4.5`) {
			return false, fmt.Errorf("job %s: %s %s", j.ID, j.State, j.Result)
		}
		return true, nil
	})

	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("strata demo after SIGINT: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("strata demo did not stop after SIGINT:\n%s", d.stderr.String())
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the demo's temporary folder %s is still there (%v)", dataDir, err)
	}
}
