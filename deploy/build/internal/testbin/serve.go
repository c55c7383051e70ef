package testbin

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Node is a running strata serve started by Serve.
type Node struct {
	URL    string // https://127.0.0.1:PORT, from its "node started" log line
	cmd    *exec.Cmd
	exited chan error
	done   bool
}

// Serve starts cmd, a strata serve with --log-format json, logging its
// output to t, and waits (at most a minute) for it to log that it
// started. The node is killed at the end of the test unless Stop stopped
// it.
func Serve(t *testing.T, cmd *exec.Cmd) *Node {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &Node{cmd: cmd, exited: make(chan error, 1)}
	go func() { n.exited <- cmd.Wait(); pw.Close() }()

	// The log goes to t; the URL comes from the first "node started" line
	// that has one. The reader reads to the end; the cleanup waits for it.
	url := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			t.Log(sc.Text())
			var rec struct {
				Msg string `json:"msg"`
				API string `json:"api"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "node started" && rec.API != "" {
				select {
				case url <- rec.API:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		if !n.done {
			cmd.Process.Kill()
			<-n.exited
		}
		<-logDone
	})
	select {
	case n.URL = <-url:
	case err := <-n.exited:
		n.done = true
		t.Fatalf("strata serve exited before serving: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("strata serve did not start within a minute")
	}
	return n
}

// Ready checks that the node answers GET /readyz over TLS, trusting the
// CA in caFile: 200, or 501 (a node that is not a cluster has no
// readiness to report, and says so).
func (n *Node) Ready(t *testing.T, caFile string) {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s: no certificate", caFile)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(n.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("GET /readyz: %s %s", resp.Status, body)
	}
}

// Stop sends SIGTERM and expects a clean exit within 45 s (the node drains
// for at most 30 s).
func (n *Node) Stop(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n.exited:
		n.done = true
		if err != nil {
			t.Fatalf("strata serve after SIGTERM: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("strata serve did not stop within 45s of SIGTERM")
	}
}

// OwnedBy fails t for every file under dir not owned by uid.
func OwnedBy(t *testing.T, dir string, uid uint32) {
	t.Helper()
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != uid {
			t.Errorf("%s: owned by uid %d, want %d", path, st.Uid, uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Traversable lets every user through dir and the folders above it, up to
// the temporary folder: t.TempDir's folders are its owner's only, and the
// tests run binaries as other users in them.
func Traversable(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}
