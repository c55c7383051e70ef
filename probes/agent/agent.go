package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures an Agent. Zero values take the defaults noted.
type Config struct {
	// StateDir holds credentials, settings, the outbound queue and the job
	// log (required; created with mode 0700 if missing).
	StateDir string
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
	// Version is reported as agent_version in the inventory.
	Version string

	// TelemetryInterval and InventoryInterval are the defaults of the
	// settings set-config may change (default 30s and 1h).
	TelemetryInterval time.Duration
	InventoryInterval time.Duration

	// AllowReboot lets the reboot function run; Reboot does it (default
	// SystemReboot). Tests inject a fake.
	AllowReboot bool
	Reboot      func(ctx context.Context) error
	// ScriptsDir is the run-script allow-list; empty refuses run-script.
	ScriptsDir string
	// LogPaths are collect-logs' files (default DefaultLogPaths); Journal
	// adds journalctl's output when journalctl exists.
	LogPaths []string
	Journal  bool

	// MQTTAddress overrides the credentials' mqtt_address (HOST:PORT).
	MQTTAddress string

	// TrustedKeys verify the releases install is given; without any,
	// install is refused. The node's keys are never used.
	TrustedKeys []ed25519.PublicKey
	// API overrides the node's API URL saved at enrollment
	// (https://HOST:PORT), where artifacts are downloaded from.
	// APICAPEM is trusted for it besides the enrollment's ca_pem.
	API      string
	APICAPEM []byte
	// InstallRoot, when set, makes install work inside that directory
	// instead of the system: deb and rpm into a package database of
	// their own there, tar and binary under it (else under
	// DefaultSoftwareDir). For tests and staging.
	InstallRoot string
	// HasPackageManager reports whether a deb ("deb": dpkg) or rpm
	// ("rpm": rpm) can be installed here (default HasPackageManager).
	HasPackageManager func(pkgType string) bool
	// DownloadInterruptAt, when positive, cuts the first answer of each
	// artifact download after that many bytes, as a network failure
	// would (tests of resumption).
	DownloadInterruptAt int64
	// ReconnectMin and ReconnectMax bound the reconnect backoff (default
	// 1s and 60s): the delay before attempt n is uniform in
	// [0, min(max, min·2ⁿ)] (full jitter).
	ReconnectMin, ReconnectMax time.Duration

	// QueueMaxEntries and QueueMaxBytes bound the outbound queue (default
	// 10,000 and 64 MiB); past them the oldest entries are dropped.
	QueueMaxEntries int
	QueueMaxBytes   int64
	// JobsRemembered is how many job ids are kept for de-duplication
	// (default 10,000). Workers run commands (default 4).
	JobsRemembered int
	Workers        int
}

// Validate checks cfg and fills its defaults.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("state directory is required")
	}
	setDefault(&c.TelemetryInterval, 30*time.Second)
	setDefault(&c.InventoryInterval, time.Hour)
	setDefault(&c.ReconnectMin, time.Second)
	setDefault(&c.ReconnectMax, time.Minute)
	setDefault(&c.QueueMaxEntries, 10_000)
	setDefault(&c.QueueMaxBytes, 64<<20)
	setDefault(&c.JobsRemembered, 10_000)
	setDefault(&c.Workers, 4)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Reboot == nil {
		c.Reboot = SystemReboot
	}
	if c.LogPaths == nil {
		c.LogPaths = DefaultLogPaths()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.HasPackageManager == nil {
		c.HasPackageManager = HasPackageManager
	}
	if c.InstallRoot != "" && !filepath.IsAbs(c.InstallRoot) {
		return fmt.Errorf("install root %q: want an absolute path", c.InstallRoot)
	}
	switch {
	case c.TelemetryInterval < 0 || c.InventoryInterval < 0:
		return errors.New("intervals must be positive")
	case c.ReconnectMin > c.ReconnectMax:
		return errors.New("reconnect min exceeds max")
	case c.QueueMaxEntries < 0 || c.QueueMaxBytes < 0 || c.JobsRemembered < 0 || c.Workers < 0:
		return errors.New("limits must be positive")
	}
	if c.MQTTAddress != "" {
		if _, _, err := net.SplitHostPort(c.MQTTAddress); err != nil {
			return fmt.Errorf("mqtt address %q: %w", c.MQTTAddress, err)
		}
	}
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Agent is a running device agent: one MQTT session to its node, kept up
// with backoff, and the loops that feed it. Lifecycle: New, Start once,
// Shutdown (safe twice; also releases a never-started agent).
type Agent struct {
	cfg      Config
	log      *slog.Logger
	creds    Credentials
	prefix   string
	address  string
	tls      *tls.Config
	lock     *os.File
	queue    *diskQueue
	jobs     *jobLog
	settings *settingsStore
	inst     *installer
	// installMu (capacity 1) runs one install at a time.
	installMu chan struct{}
	funcs     map[string]*function
	cmds      chan delivery
	invNow    chan struct{} // asks for an inventory now (on connect)

	duplicates atomic.Int64 // deliveries ignored as already run

	mu     sync.Mutex
	sess   *session      // current connected session, or nil
	sessC  chan struct{} // closed and replaced when sess changes
	ready  chan struct{} // closed at the first connect
	readyO sync.Once

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	stopOnce sync.Once
	stopErr  error
}

// New opens the state directory (which must hold credentials: see Enroll)
// and returns an agent ready to Start, or releases what it opened.
func New(cfg Config) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"),
		cmds: make(chan delivery, 64), invNow: make(chan struct{}, 1),
		sessC: make(chan struct{}), ready: make(chan struct{}), installMu: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			a.closeState()
		}
	}()
	if a.lock, err = lockState(filepath.Join(cfg.StateDir, lockFile)); err != nil {
		return nil, err
	}
	creds, err := LoadCredentials(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a.creds, a.prefix, a.address = *creds, creds.Prefix(), creds.MQTTAddress
	if cfg.MQTTAddress != "" {
		a.address = cfg.MQTTAddress
	}
	if a.tls, err = clientTLS(creds.CAPEM, a.address); err != nil {
		return nil, err
	}
	a.log = a.log.With("device", creds.DeviceID)
	if a.queue, err = openQueue(cfg.StateDir, queueLimits{cfg.QueueMaxEntries, cfg.QueueMaxBytes}, a.log); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if a.jobs, err = openJobLog(cfg.StateDir, cfg.JobsRemembered, a.log); err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	defaults := Settings{TelemetryInterval: cfg.TelemetryInterval, InventoryInterval: cfg.InventoryInterval}
	if a.settings, err = openSettings(cfg.StateDir, defaults); err != nil {
		return nil, err
	}
	if a.inst, err = newInstaller(&a.cfg, creds); err != nil {
		return nil, err
	}
	a.funcs = map[string]*function{}
	for _, f := range a.functions() {
		a.funcs[f.Name] = f
	}
	return a, nil
}

// clientTLS trusts caPEM (else the system roots) and checks the broker's
// certificate against the host of address. TLS 1.2 at least; verification
// can never be turned off.
func clientTLS(caPEM, address string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("mqtt address %q: %w", address, err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("ca_pem: no certificate found")
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// DeviceID returns the device id the agent runs as.
func (a *Agent) DeviceID() string { return a.creds.DeviceID }

// Ready returns a channel closed once the agent first connects to its node.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Start launches the agent's goroutines: the connection loop, the sender,
// telemetry, inventory and the command workers. They run until Shutdown;
// ctx is not retained.
func (a *Agent) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent already started")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.log.Info("agent starting", "version", a.cfg.Version, "mqtt", a.address, "queued", a.queue.len())
	a.event("agent-started", "info", map[string]any{"version": a.cfg.Version})
	a.goFunc(func() { a.connectLoop(runCtx) })
	a.goFunc(func() { a.sendLoop(runCtx) })
	a.goFunc(func() { a.telemetryLoop(runCtx) })
	a.goFunc(func() { a.inventoryLoop(runCtx) })
	for range a.cfg.Workers {
		a.goFunc(func() { a.worker(runCtx) })
	}
	return nil
}

func (a *Agent) goFunc(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// Shutdown stops the goroutines (disconnecting cleanly from the broker),
// waits for them and closes the state. If ctx ends first it returns
// ctx.Err() and leaves the state open for a later call. Safe twice.
func (a *Agent) Shutdown(ctx context.Context) error {
	if a.cancel != nil {
		a.cancel()
	}
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	a.stopOnce.Do(func() {
		a.stopErr = a.closeState()
		a.log.Info("agent stopped")
	})
	return a.stopErr
}

// Run starts the agent and stops it when ctx ends, allowing 10s to stop.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		a.Shutdown(context.Background())
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.Shutdown(sctx)
}

func (a *Agent) closeState() error {
	var errs []error
	if a.inst != nil {
		a.inst.client.CloseIdleConnections()
	}
	if a.queue != nil {
		errs = append(errs, a.queue.close())
	}
	if a.jobs != nil {
		errs = append(errs, a.jobs.close())
	}
	if a.lock != nil {
		errs = append(errs, a.lock.Close())
		a.lock = nil
	}
	return errors.Join(errs...)
}
