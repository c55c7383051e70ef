package images_test

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/strata-dm/strata/deploy/build/images"
	"github.com/strata-dm/strata/deploy/build/internal/testbin"
)

const version = "v1.2.3-test"

var (
	repoRoot string
	binDir   string
	outDir   string
	opts     images.Options
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if repoRoot, err = testbin.RepoRoot(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		tmp, err := os.MkdirTemp("", "strata-images-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		binDir, outDir = filepath.Join(tmp, "bin"), filepath.Join(tmp, "images")
		if err := testbin.Build(repoRoot, binDir, version); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		opts = images.Options{
			BinDir: binDir, OutDir: outDir, Version: version, Revision: "0123456789abcdef",
			Arch: runtime.GOARCH, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		}
		if _, err := images.Build(opts); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// image reads the one image of the OCI layout in dir, checking the
// index's description of it.
func image(t *testing.T, dir string) (v1.Image, v1.Descriptor) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, want 1", dir, len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", d.MediaType)
	}
	if d.Annotations["org.opencontainers.image.ref.name"] != version {
		t.Errorf("ref name %q, want %q", d.Annotations["org.opencontainers.image.ref.name"], version)
	}
	if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH {
		t.Errorf("platform %+v", d.Platform)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, d
}

// TestImages reads each image back from its layout: configuration (user,
// entrypoint, command, ports, labels), layers (every file, its owner and
// mode), then runs the binary taken out of the layer.
func TestImages(t *testing.T) {
	var bases []v1.Hash
	for _, s := range images.Specs() {
		t.Run(s.Name, func(t *testing.T) {
			img, _ := image(t, filepath.Join(outDir, s.Name))
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if c.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532", c.User)
			}
			if !slices.Equal(c.Entrypoint, []string{"/usr/bin/" + s.Name}) || !slices.Equal(c.Cmd, s.Cmd) {
				t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
			}
			var ports []string
			for p := range c.ExposedPorts {
				ports = append(ports, p)
			}
			slices.Sort(ports)
			want := slices.Clone(s.Ports)
			slices.Sort(want)
			if !slices.Equal(ports, want) {
				t.Errorf("exposed ports %q, want %q", ports, want)
			}
			if s.Name == "strata" && !slices.Equal(want, []string{"7443/udp", "8443/tcp", "8883/tcp"}) {
				t.Errorf("the node exposes %q, want the API, MQTT and federation ports", want)
			}
			if _, ok := c.Volumes[s.StateDir]; !ok || c.WorkingDir != s.StateDir {
				t.Errorf("volumes %v, working dir %q, want %s", c.Volumes, c.WorkingDir, s.StateDir)
			}
			if !reflect.DeepEqual(c.Labels, s.Labels(opts)) {
				t.Errorf("labels %v, want %v", c.Labels, s.Labels(opts))
			}
			for _, k := range []string{"title", "version", "revision", "created", "source"} {
				if c.Labels["org.opencontainers.image."+k] == "" {
					t.Errorf("label org.opencontainers.image.%s missing", k)
				}
			}
			if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
				t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				if mt, _ := l.MediaType(); mt != types.OCILayer {
					t.Errorf("layer media type %s", mt)
				}
			}
			if len(layers) != 2 {
				t.Fatalf("%d layers, want 2 (base, binary)", len(layers))
			}
			d, _ := layers[0].Digest()
			bases = append(bases, d)

			bin := checkFiles(t, img, s)
			out, err := exec.Command(bin, "version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), s.Name+" "+version) {
				t.Errorf("%s version: %v, %q; want it to start with %q", s.Name, err, out, s.Name+" "+version)
			}
		})
	}
	if len(bases) == 2 && bases[0] != bases[1] {
		t.Errorf("the images do not share their base layer: %v", bases)
	}
}

// checkFiles walks the image's file system and writes its binary to a
// temporary file, whose path it returns.
func checkFiles(t *testing.T, img v1.Image, s images.Spec) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]*tar.Header{}
	bin := filepath.Join(t.TempDir(), s.Name)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(h.Name, "/")
		seen[name] = h
		if h.Mode&0o6000 != 0 {
			t.Errorf("%s: setuid or setgid (%o)", name, h.Mode)
		}
		owner := 0
		if name == s.StateDir {
			owner = images.UID
		}
		if h.Uid != owner || h.Gid != owner {
			t.Errorf("%s: owned by %d:%d, want %d", name, h.Uid, h.Gid, owner)
		}
		switch name {
		case "/usr/bin/" + s.Name:
			f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		case "/etc/passwd":
			data, _ := io.ReadAll(tr)
			if !strings.Contains(string(data), "\nstrata:x:65532:65532:") {
				t.Errorf("/etc/passwd has no user 65532:\n%s", data)
			}
		}
	}
	for name, mode := range map[string]int64{
		"/usr/bin/" + s.Name:                 0o755,
		s.StateDir:                           0o700,
		"/tmp":                               0o1777,
		"/etc/passwd":                        0o644,
		"/etc/group":                         0o644,
		"/etc/ssl/certs/ca-certificates.crt": 0o644,
	} {
		h, ok := seen[name]
		if !ok {
			t.Errorf("%s missing from the image", name)
			continue
		}
		if h.Mode&0o7777 != mode {
			t.Errorf("%s: mode %o, want %o", name, h.Mode&0o7777, mode)
		}
	}
	if h := seen["/etc/ssl/certs/ca-certificates.crt"]; h != nil && h.Size == 0 {
		t.Error("empty CA bundle")
	}
	if len(seen) > 20 {
		t.Errorf("%d entries in the image, want a minimal one: %v", len(seen), seen)
	}
	return bin
}

// TestReproducible builds the images again from the same inputs: the same
// manifests, to the byte.
func TestReproducible(t *testing.T) {
	again := opts
	again.OutDir = t.TempDir()
	if _, err := images.Build(again); err != nil {
		t.Fatal(err)
	}
	for _, s := range images.Specs() {
		_, a := image(t, filepath.Join(outDir, s.Name))
		_, b := image(t, filepath.Join(again.OutDir, s.Name))
		if a.Digest != b.Digest {
			t.Errorf("%s: built twice, digests %s and %s", s.Name, a.Digest, b.Digest)
		}
	}
}

// TestDockerfile holds the Dockerfile (not built here: no Docker daemon)
// to what make images builds: a stage per image with the same user,
// entrypoint, command, ports and state folder, static binaries.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string][]string{} // stage name -> its instructions
	var stage string
	var cont string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cont = cont+line, ""
		if fields := strings.Fields(line); strings.EqualFold(fields[0], "FROM") {
			stage = ""
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				stage = fields[3]
			}
		}
		stages[stage] = append(stages[stage], line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(stages["build"], func(l string) bool { return strings.Contains(l, "CGO_ENABLED=0") }) {
		t.Error("Dockerfile: the build stage does not set CGO_ENABLED=0")
	}
	for _, s := range images.Specs() {
		lines := stages[s.Name]
		if lines == nil {
			t.Errorf("Dockerfile: no stage %q", s.Name)
			continue
		}
		want := []string{
			"USER " + images.User,
			"WORKDIR " + s.StateDir,
			"VOLUME " + s.StateDir,
			"ENTRYPOINT " + jsonArray(s.Entrypoint),
			"CMD " + jsonArray(s.Cmd),
			"COPY --from=build /out/" + s.Name + " " + s.Entrypoint[0],
			"COPY --from=build --chown=" + images.User + " --chmod=0700 /out/state " + s.StateDir,
		}
		if len(s.Ports) > 0 {
			want = append(want, "EXPOSE "+strings.Join(s.Ports, " "))
		}
		for _, w := range want {
			if !slices.Contains(lines, w) {
				t.Errorf("Dockerfile stage %s: no line %q", s.Name, w)
			}
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "EXPOSE") && len(s.Ports) == 0 {
				t.Errorf("Dockerfile stage %s exposes ports: %q", s.Name, l)
			}
		}
		if !slices.ContainsFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, "LABEL ") && strings.Contains(l, `org.opencontainers.image.title="`+s.Name+`"`)
		}) {
			t.Errorf("Dockerfile stage %s: no org.opencontainers.image.title label", s.Name)
		}
	}
}

func jsonArray(a []string) string {
	b, _ := json.Marshal(a)
	return strings.ReplaceAll(string(b), `","`, `", "`)
}
