package images_test

import (
	"archive/tar"
	"context"
	"io"
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
	"github.com/strata-dm/strata/deploy/build/internal/testbin"
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
	node := testbin.Serve(t, cmdOf(args...))
	node.Ready(t, filepath.Join(state, "tls", "ca.crt"))
	node.Stop(t)
	if os.Geteuid() == 0 {
		testbin.OwnedBy(t, state, images.UID)
	}
}

// unpack writes the image's file system into a new folder, with owners
// when the test is root; the folders above it let the image's user
// through.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	testbin.Traversable(t, root)
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
