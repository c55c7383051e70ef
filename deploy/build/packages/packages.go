// Package packages builds the .deb and .rpm packages of strata and
// strata-agent with nfpm, from binaries built beforehand and the files in
// the repository's deploy/ folder (systemd units, configuration files,
// maintainer scripts). The same description makes both formats; what one
// package holds is in Spec.
package packages

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Formats built by Build.
const (
	Deb = "deb"
	RPM = "rpm"
)

// Options of a build.
type Options struct {
	// Root is the repository's folder (deploy/ is read from it).
	Root string
	// BinDir holds the binaries strata and strata-agent, built for
	// linux/Arch.
	BinDir string
	// OutDir receives the packages.
	OutDir string
	// Version is the version the build knows: a release tag (v1.2.3,
	// v1.2.3-rc.1) or what git describe prints; see PackageVersion.
	Version string
	// Arch is the Go architecture of the binaries (amd64, arm64, ...).
	Arch string
	// MTime stamps every file and the packages themselves, so that the same
	// inputs make the same bytes (zero: now).
	MTime time.Time
	// Formats to build (default Deb and RPM).
	Formats []string
}

// Validate checks the options and fills in defaults.
func (o *Options) Validate() error {
	if o.Root == "" || o.BinDir == "" || o.OutDir == "" {
		return errors.New("packages: Root, BinDir and OutDir are required")
	}
	if o.Arch == "" {
		return errors.New("packages: Arch is required")
	}
	if _, err := PackageVersion(o.Version); err != nil {
		return err
	}
	if o.MTime.IsZero() {
		o.MTime = time.Now().UTC().Truncate(time.Second)
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{Deb, RPM}
	}
	for _, f := range o.Formats {
		if f != Deb && f != RPM {
			return fmt.Errorf("packages: unknown format %q (want deb or rpm)", f)
		}
	}
	return nil
}

// File is one file a package installs.
type File struct {
	Dst   string      // absolute path on the target
	Src   string      // relative to the repository's root, or to BinDir for binaries
	Bin   bool        // Src is a binary in BinDir
	Mode  os.FileMode // permission bits
	Conf  bool        // a configuration file: kept across upgrades when edited
	Dir   bool        // an empty directory owned by the package
	Subst string      // replaces @UNIT@ in Src (maintainer scripts)
}

// Spec describes one package.
type Spec struct {
	Name        string
	Description string
	Files       []File
	// Maintainer scripts, relative to the repository's root; @UNIT@ in
	// them becomes Name.
	PostInstall, PreRemove, PostRemove string
}

// Specs are the packages Build makes: the node and the agent.
func Specs() []Spec {
	return []Spec{
		{
			Name: "strata",
			Description: "Strata device management node\n" +
				"One binary for every tier of a Strata hierarchy (probe, regional, HQ,\n" +
				"reporting), with a hardened systemd unit running as the system user\n" +
				"strata; the node's folder is /var/lib/strata.",
			Files: []File{
				{Dst: "/usr/bin/strata", Src: "strata", Bin: true, Mode: 0o755},
				{Dst: "/usr/lib/systemd/system/strata.service", Src: "deploy/systemd/strata.service", Mode: 0o644},
				{Dst: "/usr/lib/sysusers.d/strata.conf", Src: "deploy/packaging/strata.sysusers", Mode: 0o644},
				{Dst: "/etc/strata/strata.env", Src: "deploy/packaging/strata.env", Mode: 0o640, Conf: true},
				{Dst: "/var/lib/strata", Dir: true, Mode: 0o750},
			},
			PostInstall: "deploy/packaging/strata-postinstall.sh",
			PreRemove:   "deploy/packaging/preremove.sh",
			PostRemove:  "deploy/packaging/postremove.sh",
		},
		{
			Name: "strata-agent",
			Description: "Strata device agent\n" +
				"Enrolls the device with a Strata node and keeps it managed over MQTT;\n" +
				"a systemd unit runs it, with options in /etc/strata/agent.env.",
			Files: []File{
				{Dst: "/usr/bin/strata-agent", Src: "strata-agent", Bin: true, Mode: 0o755},
				{Dst: "/usr/lib/systemd/system/strata-agent.service", Src: "deploy/systemd/strata-agent.service", Mode: 0o644},
				{Dst: "/etc/strata/agent.env", Src: "deploy/packaging/agent.env", Mode: 0o640, Conf: true},
				{Dst: "/var/lib/strata-agent", Dir: true, Mode: 0o700},
			},
			PostInstall: "deploy/packaging/strata-agent-postinstall.sh",
			PreRemove:   "deploy/packaging/preremove.sh",
			PostRemove:  "deploy/packaging/postremove.sh",
		},
	}
}

var (
	versionRE  = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	describeRE = regexp.MustCompile(`^([0-9][0-9A-Za-z.]*)-([0-9]+)-(g[0-9a-f]+)(-dirty)?$`)
)

// PackageVersion turns a version as the build knows it (a tag, or what
// git describe prints) into one that dpkg and rpm both accept (no "-":
// that separates the release) and order as the tags are ordered:
//
//	v1.2.3              1.2.3
//	v1.2.3-rc.1         1.2.3~rc.1           (before 1.2.3)
//	v1.2.3-4-gabc1234   1.2.3+4.gabc1234     (after 1.2.3)
//	abc1234-dirty, dev  0.0.0~abc1234.dirty  (before every release)
func PackageVersion(v string) (string, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if v == "" {
		return "", errors.New("packages: a version is required")
	}
	switch m := describeRE.FindStringSubmatch(v); {
	case v[0] < '0' || v[0] > '9':
		v = "0.0.0~" + strings.ReplaceAll(v, "-", ".")
	case m != nil:
		v = m[1] + "+" + m[2] + "." + m[3] + strings.ReplaceAll(m[4], "-", ".")
	default:
		core, pre, ok := strings.Cut(v, "-")
		if ok {
			v = core + "~" + strings.ReplaceAll(pre, "-", ".")
		}
	}
	if !versionRE.MatchString(v) {
		return "", fmt.Errorf("packages: version %q: want letters, digits and . + ~ - only, starting with a digit", v)
	}
	return v, nil
}

// Build writes one package per Spec and format into OutDir and returns
// their paths.
func Build(o Options) ([]string, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	scripts, err := os.MkdirTemp("", "strata-pkg-scripts-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scripts)
	var out []string
	for _, s := range Specs() {
		info, err := s.info(o, scripts)
		if err != nil {
			return nil, err
		}
		for _, format := range o.Formats {
			path, err := write(info, format, o.OutDir)
			if err != nil {
				return nil, fmt.Errorf("packages: %s %s: %w", s.Name, format, err)
			}
			out = append(out, path)
		}
	}
	return out, nil
}

// info is the nfpm description of s; maintainer scripts are written,
// filled in, into scripts.
func (s Spec) info(o Options, scripts string) (*nfpm.Info, error) {
	version, _ := PackageVersion(o.Version)
	info := &nfpm.Info{
		Name:          s.Name,
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Release:       "1",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "The Strata authors <strata-dm@users.noreply.github.com>",
		Description:   s.Description,
		Vendor:        "Strata",
		Homepage:      "https://github.com/strata-dm/strata",
		MTime:         o.MTime,
	}
	info.Overridables.Recommends = []string{"systemd"}
	info.Overridables.Umask = 0o022
	info.RPM.Summary = strings.SplitN(s.Description, "\n", 2)[0]
	info.RPM.Group = "System Environment/Daemons"
	info.RPM.BuildHost = "strata-build" // not the machine's name: the same inputs make the same bytes
	for _, f := range s.Files {
		c := &files.Content{Destination: f.Dst, FileInfo: &files.ContentFileInfo{
			Owner: "root", Group: "root", Mode: f.Mode, MTime: o.MTime,
		}}
		switch {
		case f.Dir:
			c.Type = files.TypeDir
		case f.Bin:
			c.Source = filepath.Join(o.BinDir, f.Src)
		default:
			c.Source = filepath.Join(o.Root, f.Src)
		}
		if f.Conf {
			c.Type = files.TypeConfigNoReplace
		}
		if c.Source != "" {
			if _, err := os.Stat(c.Source); err != nil {
				return nil, fmt.Errorf("packages: %s: %w", s.Name, err)
			}
		}
		info.Overridables.Contents = append(info.Overridables.Contents, c)
	}
	for _, sc := range []struct {
		src string
		dst *string
	}{
		{s.PostInstall, &info.Overridables.Scripts.PostInstall},
		{s.PreRemove, &info.Overridables.Scripts.PreRemove},
		{s.PostRemove, &info.Overridables.Scripts.PostRemove},
	} {
		if sc.src == "" {
			continue
		}
		body, err := os.ReadFile(filepath.Join(o.Root, sc.src))
		if err != nil {
			return nil, fmt.Errorf("packages: %s: %w", s.Name, err)
		}
		path := filepath.Join(scripts, s.Name+"-"+filepath.Base(sc.src))
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(body), "@UNIT@", s.Name)), 0o755); err != nil {
			return nil, err
		}
		*sc.dst = path
	}
	return nfpm.WithDefaults(info), nil
}

// write builds info in format into dir.
func write(info *nfpm.Info, format, dir string) (string, error) {
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	in := *info
	in.Overridables.Contents = append(files.Contents(nil), info.Overridables.Contents...)
	if err := nfpm.PrepareForPackager(&in, format); err != nil {
		return "", err
	}
	path := filepath.Join(dir, pkgr.ConventionalFileName(&in))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(&in, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}
