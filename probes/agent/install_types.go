package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// installJob installs one verified, downloaded artifact and checks it.
type installJob struct {
	a     *Agent
	m     *apitypes.Manifest
	art   apitypes.Artifact
	file  string     // the downloaded artifact, verified
	prev  *installed // the release's installed version, nil for a first install
	check string     // the job's health check, "" for none
	jobID string
	log   *slog.Logger
}

// softwareDir is where tar and binary artifacts go: the install root, or
// DefaultSoftwareDir.
func (j *installJob) softwareDir() string {
	if r := j.a.cfg.InstallRoot; r != "" {
		return r
	}
	return DefaultSoftwareDir
}

// rootEnv is STRATA_INSTALL_ROOT: the install root, "/" without one.
func (j *installJob) rootEnv() string {
	if r := j.a.cfg.InstallRoot; r != "" {
		return r
	}
	return "/"
}

// env is the whole environment of install.sh, health checks and script
// artifacts.
func (j *installJob) env() []string {
	prev := ""
	if j.prev != nil {
		prev = j.prev.Version
	}
	return append(append([]string(nil), scriptEnv...),
		"STRATA_JOB="+j.jobID, "STRATA_RELEASE="+j.m.Name, "STRATA_VERSION="+j.m.Version,
		"STRATA_PREVIOUS_VERSION="+prev, "STRATA_INSTALL_ROOT="+j.rootEnv())
}

// versionDir is releases/<name>/<version> of the software directory.
func (j *installJob) versionDir(version string) string {
	return filepath.Join(j.softwareDir(), "releases", j.m.Name, version)
}

// currentLink is current/<name> of the software directory.
func (j *installJob) currentLink() string {
	return filepath.Join(j.softwareDir(), "current", j.m.Name)
}

// run installs, runs the health check and rolls back if it fails. It
// returns the record of the new installation.
func (j *installJob) run(ctx context.Context) (installed, error) {
	rec := installed{Name: j.m.Name, Version: j.m.Version, Type: j.art.Type, SHA256: j.art.SHA256, Previous: j.prev}
	var err error
	switch j.art.Type {
	case apitypes.ArtifactTar, apitypes.ArtifactBinary:
		err = j.installDir(ctx, &rec)
	case apitypes.ArtifactDeb, apitypes.ArtifactRPM:
		err = j.installPackage(ctx, &rec)
	case apitypes.ArtifactScript:
		err = j.runScript(ctx)
	default:
		err = fmt.Errorf("artifact type %q is not supported", j.art.Type)
	}
	if err != nil {
		return rec, err
	}
	rec.Installed = time.Now().UTC().Truncate(time.Second)
	check := j.check
	if check == "" && j.art.Type == apitypes.ArtifactTar {
		if hs := filepath.Join(rec.Dir, "health.sh"); isExecutable(hs) {
			check = shellQuote(hs)
		}
	}
	if check == "" {
		return rec, nil
	}
	j.a.progress(j.jobID, "checking", apitypes.InstallResult{Name: rec.Name, Version: rec.Version, SHA256: rec.SHA256, Type: rec.Type})
	dir := rec.Dir
	if dir == "" {
		dir = j.a.cfg.StateDir
	}
	out, cerr := j.command(ctx, checkTimeout, dir, "/bin/sh", "-c", check)
	if cerr == nil {
		return rec, nil
	}
	j.log.Warn("health check failed; rolling back", "err", cerr, "output", out)
	failure := fmt.Errorf("%w: %v%s", ErrCheckFailed, cerr, outputTail(out))
	return rec, fmt.Errorf("%w; %s", failure, j.rollback(ctx, &rec))
}

// installDir installs a tar or binary artifact into
// releases/<name>/<version> (unpacked into a temporary directory beside
// it, then renamed into place), runs a tar's install.sh there, and points
// current/<name> at it.
func (j *installJob) installDir(ctx context.Context, rec *installed) error {
	dir := j.versionDir(j.m.Version)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+j.m.Version+".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if j.art.Type == apitypes.ArtifactTar {
		f, err := os.Open(j.file)
		if err != nil {
			return err
		}
		err = untar(f, tmp)
		f.Close()
		if err != nil {
			return fmt.Errorf("unpacking the tar artifact: %w", err)
		}
	} else if err := copyFile(j.file, filepath.Join(tmp, j.m.Name), 0o755); err != nil {
		return err
	}
	if j.prev == nil || j.prev.Dir != dir {
		// Not the directory the previous version runs from: replace it
		// (a leftover of a failed install of this version).
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	rec.Dir = dir
	if j.art.Type == apitypes.ArtifactTar {
		if is := filepath.Join(dir, "install.sh"); fileExists(is) {
			if out, err := j.command(ctx, installStepTimeout, dir, "/bin/sh", is); err != nil {
				os.RemoveAll(dir)
				return fmt.Errorf("install.sh failed: %v%s", err, outputTail(out))
			}
		}
	}
	if err := pointLink(j.currentLink(), dir); err != nil {
		return fmt.Errorf("switching %s: %w", j.currentLink(), err)
	}
	return os.Remove(j.file)
}

// pointLink makes link a symbolic link to target (relative to link's
// folder), replacing what was there atomically (rename over it).
func pointLink(link, target string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return err
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(link))
}

// installPackage installs a deb or rpm with its package manager and keeps
// the package file for a later rollback.
func (j *installJob) installPackage(ctx context.Context, rec *installed) error {
	keep := filepath.Join(packagesDir, j.m.Name, j.art.SHA256+"."+j.art.Type)
	abs := filepath.Join(j.a.cfg.StateDir, keep)
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return err
	}
	if err := os.Rename(j.file, abs); err != nil {
		return err
	}
	rec.File = keep
	name, err := j.packageName(ctx, abs)
	if err != nil {
		return err
	}
	rec.Package = name
	if err := j.packageInstall(ctx, abs, false); err != nil {
		return fmt.Errorf("%w; %s", err, j.rollback(ctx, rec))
	}
	return nil
}

// packageName reads the package's name from its file.
func (j *installJob) packageName(ctx context.Context, file string) (string, error) {
	var out string
	var err error
	if j.art.Type == apitypes.ArtifactDeb {
		out, err = j.command(ctx, time.Minute, "", "dpkg-deb", "--field", file, "Package")
	} else {
		out, err = j.command(ctx, time.Minute, "", "rpm", "-qp", "--queryformat", "%{NAME}", file)
	}
	name := strings.TrimSpace(out)
	if err != nil || name == "" || strings.ContainsAny(name, " \n/") {
		return "", fmt.Errorf("reading the package's name: %v%s", err, outputTail(out))
	}
	return name, nil
}

// packageCommand is the package manager's command line for the job's
// type: install file (downgrade: allow an older version), or remove
// package name when file is "".
func (j *installJob) packageCommand(file, name string, downgrade bool) []string {
	root := j.a.cfg.InstallRoot
	if j.art.Type == apitypes.ArtifactDeb {
		args := []string{"dpkg", "--force-confdef", "--force-confold"}
		if root != "" {
			// A throwaway root: dpkg's database inside it, maintainer
			// scripts run without chroot (DPKG_ROOT tells them where),
			// no root privileges needed.
			args = append(args, "--root="+root, "--log="+filepath.Join(root, "var/lib/dpkg/strata-agent.log"),
				"--force-script-chrootless")
			if os.Geteuid() != 0 {
				args = append(args, "--force-not-root")
			}
		}
		if file == "" {
			return append(args, "--remove", name)
		}
		return append(args, "--install", file)
	}
	args := []string{"rpm"}
	if root != "" {
		args = append(args, "--root", root)
	}
	switch {
	case file == "":
		return append(args, "-e", name)
	case downgrade:
		return append(args, "-U", "--oldpackage", "--replacepkgs", file)
	}
	return append(args, "-U", "--replacepkgs", file)
}

// packageInstall runs the package manager on file.
func (j *installJob) packageInstall(ctx context.Context, file string, downgrade bool) error {
	if j.art.Type == apitypes.ArtifactDeb && j.a.cfg.InstallRoot != "" {
		if err := initDpkgRoot(j.a.cfg.InstallRoot); err != nil {
			return err
		}
	}
	argv := j.packageCommand(file, "", downgrade)
	if out, err := j.command(ctx, installStepTimeout, "", argv[0], argv[1:]...); err != nil {
		return fmt.Errorf("%s failed: %v%s", argv[0], err, outputTail(out))
	}
	return nil
}

// initDpkgRoot makes the dpkg database of a throwaway root when it has
// none: var/lib/dpkg with an empty status file, info/ and updates/.
func initDpkgRoot(root string) error {
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(admin, "status"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// runScript runs a script artifact once, from a copy in a private
// temporary directory.
func (j *installJob) runScript(ctx context.Context) error {
	defer os.Remove(j.file)
	dir, err := os.MkdirTemp(filepath.Join(j.a.cfg.StateDir, downloadsDir), "script")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, j.m.Name)
	if err := copyFile(j.file, script, 0o700); err != nil {
		return err
	}
	argv := []string{script}
	if !hasShebang(script) {
		argv = []string{"/bin/sh", script}
	}
	if out, err := j.command(ctx, installStepTimeout, dir, argv[0], argv[1:]...); err != nil {
		return fmt.Errorf("script failed: %v%s", err, outputTail(out))
	}
	return nil
}

// rollback undoes a failed installation where the type allows it and
// says what happened, for the job's error.
func (j *installJob) rollback(ctx context.Context, rec *installed) string {
	var err error
	var did string
	switch j.art.Type {
	case apitypes.ArtifactScript:
		return "a script artifact has no rollback"
	case apitypes.ArtifactTar, apitypes.ArtifactBinary:
		if j.prev != nil && j.prev.Dir != "" && fileExists(j.prev.Dir) {
			did = "rolled back to " + j.prev.Version
			err = pointLink(j.currentLink(), j.prev.Dir)
		} else {
			did = "rolled back: " + j.currentLink() + " removed (no previous version)"
			if err = os.Remove(j.currentLink()); os.IsNotExist(err) {
				err = nil
			}
		}
		if err == nil && rec.Dir != "" && (j.prev == nil || rec.Dir != j.prev.Dir) {
			os.RemoveAll(rec.Dir)
		}
	case apitypes.ArtifactDeb, apitypes.ArtifactRPM:
		if rec.File != "" && (j.prev == nil || rec.File != j.prev.File) {
			defer os.Remove(filepath.Join(j.a.cfg.StateDir, rec.File))
		}
		if j.prev != nil && j.prev.File != "" && j.prev.Type == j.art.Type {
			did = "rolled back to " + j.prev.Version
			err = j.packageInstall(ctx, filepath.Join(j.a.cfg.StateDir, j.prev.File), true)
		} else if rec.Package != "" {
			did = "rolled back: package " + rec.Package + " removed (no previous version)"
			argv := j.packageCommand("", rec.Package, false)
			var out string
			if out, err = j.command(ctx, installStepTimeout, "", argv[0], argv[1:]...); err != nil {
				err = fmt.Errorf("%v%s", err, outputTail(out))
			}
		} else {
			return "no rollback: nothing was installed"
		}
	}
	if err != nil {
		j.log.Error("rollback failed", "err", err)
		return "rollback failed: " + err.Error()
	}
	j.log.Info("rolled back", "what", did)
	return did
}

// prune removes what the release's version before the replaced one left
// (its kept package file or version directory): a release keeps its
// current and previous versions only.
func (j *installJob) prune(cur installed, had bool) {
	if !had || cur.Previous == nil {
		return
	}
	old := cur.Previous
	if old.Version == j.m.Version {
		return
	}
	if old.File != "" && old.File != cur.File {
		os.Remove(filepath.Join(j.a.cfg.StateDir, old.File))
	}
	if old.Dir != "" && old.Dir != cur.Dir && old.Dir != j.versionDir(j.m.Version) {
		os.RemoveAll(old.Dir)
	}
}

// command runs name with args in dir ("" for the state directory) under
// timeout (and the job's deadline), with the install environment and its
// own process group; it returns stdout and stderr together, the first
// 64 KiB.
func (j *installJob) command(ctx context.Context, timeout time.Duration, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &capBuffer{max: maxScriptOutput}
	cmd := exec.CommandContext(ctx, name, args...)
	if dir == "" {
		dir = j.a.cfg.StateDir
	}
	cmd.Dir = dir
	cmd.Env = append(j.env(), "DEBIAN_FRONTEND=noninteractive", "HOME="+j.a.cfg.StateDir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	killProcessGroup(cmd)
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return out.String(), err
}

// outputTail is the last lines of a command's output, for an error.
func outputTail(out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	if len(out) > 512 {
		out = "…" + out[len(out)-512:]
	}
	return ": " + out
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(mode)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

func hasShebang(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 2)
	n, _ := io.ReadFull(f, b)
	return n == 2 && string(b) == "#!"
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
