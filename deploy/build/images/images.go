// Package images builds the container images of strata and strata-agent
// without a container daemon or any download: each is a static binary on
// a base layer assembled here (an /etc/passwd with the non-root user, the
// build machine's CA certificates, /tmp), written as an OCI image layout
// with go-containerregistry. The Dockerfile at the repository's root
// builds the same images with Docker; a test holds the two to the same
// user and ports.
package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The non-root user every image runs as (distroless's "nonroot" ids, so a
// volume prepared for one works for the other).
const (
	UID      = 65532
	GID      = 65532
	UserName = "strata"
	User     = "65532:65532"
)

// Spec describes one image.
type Spec struct {
	Name        string   // the binary, also the layout's folder
	Description string   // org.opencontainers.image.description
	Entrypoint  []string // the binary, in /usr/bin
	Cmd         []string
	StateDir    string   // owned by User, mode 0700: the volume
	Ports       []string // exposed: "8443/tcp"
}

// Specs are the images Build makes.
//
// The node's ports are those docs/configuration.md gives: the operator
// API's default 8443 (api.addr), MQTT over TLS conventionally 8883
// (mqtt.addr), federation (QUIC, UDP) conventionally 7443
// (federation.addr); strata init --api-addr 0.0.0.0:8443 --mqtt-addr
// 0.0.0.0:8883 --federation-addr 0.0.0.0:7443 listens on them.
func Specs() []Spec {
	return []Spec{
		{
			Name:        "strata",
			Description: "Strata device management node",
			Entrypoint:  []string{"/usr/bin/strata"},
			Cmd:         []string{"serve", "--config", "/var/lib/strata/strata.yaml", "--log-format", "json"},
			StateDir:    "/var/lib/strata",
			Ports:       []string{"8443/tcp", "8883/tcp", "7443/udp"},
		},
		{
			Name:        "strata-agent",
			Description: "Strata device agent",
			Entrypoint:  []string{"/usr/bin/strata-agent"},
			Cmd:         []string{"run", "--state", "/var/lib/strata-agent", "--log-format", "json"},
			StateDir:    "/var/lib/strata-agent",
		},
	}
}

// Options of a build.
type Options struct {
	BinDir   string // holds strata and strata-agent, static, built for linux/Arch
	OutDir   string // receives one OCI layout per image: OutDir/strata, OutDir/strata-agent
	Version  string // the org.opencontainers.image.version label and the layout's ref name
	Revision string // the source commit (optional)
	Arch     string // Go architecture of the binaries
	// CACerts is the PEM bundle copied to /etc/ssl/certs/ca-certificates.crt
	// (default: the build machine's, from the usual places).
	CACerts string
	// Created stamps the files, the history and the created label
	// (zero: now).
	Created time.Time
}

// caBundles are where distributions keep their CA bundle.
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
	"/etc/ssl/cert.pem",                  // Alpine, macOS
}

func (o *Options) validate() error {
	if o.BinDir == "" || o.OutDir == "" || o.Version == "" || o.Arch == "" {
		return errors.New("images: BinDir, OutDir, Version and Arch are required")
	}
	if o.Created.IsZero() {
		o.Created = time.Now().UTC().Truncate(time.Second)
	}
	if o.CACerts == "" {
		for _, p := range caBundles {
			if _, err := os.Stat(p); err == nil {
				o.CACerts = p
				break
			}
		}
		if o.CACerts == "" {
			return fmt.Errorf("images: no CA bundle on this machine (looked at %s): install ca-certificates", strings.Join(caBundles, ", "))
		}
	}
	return nil
}

// Build writes every image of Specs into its own OCI layout under OutDir
// (replacing what was there) and returns the layouts' folders.
func Build(o Options) ([]string, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	base, err := baseLayer(ca, o.Created)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range Specs() {
		dir, err := s.build(o, base)
		if err != nil {
			return out, fmt.Errorf("images: %s: %w", s.Name, err)
		}
		out = append(out, dir)
	}
	return out, nil
}

func (s Spec) build(o Options, base v1.Layer) (string, error) {
	bin, err := os.ReadFile(filepath.Join(o.BinDir, s.Name))
	if err != nil {
		return "", err
	}
	app, err := layer(o.Created, []entry{
		dir("var/lib", 0o755),
		{name: strings.TrimPrefix(s.StateDir, "/"), mode: 0o700, dir: true, uid: UID, gid: GID},
		dir("usr", 0o755), dir("usr/bin", 0o755),
		{name: strings.TrimPrefix(s.Entrypoint[0], "/"), mode: 0o755, body: bin},
	})
	if err != nil {
		return "", err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{
			Created: v1.Time{Time: o.Created}, CreatedBy: "strata-build: /etc/passwd, /etc/group, CA certificates, /tmp",
		}},
		mutate.Addendum{Layer: app, History: v1.History{
			Created: v1.Time{Time: o.Created}, CreatedBy: "strata-build: " + s.Entrypoint[0] + ", " + s.StateDir,
		}},
	)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = s.config(o)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	dirPath := filepath.Join(o.OutDir, s.Name)
	if err := os.RemoveAll(dirPath); err != nil {
		return "", err
	}
	p, err := layout.Write(dirPath, empty.Index)
	if err != nil {
		return "", err
	}
	err = p.AppendImage(img,
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: o.Arch}),
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": o.Version}))
	return dirPath, err
}

// Labels are the image's org.opencontainers.image.* labels.
func (s Spec) Labels(o Options) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":         s.Name,
		"org.opencontainers.image.description":   s.Description,
		"org.opencontainers.image.version":       o.Version,
		"org.opencontainers.image.created":       o.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.source":        "https://github.com/strata-dm/strata",
		"org.opencontainers.image.url":           "https://github.com/strata-dm/strata",
		"org.opencontainers.image.documentation": "https://github.com/strata-dm/strata/blob/main/docs/deploy.md",
		"org.opencontainers.image.vendor":        "Strata",
	}
	if o.Revision != "" {
		l["org.opencontainers.image.revision"] = o.Revision
	}
	return l
}

func (s Spec) config(o Options) v1.Config {
	c := v1.Config{
		User:       User,
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		WorkingDir: s.StateDir,
		Env:        []string{"PATH=/usr/bin", "HOME=" + s.StateDir},
		Volumes:    map[string]struct{}{s.StateDir: {}},
		Labels:     s.Labels(o),
		StopSignal: "SIGTERM",
	}
	if len(s.Ports) > 0 {
		c.ExposedPorts = map[string]struct{}{}
		for _, p := range s.Ports {
			c.ExposedPorts[p] = struct{}{}
		}
	}
	return c
}

// baseLayer is what every image shares: the users, name resolution, CA
// certificates and /tmp.
func baseLayer(ca []byte, mtime time.Time) (v1.Layer, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/var/lib/strata:/sbin/nologin\n", UserName, UID, GID, UserName)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", UserName, GID)
	return layer(mtime, []entry{
		dir("etc", 0o755),
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		dir("etc/ssl", 0o755), dir("etc/ssl/certs", 0o755),
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
		{name: "tmp", mode: 0o1777, dir: true},
	})
}

type entry struct {
	name     string
	mode     int64
	dir      bool
	body     []byte
	uid, gid int
}

func dir(name string, mode int64) entry { return entry{name: name, mode: mode, dir: true} }

// layer is an uncompressed-then-gzipped tar of entries, in name order, with
// every time set to mtime, so that the same inputs make the same digest.
func layer(mtime time.Time, entries []entry) (v1.Layer, error) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime,
			Typeflag: tar.TypeReg, Size: int64(len(e.body)), Format: tar.FormatPAX,
		}
		if e.dir {
			h.Name += "/"
			h.Typeflag = tar.TypeDir
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
