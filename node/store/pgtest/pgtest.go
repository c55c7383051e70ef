// Package pgtest starts throwaway PostgreSQL servers for tests: initdb into
// a temporary directory, postgres on a free 127.0.0.1 port (and a unix
// socket in that directory only), one fresh database per test.
//
// The server binaries come from /usr/lib/postgresql/<major>/bin (the
// Debian/Ubuntu layout; the newest major wins) or from $STRATA_PG_BIN. When
// they are missing, tests skip with a hint, except under CI=true, where they
// fail: CI must never silently skip the PostgreSQL suite.
//
// When the tests run as root, the server runs as the "postgres" user, which
// the Debian package creates (PostgreSQL refuses to run as root).
//
// StartReplica adds a streaming replica of a server (pg_basebackup -R);
// Shutdown and Restart take a server down and bring it back on its port.
//
// One server is shared by all tests of a test binary (Shared); the package
// that uses it calls Main from its TestMain so that the server is stopped and
// its directory removed when the tests end. Should the test binary die
// first, the server gets SIGQUIT from the kernel (parent-death signal).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is one running PostgreSQL server.
type Cluster struct {
	Dir     string // data directory's parent; removed by Stop
	Port    int
	bin     string
	cred    *syscall.Credential // nil: run as ourselves
	user    string              // database superuser
	durable bool                // fsync and full-page writes on

	mu     sync.Mutex    // guards exited and proc across Shutdown/Restart
	exited chan struct{} // closed when the server process has exited
	proc   *os.Process
	dbs    atomic.Int64
	stop   sync.Once
}

// BinDir returns the directory holding initdb and postgres, or "" if none.
func BinDir() string {
	if d := os.Getenv("STRATA_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return ""
		}
		return d
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(found, func(i, j int) bool { return major(found[i]) > major(found[j]) })
	for _, f := range found {
		if _, err := os.Stat(filepath.Join(filepath.Dir(f), "postgres")); err == nil {
			return filepath.Dir(f)
		}
	}
	return ""
}

func major(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// Missing skips the test, or fails it under CI=true, because no server
// binaries were found.
func Missing(tb testing.TB) {
	tb.Helper()
	const msg = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (or $STRATA_PG_BIN); " +
		"install them with `apt-get install postgresql` or `make test-deps`"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg + " (CI=true: not skipping)")
	}
	tb.Skip(msg)
}

// Options tune a cluster started by StartWith.
type Options struct {
	// Durable keeps fsync and full-page writes on, as in production, for
	// benchmarks of durable writes. Tests leave it off for speed.
	Durable bool
}

// Start initialises and starts a new server. The caller must Stop it.
func Start() (*Cluster, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(opts Options) (*Cluster, error) {
	bin := BinDir()
	if bin == "" {
		return nil, errors.New("pgtest: no PostgreSQL binaries")
	}
	c, err := newCluster(bin, opts.Durable)
	if err != nil {
		return nil, err
	}
	if err := c.initdb(); err != nil {
		os.RemoveAll(c.Dir)
		return nil, err
	}
	if err := c.startOnFreePort(); err != nil {
		os.RemoveAll(c.Dir)
		return nil, err
	}
	return c, nil
}

// newCluster makes the cluster's directory, owned by the user the server
// will run as.
func newCluster(bin string, durable bool) (*Cluster, error) {
	c := &Cluster{bin: bin, user: "postgres", durable: durable}
	dir, err := os.MkdirTemp("", "strata-pgtest-")
	if err != nil {
		return nil, err
	}
	c.Dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs a postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	return c, nil
}

// startOnFreePort starts the server on a free port. A port found free may
// be taken before the server binds it: retry.
func (c *Cluster) startOnFreePort() error {
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		err = c.start(port)
		if err == nil || attempt == 2 {
			return err
		}
	}
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

func (c *Cluster) initdb() error {
	cmd := c.command("initdb", "-D", c.data(), "-U", c.user, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	// Replicas (StartReplica) stream from 127.0.0.1. initdb's own rules
	// allow this today; say so rather than rely on its defaults.
	hba, err := os.OpenFile(filepath.Join(c.data(), "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = hba.WriteString("host replication all 127.0.0.1/32 trust\n")
	if cerr := hba.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

// start starts the server on port and waits until it accepts connections.
func (c *Cluster) start(port int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Port = port
	logPath := filepath.Join(c.Dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := c.command("postgres", "-D", c.data(),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+c.Dir,
		// A throwaway server: durability of the host is not under test
		// (synchronous_commit stays on, so commits still wait for the WAL
		// write), speed is; benchmarks ask for the real thing.
		"-c", "fsync="+onOff(c.durable),
		"-c", "full_page_writes="+onOff(c.durable),
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
		// Streaming replicas (StartReplica); a replica gets the same
		// settings, as a standby needs at least its primary's limits.
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=10",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The kernel sends SIGQUIT to the server when the thread that started
	// it exits, so the thread is kept for the server's lifetime.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	started := make(chan error, 1)
	exited := make(chan struct{})
	c.exited = exited
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(exited)
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	c.proc = cmd.Process
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.exited:
			c.proc = nil
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("pgtest: postgres exited on port %d:\n%s", port, tail(log, 2000))
		case <-ctx.Done():
			c.proc.Signal(syscall.SIGQUIT)
			<-c.exited
			c.proc = nil
			return fmt.Errorf("pgtest: postgres not ready on port %d: %v", port, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// DSN returns the URL of database db on the server, as superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", c.user, c.Port, db)
}

// Stop shuts the server down (fast shutdown, then immediate) and removes
// its directory. Stopping twice is safe.
func (c *Cluster) Stop() {
	c.stop.Do(func() {
		c.Shutdown()
		os.RemoveAll(c.Dir)
	})
}

// Shutdown stops the server (fast shutdown, then immediate) and keeps its
// data: Restart brings it back. Shutting down a stopped server does nothing.
func (c *Cluster) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return
	}
	c.proc.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.proc.Signal(syscall.SIGQUIT)
		<-c.exited
	}
	c.proc = nil
}

// Restart starts a server stopped by Shutdown again, on the same port, and
// waits until it accepts connections.
func (c *Cluster) Restart() error {
	c.mu.Lock()
	running := c.proc != nil
	c.mu.Unlock()
	if running {
		return errors.New("pgtest: restart of a running server")
	}
	return c.start(c.Port)
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates an empty database for the test, dropped when the
// test ends, and returns its DSN.
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	name = fmt.Sprintf("t%d_%s", c.dbs.Add(1), name)
	if len(name) > 63 {
		name = name[:63]
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		admin, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			tb.Error(err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database: %v", err)
		}
	})
	return c.DSN(name)
}

// shared is the one server of this test binary. It is package state on
// purpose: starting a server per test would cost ~1 s each.
var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the test binary's server, starting it on first use; it
// skips or fails the test (see Missing) when there are no binaries.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	if BinDir() == "" {
		Missing(tb)
	}
	shared.once.Do(func() { shared.c, shared.err = Start() })
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.c
}

// Main runs the tests and then stops the shared server, if one started.
// Use it as: func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if shared.c != nil {
		shared.c.Stop()
	}
	return code
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
