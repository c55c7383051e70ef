package images_test

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/strata-dm/strata/deploy/build/images"
)

// TestNodeServes runs the node of the strata image as a container would:
// its file system unpacked, as the image's user (when the test is root),
// with its folder in the image's volume: strata init there, then the
// image's default command (on a free loopback port), which must answer
// /readyz over TLS and stop cleanly on SIGTERM.
func TestNodeServes(t *testing.T) {
	var spec images.Spec
	for _, s := range images.Specs() {
		if s.Name == "strata" {
			spec = s
		}
	}
	img, _ := image(t, filepath.Join(outDir, spec.Name))
	fsRoot := unpack(t, img)
	state := filepath.Join(fsRoot, spec.StateDir)
	bin := filepath.Join(fsRoot, spec.Entrypoint[0])

	cmdOf := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Dir = state
		cmd.Env = []string{"PATH=/usr/bin", "HOME=" + state}
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: images.UID, Gid: images.GID}}
		}
		return cmd
	}
	if out, err := cmdOf("init", "--dir", state, "--name", "image-test", "--api-addr", "127.0.0.1:0").CombinedOutput(); err != nil {
		t.Fatalf("strata init: %v\n%s", err, out)
	}

	// The image's command, with the config where the volume is here.
	args := append([]string(nil), spec.Cmd...)
	for i, a := range args {
		if a == filepath.Join(spec.StateDir, "strata.yaml") {
			args[i] = filepath.Join(state, "strata.yaml")
		}
	}
	serve := cmdOf(args...)
	pr, pw := io.Pipe()
	serve.Stdout, serve.Stderr = pw, pw
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait(); pw.Close() }()

	// The log, to the test's log; the API's URL from the first "node
	// started" line. The reader keeps reading to the end, and the test
	// waits for it.
	apiURL := make(chan string, 1)
	logDone := make(chan struct{})
	defer func() { <-logDone }()
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
				case apiURL <- rec.API:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	stopped := false
	defer func() {
		if !stopped {
			serve.Process.Kill()
			<-exited
		}
	}()
	var base string
	select {
	case base = <-apiURL:
	case err := <-exited:
		stopped = true
		t.Fatalf("strata serve exited before serving: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("strata serve did not start within 60s")
	}

	caPEM, err := os.ReadFile(filepath.Join(state, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// 501: a node that is not a cluster has no readiness to report, and
	// answers so; anything else but 200 is an error.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("GET /readyz: %s %s", resp.Status, body)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("strata serve after SIGTERM: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("strata serve did not stop within 45s of SIGTERM")
	}

	// Everything the node wrote belongs to the image's user.
	if os.Geteuid() == 0 {
		err := filepath.Walk(state, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != images.UID {
				t.Errorf("%s: owned by uid %d", path, st.Uid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// unpack writes the image's file system into a new folder, with owners
// when the test is root; the folders above it are opened to the image's
// user.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	for d := root; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o055); err != nil {
				t.Fatal(err)
			}
		}
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean("/" + h.Name)
		if strings.Contains(h.Name, "..") {
			t.Fatalf("layer entry %q", h.Name)
		}
		p := filepath.Join(root, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("layer entry %q of type %c", h.Name, h.Typeflag)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func modeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}
