// Package e2e runs the real strata binary: init, serve, ctl, kill -9 and
// restart, talking to it only over its public interfaces.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/store/pgtest"
)

var strataBin, agentBin, simBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	strataBin = filepath.Join(dir, "strata")
	agentBin = filepath.Join(dir, "strata-agent")
	simBin = filepath.Join(dir, "strata-sim")
	for bin, pkg := range map[string]string{strataBin: "node/cmd/strata", agentBin: "probes/agent/cmd/strata-agent", simBin: "probes/sim/cmd/strata-sim"} {
		build := exec.Command("go", "build", "-o", bin, "github.com/strata-dm/strata/"+pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			os.Exit(1)
		}
	}
	code := pgtest.Main(m) // stops the PostgreSQL server if a test started one
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback TCP address that was free a moment ago, on
// a port below the kernel's ephemeral range (32768 and up on Linux): a
// port the kernel hands out for port 0 can be taken again, before the
// process it is meant for binds it, as the local end of any outgoing
// connection (the suite makes thousands), and a port below that range
// cannot.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeBelowEphemeral(t, func(addr string) (io.Closer, error) { return net.Listen("tcp", addr) })
}

// freeUDP is freeAddr for UDP (QUIC listeners; QUIC dials bind ephemeral
// UDP ports).
func freeUDP(t *testing.T) string {
	t.Helper()
	return freeBelowEphemeral(t, func(addr string) (io.Closer, error) { return net.ListenPacket("udp", addr) })
}

func freeBelowEphemeral(t *testing.T, listen func(addr string) (io.Closer, error)) string {
	t.Helper()
	for range 1000 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		l, err := listen(addr)
		if err != nil {
			continue // in use: another
		}
		l.Close()
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// proc is one running strata serve.
type proc struct {
	cmd    *exec.Cmd
	out    *logBuf
	exited chan struct{} // closed once the process is gone
	err    error         // how it ended; set before exited is closed
}

// gone reports whether the process has ended, and how.
func (p *proc) gone() (bool, error) {
	select {
	case <-p.exited:
		return true, p.err
	default:
		return false, nil
	}
}

// nodeDir is an initialised node directory.
type nodeDir struct {
	t       *testing.T
	bin     string // the strata binary; "" : strataBin (this tree's)
	dir     string
	addr    string
	p       *proc
	lastOut *logBuf // the output of the last process started, running or not
	crashed error   // how the last process ended, when it ended before kill asked it to

	conns     sync.Once
	connsBase *client.Client // every client of this node shares its connections
	watches   watches        // lines awaited in the output of this node's processes
}

// watches are the lines a test waits for in a node's output, across its
// restarts.
type watches struct {
	mu   sync.Mutex
	list []*watch // guarded by mu
}

type watch struct {
	substr string
	seen   chan struct{}
}

// watch returns a channel closed once a line containing substr is
// written by this node's process (the running one or a later one).
// Cancel an unmet watch with unwatch.
func (n *nodeDir) watch(substr string) *watch {
	w := &watch{substr: substr, seen: make(chan struct{})}
	n.watches.mu.Lock()
	n.watches.list = append(n.watches.list, w)
	n.watches.mu.Unlock()
	return w
}

func (n *nodeDir) unwatch(w *watch) {
	n.watches.mu.Lock()
	defer n.watches.mu.Unlock()
	n.watches.list = slices.DeleteFunc(n.watches.list, func(x *watch) bool { return x == w })
}

// lines closes the watches that line meets.
func (ws *watches) line(line []byte) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.list = slices.DeleteFunc(ws.list, func(w *watch) bool {
		if bytes.Contains(line, []byte(w.substr)) {
			close(w.seen)
			return true
		}
		return false
	})
}

// logBuf is a process's output: safe to read while the process writes
// it, and each complete line is shown to the node's watches.
type logBuf struct {
	ws *watches

	mu      sync.Mutex
	b       bytes.Buffer // guarded by mu
	partial []byte       // the last line so far; guarded by mu
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.ws.line(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	l.partial = slices.Clip(l.partial)
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// initNode runs strata init for a node named name; extra are more init
// flags (e.g. --store postgres --dsn DSN).
func initNode(t *testing.T, name string, extra ...string) *nodeDir {
	t.Helper()
	return initNodeWith(t, strataBin, name, extra...)
}

// initNodeWith is initNode with another strata binary (e.g. an older
// release's), which every command on the node then uses.
func initNodeWith(t *testing.T, bin, name string, extra ...string) *nodeDir {
	t.Helper()
	n := &nodeDir{t: t, bin: bin, dir: t.TempDir(), addr: freeAddr(t)}
	args := append([]string{"init", "--dir", n.dir, "--name", name, "--api-addr", n.addr}, extra...)
	out, err := exec.Command(n.strata(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("strata init: %v\n%s", err, out)
	}
	return n
}

func (n *nodeDir) config() string { return filepath.Join(n.dir, "strata.yaml") }

// strata is the node's strata binary.
func (n *nodeDir) strata() string {
	if n.bin != "" {
		return n.bin
	}
	return strataBin
}

// start runs strata serve and waits until /readyz answers.
func (n *nodeDir) start() {
	n.t.Helper()
	cmd := exec.Command(n.strata(), "serve", "--config", n.config(), "--log-level", "debug")
	out := &logBuf{ws: &n.watches}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	n.p, n.lastOut = p, out
	n.t.Cleanup(func() { n.kill() })
	c := n.admin()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			n.t.Fatalf("strata serve exited: %v\n%s", p.err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("node not ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *nodeDir) kill() {
	if n.p == nil {
		return
	}
	if gone, err := n.p.gone(); gone {
		n.crashed = fmt.Errorf("exited by itself: %v", err)
	}
	n.p.cmd.Process.Signal(syscall.SIGKILL)
	<-n.p.exited
	n.p = nil
}

// stop sends SIGTERM and waits for a clean exit.
func (n *nodeDir) stop() {
	n.t.Helper()
	n.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.p.exited:
		if err := n.p.err; err != nil {
			n.t.Fatalf("strata serve exited with %v after SIGTERM\n%s", err, n.p.out.String())
		}
	case <-time.After(30 * time.Second):
		n.t.Fatalf("strata serve did not stop on SIGTERM\n%s", n.p.out.String())
	}
	n.p = nil
}

func (n *nodeDir) caPEM() []byte {
	ca, err := os.ReadFile(filepath.Join(n.dir, "tls", "ca.crt"))
	if err != nil {
		n.t.Fatal(err)
	}
	return ca
}

// client is a client of this node with token. Every client of the node
// shares one pool of connections, as one program would: a test that polls
// the node opens no more connections than it uses at once (the API
// refuses more than 256 open from one address).
func (n *nodeDir) client(token string) *client.Client {
	n.t.Helper()
	n.conns.Do(func() {
		c, err := client.New("https://"+n.addr, "", n.caPEM())
		if err != nil {
			n.t.Fatal(err)
		}
		n.connsBase = c
	})
	if n.connsBase == nil {
		n.t.Fatal("no client")
	}
	return n.connsBase.WithToken(token)
}

func (n *nodeDir) admin() *client.Client {
	tok, err := os.ReadFile(filepath.Join(n.dir, "admin.token"))
	if err != nil {
		n.t.Fatal(err)
	}
	return n.client(strings.TrimSpace(string(tok)))
}

// ctl runs strata ctl against this node and returns stdout.
func (n *nodeDir) ctl(args ...string) (string, error) {
	cmd := exec.Command(n.strata(), append([]string{"ctl", "--config", n.config()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}
