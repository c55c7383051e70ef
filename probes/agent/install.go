package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/probes/download"
)

// Errors of the install function; callers may branch on them.
var (
	// ErrInstallNotAllowed: the agent trusts no release key (--trusted-key).
	ErrInstallNotAllowed = errors.New("install refused: the agent trusts no release signing key (run it with --trusted-key)")
	// ErrReleaseRefused wraps a manifest that does not verify or has
	// expired.
	ErrReleaseRefused = errors.New("release refused")
	// ErrDowngrade: the release is older than the installed version and
	// the job did not allow a downgrade.
	ErrDowngrade = errors.New("downgrade refused")
	// ErrCheckFailed: the health check failed after installing.
	ErrCheckFailed = errors.New("health check failed")
)

// Install timeouts, each also bounded by the job's deadline.
const (
	installStepTimeout = 10 * time.Minute // a package manager, install.sh, a script artifact
	checkTimeout       = 2 * time.Minute  // the health check
)

// Folders of the state directory used by installs.
const (
	downloadsDir = "downloads" // <sha256>.part: artifacts being downloaded
	packagesDir  = "packages"  // <name>/<sha256>.deb|.rpm: kept for rollback
)

// DefaultSoftwareDir is where tar and binary artifacts are installed
// without an install root: releases/<name>/<version> and current/<name>.
const DefaultSoftwareDir = "/opt/strata-agent"

// ParseTrustedKey reads an Ed25519 public key given as the base64 of its
// 32 bytes, or as the name of a file holding that (strata ctl releases
// keygen writes such a file).
func ParseTrustedKey(s string) (ed25519.PublicKey, error) {
	if k, err := apitypes.ParsePublicKey(s); err == nil {
		return k, nil
	}
	data, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("trusted key %q: neither the base64 of a %d-byte Ed25519 key nor a readable file: %v", s, ed25519.PublicKeySize, err)
	}
	k, err := apitypes.ParsePublicKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("trusted key file %s: %v", s, err)
	}
	return k, nil
}

// installer holds what installs need, set up by New.
type installer struct {
	software *softwareStore
	client   *http.Client // trusts the node CA of enrollment (and Config.APICAPEM)
	api      string       // the node's API base URL, "" when unknown
}

// newInstaller opens software.json and prepares the download client.
func newInstaller(cfg *Config, creds *Credentials) (*installer, error) {
	sw, err := openSoftware(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	in := &installer{software: sw, api: creds.API}
	if cfg.API != "" {
		in.api = cfg.API
	}
	if in.api != "" {
		if u, err := url.Parse(in.api); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("api %q: want https://HOST:PORT", in.api)
		}
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if creds.CAPEM != "" || len(cfg.APICAPEM) > 0 {
		pool := x509.NewCertPool()
		for _, p := range [][]byte{[]byte(creds.CAPEM), cfg.APICAPEM} {
			if len(p) > 0 && !pool.AppendCertsFromPEM(p) {
				return nil, errors.New("api ca: no PEM certificate found")
			}
		}
		conf.RootCAs = pool
	}
	in.client = &http.Client{Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment,
		ForceAttemptHTTP2: true, IdleConnTimeout: 30 * time.Second}}
	return in, nil
}

// installFunction declares install in the inventory.
func (a *Agent) installFunction() *function {
	return &function{FunctionInfo{apitypes.FunctionInstall,
		"Install a signed release: verify it against the agent's trusted keys, download the artifact for this device from the node, install it, run the health check, roll back if it fails.",
		schema(`{"type":"object","required":["release"],"additionalProperties":false,"properties":{` +
			`"release":{"type":"object","required":["manifest","signature","key_id"],"additionalProperties":false,"properties":{` +
			`"manifest":{"type":"object","description":"the release's canonical manifest, as signed"},` +
			`"signature":{"type":"string","description":"base64 Ed25519 signature of the manifest's bytes"},` +
			`"key_id":{"type":"string","pattern":"^[0-9a-f]{16}$"}}},` +
			`"tenant":{"type":"string","description":"the release's tenant as the node names it; not used by the device"},` +
			`"downgrade":{"type":"boolean","default":false,"description":"allow a version older than the installed one"},` +
			`"check":{"type":"string","maxLength":4096,"description":"health check command line, run with sh -c after installing"}}}`),
		schema(`{"type":"object","properties":{"name":{"type":"string"},"version":{"type":"string"},"previous":{"type":"string"},` +
			`"sha256":{"type":"string"},"type":{"enum":["deb","rpm","tar","binary","script"]},"bytes":{"type":"integer"},` +
			`"resumed":{"type":"boolean"},"already_installed":{"type":"boolean"}}}`)},
		a.install}
}

// install runs the install function: see docs/agent.md, "install".
func (a *Agent) install(ctx context.Context, c *call) (any, error) {
	args, err := apitypes.ParseInstallArgs(c.args)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgs, err)
	}
	if len(a.cfg.TrustedKeys) == 0 {
		return nil, ErrInstallNotAllowed
	}
	m, err := args.Release.Verify(a.cfg.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
	}
	if !time.Now().Before(m.ExpiresTime()) {
		return nil, fmt.Errorf("%w: release %s %s expired at %s", ErrReleaseRefused, m.Name, m.Version, m.Expires)
	}
	// One install at a time: two jobs for one release must not interleave
	// their steps, and package managers lock anyway.
	select {
	case a.installMu <- struct{}{}:
		defer func() { <-a.installMu }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cur, have := a.inst.software.get(m.Name)
	res := apitypes.InstallResult{Name: m.Name, Version: m.Version}
	if have {
		res.Previous = cur.Version
	}
	if have && cur.Version == m.Version {
		res.Previous, res.SHA256, res.Type, res.AlreadyInstalled = "", cur.SHA256, cur.Type, true
		if cur.Previous != nil {
			res.Previous = cur.Previous.Version
		}
		return res, nil
	}
	if have && !args.Downgrade && apitypes.CompareVersions(m.Version, cur.Version) < 0 {
		return nil, fmt.Errorf("%w: %s %s is installed and %s is older (set downgrade to allow it)", ErrDowngrade, m.Name, cur.Version, m.Version)
	}
	goos, goarch := Platform()
	art, err := apitypes.ChooseArtifact(m, goos, goarch, a.cfg.HasPackageManager)
	if err != nil {
		return nil, err
	}
	res.SHA256, res.Type = art.SHA256, art.Type
	log := a.log.With("job", c.job, "release", m.Name, "version", m.Version, "type", art.Type, "sha256", art.SHA256)

	a.progress(c.job, "downloading", res)
	file, dres, err := a.fetch(ctx, art)
	res.Bytes, res.Resumed = dres.Received, dres.Offset > 0 || dres.Resumes > 0
	if err != nil {
		return res, err
	}
	log.Info("artifact downloaded", "bytes", dres.Received, "resumed", res.Resumed)

	var prev *installed
	if have {
		p := cur
		p.Previous = nil
		prev = &p
	}
	job := &installJob{a: a, m: m, art: art, file: file, prev: prev, check: args.Check, jobID: c.job, log: log}
	a.progress(c.job, "installing", res)
	rec, err := job.run(ctx)
	if err != nil {
		return res, err
	}
	if err := a.inst.software.put(rec); err != nil {
		return res, fmt.Errorf("installed, but cannot record it: %w", err)
	}
	job.prune(cur, have)
	log.Info("release installed", "previous", res.Previous)
	a.inventoryNow()
	return res, nil
}

// fetch downloads art into the state directory, continuing a partial
// download left by an earlier job, and returns the verified file.
func (a *Agent) fetch(ctx context.Context, art apitypes.Artifact) (string, download.Result, error) {
	if a.inst.api == "" {
		return "", download.Result{}, errors.New("the node's API URL is unknown: enroll again, or run the agent with --api")
	}
	dir := filepath.Join(a.cfg.StateDir, downloadsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", download.Result{}, err
	}
	path := filepath.Join(dir, art.SHA256+".part")
	d := download.Downloader{API: a.inst.api, Client: a.inst.client, InterruptAt: a.cfg.DownloadInterruptAt}
	res, err := d.ToFile(ctx, &a.creds, art.SHA256, art.Size, path)
	if err != nil {
		return "", res, fmt.Errorf("download of artifact %s: %w", art.SHA256, err)
	}
	return path, res, nil
}

// DownloadAuth returns the credentials of the device's downloads: its
// MQTT user name and enrollment secret.
func (c *Credentials) DownloadAuth() (string, string) {
	user := c.MQTTUsername
	if user == "" {
		user = c.DeviceID
	}
	return user, c.MQTTPassword
}

// progress reports an interim stage of a job (status running). The node
// records the first running report of a job and ignores the later ones
// today; they cost one queued message each.
func (a *Agent) progress(job, stage string, res apitypes.InstallResult) {
	body, err := json.Marshal(struct {
		Stage string `json:"stage"`
		apitypes.InstallResult
	}{stage, res})
	if err != nil {
		return
	}
	if _, err := a.answer(job, Result{Status: apitypes.ResultRunning, Result: body}); err != nil {
		a.log.Warn("cannot queue a progress report", "job", job, "err", err)
	}
}

// inventoryNow asks the inventory loop for an inventory at once.
func (a *Agent) inventoryNow() {
	select {
	case a.invNow <- struct{}{}:
	default:
	}
}

// HasPackageManager reports whether this host has the package manager
// of a deb (dpkg) or an rpm (rpm) artifact: the default
// Config.HasPackageManager.
func HasPackageManager(pkgType string) bool {
	tool := map[string]string{apitypes.ArtifactDeb: "dpkg", apitypes.ArtifactRPM: "rpm"}[pkgType]
	if tool == "" {
		return false
	}
	_, err := exec.LookPath(tool)
	return err == nil
}
