package packages_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	rpmutils "github.com/sassoftware/go-rpmutils"

	"github.com/strata-dm/strata/deploy/build/internal/testbin"
	"github.com/strata-dm/strata/deploy/build/packages"
)

// version is the binaries' version; pkgVersion the packages'.
const (
	version    = "1.2.3-rc.1"
	pkgVersion = "1.2.3~rc.1"
)

// built are the packages of the test binary, made once by TestMain.
var built struct {
	root  string            // the repository
	paths map[string]string // "strata.deb" -> path
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		root, err := testbin.RepoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		tmp, err := os.MkdirTemp("", "strata-packages-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		bin := filepath.Join(tmp, "bin")
		if err := testbin.Build(root, bin, "v"+version); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		paths, err := packages.Build(packages.Options{
			Root: root, BinDir: bin, OutDir: filepath.Join(tmp, "dist"), Version: "v" + version,
			Arch: runtime.GOARCH, MTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		built.root = root
		built.paths = map[string]string{}
		for _, p := range paths {
			name := filepath.Base(p)
			for _, s := range packages.Specs() {
				if strings.HasPrefix(name, s.Name+"_") || strings.HasPrefix(name, s.Name+"-"+pkgVersion) {
					built.paths[s.Name+filepath.Ext(name)] = p
				}
			}
		}
		if len(built.paths) != 4 {
			fmt.Fprintf(os.Stderr, "want 4 packages, built %q\n", paths)
			return 1
		}
		return m.Run()
	}())
}

// need returns the path of tool, or skips the test without it; in CI
// (CI=true) a missing tool fails instead: scripts/install-test-deps.sh
// installs it.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: install the Debian package %s (make test-deps)", tool, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// dpkgRoot is a throwaway root with an empty dpkg database, and the
// arguments that make dpkg work inside it: unprivileged (--force-not-root)
// where the test is not root, and with maintainer scripts run outside a
// chroot, with DPKG_ROOT telling them where the root is.
func dpkgRoot(t *testing.T) (string, []string) {
	root := t.TempDir()
	testbin.Traversable(t, root) // the units' users run the installed binaries
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--root=" + root, "--log=" + filepath.Join(root, "var/lib/dpkg/dpkg.log"), "--force-script-chrootless"}
	if os.Geteuid() != 0 {
		args = append(args, "--force-not-root")
	}
	return root, args
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// TestDebInstall installs both .deb packages into a throwaway root with
// dpkg and checks what they put there: files and modes, conffiles, the
// system user, the binaries' version; the units pass systemd-analyze
// verify there; an edited conffile survives a reinstall and a remove, and
// goes with a purge.
func TestDebInstall(t *testing.T) {
	dpkg := need(t, "dpkg", "dpkg")
	root, args := dpkgRoot(t)
	run(t, dpkg, append(args, "--install", built.paths["strata.deb"], built.paths["strata-agent.deb"])...)

	status := run(t, "dpkg-query", "--root="+root, "-W", "-f", "${Package} ${Status} ${Version}\n")
	for _, want := range []string{
		"strata install ok installed " + pkgVersion + "-1",
		"strata-agent install ok installed " + pkgVersion + "-1",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("dpkg-query: want %q in\n%s", want, status)
		}
	}

	for _, s := range packages.Specs() {
		for _, f := range s.Files {
			p := filepath.Join(root, f.Dst)
			m := mode(t, p)
			if f.Dir != m.IsDir() || m.Perm() != f.Mode {
				t.Errorf("%s: mode %v, want %v (dir %v)", f.Dst, m, f.Mode, f.Dir)
			}
			if !f.Bin && !f.Dir {
				want, err := os.ReadFile(filepath.Join(built.root, f.Src))
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
					t.Errorf("%s differs from %s", f.Dst, f.Src)
				}
			}
		}
		var confs []string
		for _, f := range s.Files {
			if f.Conf {
				confs = append(confs, f.Dst)
			}
		}
		got, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info", s.Name+".conffiles"))
		if err != nil {
			t.Fatalf("%s: conffiles: %v", s.Name, err)
		}
		if strings.Fields(string(got))[0] != confs[0] || len(strings.Fields(string(got))) != len(confs) {
			t.Errorf("%s: conffiles %q, want %q", s.Name, got, confs)
		}
	}
	for _, c := range []struct{ bin, want string }{
		{"strata", "strata v" + version + "\n"},
		{"strata-agent", "strata-agent v" + version + " linux/" + runtime.GOARCH},
	} {
		if out := run(t, filepath.Join(root, "usr/bin", c.bin), "version"); !strings.HasPrefix(out, c.want) {
			t.Errorf("%s version: %q, want it to start with %q", c.bin, out, c.want)
		}
	}

	// The postinst made the system user with systemd-sysusers, inside the
	// root only, and gave it the node's folder.
	if _, err := exec.LookPath("systemd-sysusers"); err == nil {
		passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if err != nil {
			t.Fatal(err)
		}
		var uid string
		for _, line := range strings.Split(string(passwd), "\n") {
			if f := strings.Split(line, ":"); len(f) == 7 && f[0] == "strata" {
				uid = f[2]
				if f[5] != "/var/lib/strata" || f[6] != "/usr/sbin/nologin" {
					t.Errorf("user strata: %q", line)
				}
			}
		}
		if uid == "" {
			t.Fatalf("no user strata in the root's /etc/passwd:\n%s", passwd)
		}
		if os.Geteuid() == 0 {
			fi, _ := os.Stat(filepath.Join(root, "var/lib/strata"))
			if got := fmt.Sprint(statUID(fi)); got != uid {
				t.Errorf("/var/lib/strata belongs to uid %s, want strata's %s", got, uid)
			}
		}
	}

	verifyUnits(t, root)
	runUnits(t, root)

	// An edited conffile is kept by a reinstall and a remove; a purge
	// deletes it.
	env := filepath.Join(root, "etc/strata/strata.env")
	edited := []byte("STRATA_STORE_CACHE_MB=512\n")
	if err := os.WriteFile(env, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, dpkg, append(args, "--force-confold", "--install", built.paths["strata.deb"])...)
	if got, _ := os.ReadFile(env); !bytes.Equal(got, edited) {
		t.Errorf("reinstall replaced the edited strata.env: %q", got)
	}
	run(t, dpkg, append(args, "--remove", "strata")...)
	if _, err := os.Stat(filepath.Join(root, "usr/bin/strata")); !os.IsNotExist(err) {
		t.Errorf("after remove: /usr/bin/strata: %v", err)
	}
	if got, _ := os.ReadFile(env); !bytes.Equal(got, edited) {
		t.Errorf("remove did not keep the edited strata.env: %q", got)
	}
	run(t, dpkg, append(args, "--purge", "strata")...)
	if _, err := os.Stat(env); !os.IsNotExist(err) {
		t.Errorf("after purge: strata.env: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/strata/agent.env")); err != nil {
		t.Errorf("purging strata took strata-agent's agent.env: %v", err)
	}
}

// verifyUnits runs systemd-analyze verify on the installed units inside
// root, which gets a copy of the machine's own units for the targets they
// name; any
// warning (an unknown key, a bad value) fails. The node's unit must also
// stay well hardened: its offline security exposure at most 2.0 of 10.
func verifyUnits(t *testing.T, root string) {
	t.Helper()
	analyze := need(t, "systemd-analyze", "systemd")
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, host := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		entries, err := os.ReadDir(host)
		if err != nil {
			continue
		}
		for _, e := range entries {
			src, dst := filepath.Join(host, e.Name()), filepath.Join(unitDir, e.Name())
			if _, err := os.Lstat(dst); err == nil || e.IsDir() {
				continue
			}
			// Copied as cp -a would: systemd resolves links inside the root.
			if target, err := os.Readlink(src); err == nil {
				err = os.Symlink(target, dst)
				if err != nil {
					t.Fatal(err)
				}
				continue
			}
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		break
	}
	units := []string{"strata.service", "strata-agent.service"}
	cmd := exec.Command(analyze, append([]string{"--root=" + root, "verify"}, units...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(units, " "), err, out)
	}
	cmd = exec.Command(analyze, "--root="+root, "security", "--offline=yes", "--threshold=20", "strata.service")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security strata.service: exposure above 2.0 (%v):\n%s", err, out)
	}
}

// execStart is the ExecStart= command of an installed unit, with its
// absolute paths moved into root and $VARIABLES left out.
func execStart(t *testing.T, root, unit string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		var args []string
		for _, a := range strings.Fields(cmd) {
			switch {
			case strings.HasPrefix(a, "$"):
			case strings.HasPrefix(a, "/"):
				args = append(args, filepath.Join(root, a))
			default:
				args = append(args, a)
			}
		}
		return args
	}
	t.Fatalf("%s: no ExecStart=", unit)
	return nil
}

// runUnits runs the installed binaries with their units' command lines,
// as the units' users where the test is root: the node initialised as the
// documentation says (strata init in /var/lib/strata, as strata), served,
// ready over TLS and stopped cleanly; the agent accepting its flags (it
// then stops: it is not enrolled).
func runUnits(t *testing.T, root string) {
	t.Helper()
	state := filepath.Join(root, "var/lib/strata")
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		fi, err := os.Stat(state)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid == 0 {
			t.Fatal("/var/lib/strata belongs to root: the postinst did not give it to strata")
		}
		cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	cmdOf := func(args ...string) *exec.Cmd {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = state
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + state}
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	bin := filepath.Join(root, "usr/bin/strata")
	if out, err := cmdOf(bin, "init", "--dir", state, "--name", "pkg-test", "--role", "probe", "--api-addr", "127.0.0.1:0").CombinedOutput(); err != nil {
		t.Fatalf("strata init as the user strata: %v\n%s", err, out)
	}
	node := testbin.Serve(t, cmdOf(execStart(t, root, "strata.service")...))
	node.Ready(t, filepath.Join(state, "tls", "ca.crt"))
	node.Stop(t)
	if cred != nil {
		testbin.OwnedBy(t, state, cred.Uid)
	}

	agent := exec.Command(execStart(t, root, "strata-agent.service")[0], execStart(t, root, "strata-agent.service")[1:]...)
	out, err := agent.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not enrolled") {
		t.Errorf("strata-agent with its unit's command line and no credentials: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/strata-agent")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/strata-agent after a run: %v %v", fi, err)
	}
}

// TestRPM reads both .rpm packages back with an RPM reader: name, version,
// files with modes and owners, configuration files, scripts. (No rpm tool
// installs them here: this machine is Debian.)
func TestRPM(t *testing.T) {
	for _, s := range packages.Specs() {
		t.Run(s.Name, func(t *testing.T) {
			f, err := os.Open(built.paths[s.Name+".rpm"])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := rpmutils.ReadRpm(f)
			if err != nil {
				t.Fatal(err)
			}
			nevra, err := r.Header.GetNEVRA()
			if err != nil {
				t.Fatal(err)
			}
			if nevra.Name != s.Name || nevra.Version != pkgVersion || nevra.Release != "1" {
				t.Errorf("NEVRA %+v, want %s %s-1", nevra, s.Name, pkgVersion)
			}
			files, err := r.Header.GetFiles()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]rpmutils.FileInfo{}
			for _, fi := range files {
				got[fi.Name()] = fi
			}
			for _, want := range s.Files {
				fi, ok := got[want.Dst]
				if !ok {
					t.Errorf("%s missing; the package has %v", want.Dst, keys(got))
					continue
				}
				m := fs.FileMode(fi.Mode() & 0o7777)
				isDir := fi.Mode()&0o170000 == 0o040000
				if m != want.Mode || isDir != want.Dir || fi.UserName() != "root" || fi.GroupName() != "root" {
					t.Errorf("%s: mode %o dir %v owner %s:%s, want %o dir %v root:root",
						want.Dst, m, isDir, fi.UserName(), fi.GroupName(), want.Mode, want.Dir)
				}
				conf := fi.Flags()&rpmutils.RPMFILE_CONFIG != 0 && fi.Flags()&rpmutils.RPMFILE_NOREPLACE != 0
				if conf != want.Conf {
					t.Errorf("%s: config|noreplace %v, want %v (flags %#x)", want.Dst, conf, want.Conf, fi.Flags())
				}
			}
			for tag, name := range map[int]string{rpmutils.POSTIN: "postinstall", rpmutils.PREUN: "preremove", rpmutils.POSTUN: "postremove"} {
				script, err := r.Header.GetString(tag)
				if err != nil || !strings.HasPrefix(script, "#!/bin/sh") || strings.Contains(script, "@UNIT@") {
					t.Errorf("%s script: %v %.60q", name, err, script)
				}
			}
			if p, err := exec.LookPath("rpm"); err == nil {
				list := run(t, p, "-qlp", built.paths[s.Name+".rpm"])
				for _, want := range s.Files {
					if !strings.Contains(list, want.Dst+"\n") {
						t.Errorf("rpm -qlp: %s missing in\n%s", want.Dst, list)
					}
				}
			}
		})
	}
}

func keys(m map[string]rpmutils.FileInfo) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":               "1.2.3",
		"1.2.3-rc.1":           "1.2.3~rc.1",
		"v2.0.0-beta-2":        "2.0.0~beta.2",
		"e79451b":              "0.0.0~e79451b",
		"e79451b-dirty":        "0.0.0~e79451b.dirty",
		"v1.2.3-4-gabc1":       "1.2.3+4.gabc1",
		"v1.2.3-4-gabc1-dirty": "1.2.3+4.gabc1.dirty",
		"v1.2.3-rc.1+meta":     "1.2.3~rc.1+meta",
		"dev":                  "0.0.0~dev",
	} {
		if got, err := packages.PackageVersion(in); err != nil || got != want {
			t.Errorf("PackageVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "v", "1.2 3", "1.2/3", "1.2;rm"} {
		if got, err := packages.PackageVersion(bad); err == nil {
			t.Errorf("PackageVersion(%q) = %q, want an error", bad, got)
		}
	}
}
