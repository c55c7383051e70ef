package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/probes/download"
)

// Pretend installs: a simulated device offers install like strata-agent
// (docs/agent.md) and does everything but install. It parses the same
// args, verifies the signature when the fleet has trusted keys (else
// checks only the manifest's form), refuses an expired manifest and an
// unallowed downgrade, picks the artifact of its platform
// (Config.InstallOS/InstallArch), downloads it from its node with its
// credentials while hashing it (the bytes are discarded: nothing is held
// in memory or written), verifies the SHA-256, and reports success with
// the version, which its inventory then shows.

// installedSoftware is one release a simulated device holds.
type installedSoftware = apitypes.InstalledSoftware

// installs owns the goroutines of pretend installs: onPublish runs on a
// connection's reader and must not block, so each install runs on its own
// goroutine, bounded by sem, and the fleet's shutdown waits for them.
type installs struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
	sem    chan struct{}
}

// start prepares installs for a run of the fleet ending with ctx.
func (in *installs) start(ctx context.Context, concurrency int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.ctx, in.cancel = context.WithCancel(ctx)
	in.sem = make(chan struct{}, max(concurrency, 1))
}

// goInstall runs fn on a new goroutine unless the fleet is stopping.
func (in *installs) goInstall(fn func(ctx context.Context)) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || in.ctx == nil {
		return false
	}
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		select {
		case in.sem <- struct{}{}:
			defer func() { <-in.sem }()
		case <-in.ctx.Done():
			return
		}
		fn(in.ctx)
	}()
	return true
}

// stop cancels the installs in progress and waits for them.
func (in *installs) stop() {
	in.mu.Lock()
	in.closed = true
	cancel := in.cancel
	in.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	in.wg.Wait()
}

// isInstall reports whether cmd is an install the device handles itself.
func isInstall(cmd *Command) bool { return cmd.Function == apitypes.FunctionInstall }

// onInstall handles an install command on the reader goroutine: it
// answers at once what needs no download (bad args, refusals, the
// installed version) and starts the download otherwise. A redelivered
// job whose install is in progress is left to it.
func (d *device) onInstall(c *conn, topic string, cmd Command) {
	f := d.f
	res, m, art, err := d.prepareInstall(cmd)
	if err != nil {
		f.stats.count(&f.stats.installFails, "refused")
	}
	if err != nil || res.AlreadyInstalled {
		d.answerInstall(c, topic, cmd.Job, res, err)
		return
	}
	d.mu.Lock()
	if d.installing[cmd.Job] {
		d.mu.Unlock()
		return
	}
	if d.installing == nil {
		d.installing = map[string]bool{}
	}
	d.installing[cmd.Job] = true
	d.mu.Unlock()
	started := f.installs.goInstall(func(ctx context.Context) {
		err := d.pretendInstall(ctx, m, art, &res)
		d.mu.Lock()
		delete(d.installing, cmd.Job)
		c := d.c // the session now: the result goes where the device is
		d.mu.Unlock()
		if c != nil {
			d.answerInstall(c, topic, cmd.Job, res, err)
		}
	})
	if !started {
		d.mu.Lock()
		delete(d.installing, cmd.Job)
		d.mu.Unlock()
	}
}

// prepareInstall checks an install command: its args, the signature (with
// the fleet's trusted keys), expiry, the installed version and the
// artifact of the device's platform.
func (d *device) prepareInstall(cmd Command) (apitypes.InstallResult, *apitypes.Manifest, apitypes.Artifact, error) {
	f := d.f
	var res apitypes.InstallResult
	args, err := apitypes.ParseInstallArgs(cmd.Args)
	if err != nil {
		return res, nil, apitypes.Artifact{}, err
	}
	var m *apitypes.Manifest
	if len(f.cfg.TrustedKeys) > 0 {
		m, err = args.Release.Verify(f.cfg.TrustedKeys)
	} else {
		m, err = apitypes.ParseManifest(args.Release.Manifest)
	}
	if err != nil {
		return res, nil, apitypes.Artifact{}, fmt.Errorf("release refused: %v", err)
	}
	res.Name, res.Version = m.Name, m.Version
	if !time.Now().Before(m.ExpiresTime()) {
		return res, nil, apitypes.Artifact{}, fmt.Errorf("release refused: release %s %s expired at %s", m.Name, m.Version, m.Expires)
	}
	d.mu.Lock()
	cur, have := d.software[m.Name]
	d.mu.Unlock()
	if have {
		res.Previous = cur.sw.Version
	}
	if have && cur.sw.Version == m.Version {
		res.SHA256, res.Type, res.Previous, res.AlreadyInstalled = cur.sha256, cur.sw.Type, cur.previous, true
		return res, m, apitypes.Artifact{}, nil
	}
	if have && !args.Downgrade && apitypes.CompareVersions(m.Version, cur.sw.Version) < 0 {
		return res, nil, apitypes.Artifact{}, fmt.Errorf("downgrade refused: %s %s is installed and %s is older (set downgrade to allow it)",
			m.Name, cur.sw.Version, m.Version)
	}
	art, err := apitypes.ChooseArtifact(m, f.cfg.InstallOS, f.cfg.InstallArch, func(t string) bool {
		return t == apitypes.ArtifactDeb // a simulated Debian: it prefers debs
	})
	if err != nil {
		return res, nil, apitypes.Artifact{}, err
	}
	res.SHA256, res.Type = art.SHA256, art.Type
	return res, m, art, nil
}

// simSoftware is a release a simulated device pretends to hold.
type simSoftware struct {
	sw       installedSoftware
	sha256   string
	previous string
}

// pretendInstall downloads art, hashing and discarding the bytes, and
// records the release as installed.
func (d *device) pretendInstall(ctx context.Context, m *apitypes.Manifest, art apitypes.Artifact, res *apitypes.InstallResult) error {
	f := d.f
	dl := f.cfg.InstallDownloader
	if err := f.fillDownloader(&dl, d.n); err != nil {
		return err
	}
	r, err := dl.Download(ctx, download.Basic{User: d.username, Secret: d.password}, art.SHA256, io.Discard)
	res.Bytes, res.Resumed = r.Received, r.Resumes > 0
	if err == nil && r.Size != art.Size {
		err = fmt.Errorf("artifact %s: %d bytes, the manifest says %d", art.SHA256, r.Size, art.Size)
	}
	if err != nil {
		f.stats.count(&f.stats.installFails, download.Reason(err))
		return fmt.Errorf("download of artifact %s: %w", art.SHA256, err)
	}
	d.mu.Lock()
	if d.software == nil {
		d.software = map[string]simSoftware{}
	}
	d.software[m.Name] = simSoftware{
		sw:     installedSoftware{Name: m.Name, Version: m.Version, Type: art.Type, Installed: time.Now().UTC().Truncate(time.Second)},
		sha256: art.SHA256, previous: res.Previous,
	}
	d.mu.Unlock()
	f.stats.installs.Add(1)
	return nil
}

// answerInstall publishes an install's result (and, after a success, the
// inventory showing it first).
func (d *device) answerInstall(c *conn, topic, job string, res apitypes.InstallResult, err error) {
	body := apitypes.CommandResult{Status: apitypes.ResultSucceeded}
	if err != nil {
		body = apitypes.CommandResult{Status: apitypes.ResultFailed, Error: err.Error()}
	} else {
		body.Result, _ = json.Marshal(res)
		_ = c.publish(d.prefix+"inventory", d.inventory(), 0, 0)
	}
	payload, _ := json.Marshal(body)
	d.mu.Lock()
	if d.c != c {
		d.mu.Unlock()
		return // the session is gone: the node delivers the job again
	}
	id := d.reserve(pending{at: time.Now(), job: job})
	d.mu.Unlock()
	_ = c.publish(topic+"/result", payload, 1, id)
}

// inventory is the device's inventory: Config.Inventory's or the default,
// with the software it holds (a software list and a software.<name>
// version each, as strata-agent sends them).
func (d *device) inventory() []byte {
	f := d.f
	inv := inventoryPayload
	if f.cfg.Inventory != nil {
		inv = f.cfg.Inventory(d.n)
	}
	d.mu.Lock()
	held := make([]simSoftware, 0, len(d.software))
	for _, s := range d.software {
		held = append(held, s)
	}
	d.mu.Unlock()
	if len(held) == 0 {
		return inv
	}
	slices.SortFunc(held, func(a, b simSoftware) int { return strings.Compare(a.sw.Name, b.sw.Name) })
	base := bytes.TrimSpace(inv)
	if len(base) < 2 || base[len(base)-1] != '}' {
		return inv // not an object: nothing to add to
	}
	base = base[:len(base)-1]
	var b bytes.Buffer
	b.Write(base)
	if !bytes.HasSuffix(bytes.TrimSpace(base), []byte("{")) {
		b.WriteByte(',')
	}
	list := make([]installedSoftware, len(held))
	for i, s := range held {
		list[i] = s.sw
	}
	sw, _ := json.Marshal(list)
	b.WriteString(`"software":`)
	b.Write(sw)
	for _, s := range held {
		k, _ := json.Marshal(apitypes.SoftwareVariable(s.sw.Name))
		v, _ := json.Marshal(s.sw.Version)
		b.WriteByte(',')
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// Software returns the releases device n (an index) holds after pretend
// installs, by name.
func (f *Fleet) Software(n int) map[string]apitypes.InstalledSoftware {
	f.mu.Lock()
	var dev *device
	if n >= 0 && n < len(f.devices) {
		dev = f.devices[n]
	}
	f.mu.Unlock()
	out := map[string]apitypes.InstalledSoftware{}
	if dev == nil {
		return out
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	for name, s := range dev.software {
		out[name] = s.sw
	}
	return out
}
