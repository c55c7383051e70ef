package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoDevices is returned when not one device has credentials (every
// enrollment failed).
var ErrNoDevices = errors.New("no device could be enrolled")

// errStopped is the cancellation cause of Stop.
var errStopped = errors.New("fleet stopped")

// drainTimeout bounds the wait for outstanding PUBACKs after telemetry.
const drainTimeout = 5 * time.Second

// Fleet is a running simulation of many devices in one process.
//
// Lifecycle: NewFleet validates the config and loads credentials; Start
// runs, in order, enrollment (devices without credentials), the connect
// phase (Ready is closed when every device has made its first attempt),
// the telemetry phase (Config.Duration, or until Stop), then shutdown:
// telemetry stops, outstanding PUBACKs are awaited (up to 5 s), pending
// connection attempts are abandoned, every session sends DISCONNECT, and
// every goroutine is waited for. Wait returns the final report. Stop may
// be called at any time, more than once.
type Fleet struct {
	cfg      Config
	log      *slog.Logger
	creds    []Credentials // given or loaded; the rest are enrolled
	net      *network
	stats    stats
	jobs     jobs
	installs installs
	pacer    *pacer
	// dlClients are the HTTP clients of device downloads, one per source
	// address (made by the first download; under mu).
	dlClients []*http.Client

	queue       chan *device
	readers     sync.WaitGroup // connection reader goroutines
	firstLeft   atomic.Int64   // devices yet to make a first attempt
	telemetryOn atomic.Bool

	ready, done chan struct{}
	cancel      context.CancelCauseFunc

	mu              sync.Mutex
	started         bool
	devices         []*device // set once, before the connect phase
	phase           string
	begin           time.Time
	enrollTime      time.Duration
	connectStart    time.Time
	connectTime     time.Duration
	connectsAtReady int64
	telemetryStart  time.Time
	telemetryTime   time.Duration
	countAtEnd      int64 // acked (QoS 1) or sent (QoS 0) when telemetry stopped
	connectedAtEnd  int64
	report          Report
	err             error
}

// NewFleet validates cfg and loads its credentials file.
func NewFleet(cfg Config) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg:   cfg,
		log:   cfg.Logger,
		pacer: newPacer(cfg.ConnectRate),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		phase: "new",
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("component", "sim")
	if !cfg.Anonymous {
		f.creds = append(f.creds, cfg.Credentials...)
		if cfg.CredentialsFile != "" && len(f.creds) < cfg.Devices {
			more, err := LoadCredentialsFile(cfg.CredentialsFile)
			if err != nil {
				return nil, err
			}
			f.creds = append(f.creds, more...)
		}
		if len(f.creds) < cfg.Devices && cfg.EnrollToken == "" {
			return nil, fmt.Errorf("%w: %d credentials for %d devices and no enrollment token",
				ErrInvalidConfig, len(f.creds), cfg.Devices)
		}
	}
	f.net = newNetwork(&f.cfg)
	if _, err := f.net.apiTLS(); err != nil {
		return nil, fmt.Errorf("%w: CA: %v", ErrInvalidConfig, err)
	}
	return f, nil
}

// Start runs the fleet in the background until Config.Duration has passed
// after the connect phase, Stop is called, or ctx ends.
func (f *Fleet) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return errors.New("sim: fleet already started")
	}
	f.started, f.begin = true, time.Now()
	ctx, f.cancel = context.WithCancelCause(ctx)
	go f.run(ctx)
	return nil
}

// Stop ends the run early; Wait then returns the report. It does not wait.
func (f *Fleet) Stop() {
	f.mu.Lock()
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		cancel(errStopped)
	}
}

// Ready is closed when every device has made its first connection attempt.
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// Done is closed when the run has ended and every goroutine is gone.
func (f *Fleet) Done() <-chan struct{} { return f.done }

// Wait waits for the end of the run and returns the final report. The
// error is non-nil when the run could not start (no devices) or ctx ended
// it; Stop is a normal end.
func (f *Fleet) Wait() (Report, error) {
	<-f.done
	return f.report, f.err
}

// ReceivedAt returns when the fleet first received the command of job.
func (f *Fleet) ReceivedAt(job string) (time.Time, bool) {
	t, ok := f.jobs.get(job)
	return t.received, ok
}

// AnsweredAt returns when the broker acknowledged the first result of job.
func (f *Fleet) AnsweredAt(job string) (time.Time, bool) {
	t, ok := f.jobs.get(job)
	return t.answered, ok && !t.answered.IsZero()
}

// DeviceIDs returns the simulated devices' ids (client ids), once known:
// after enrollment.
func (f *Fleet) DeviceIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(f.devices))
	for i, d := range f.devices {
		ids[i] = d.id
	}
	return ids
}

func (f *Fleet) setPhase(p string) {
	f.mu.Lock()
	f.phase = p
	f.mu.Unlock()
}

// note counts a failure under its reason and logs the first of each.
func (f *Fleet) note(m *map[string]int64, kind string, err error) {
	r := reason(err)
	if kind == "enroll" {
		r = enrollReason(err)
	}
	if f.stats.count(m, r) {
		f.log.Warn(kind+" failure", "reason", r, "err", err)
	}
}

// Run simulates a fleet and returns its final report: NewFleet, Start,
// Wait. Cancelling ctx ends the run (the report is still returned).
func Run(ctx context.Context, cfg Config) (Report, error) {
	f, err := NewFleet(cfg)
	if err != nil {
		return Report{}, err
	}
	if err := f.Start(ctx); err != nil {
		return Report{}, err
	}
	return f.Wait()
}

// buildDevices turns credentials (or, anonymous, generated ids) into
// devices.
func (f *Fleet) buildDevices(creds []Credentials) ([]*device, error) {
	cfg := &f.cfg
	if cfg.Anonymous {
		creds = make([]Credentials, cfg.Devices)
		for i := range creds {
			creds[i].DeviceID = cfg.IDPrefix + strconv.Itoa(i)
		}
	}
	devs := make([]*device, len(creds))
	for i := range creds {
		c := &creds[i]
		addr := cfg.MQTTAddr
		if addr == "" {
			addr = c.MQTTAddress
		}
		tlsConf, err := f.net.tlsFor(c.CAPEM, addr)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", c.DeviceID, err)
		}
		user := c.MQTTUsername
		if user == "" && !cfg.Anonymous {
			user = c.DeviceID
		}
		d := &device{
			f: f, n: i, id: c.DeviceID, username: user, password: c.MQTTPassword,
			addr: addr, tls: tlsConf, dialer: f.net.dialer(i), prefix: c.topicPrefix(),
		}
		d.telemetry = d.prefix + "telemetry"
		devs[i] = d
	}
	return devs, nil
}

// credentials returns the devices' credentials, enrolling the missing
// ones, and saves them when asked.
func (f *Fleet) credentials(ctx context.Context) ([]Credentials, error) {
	n := f.cfg.Devices
	creds := make([]Credentials, n)
	have := copy(creds, f.creds)
	if have < n {
		f.setPhase("enrolling")
		tlsConf, err := f.net.apiTLS()
		if err != nil {
			return nil, err
		}
		e := newEnroller(f.cfg.API, f.cfg.EnrollToken, tlsConf, f.net.dialers, f.cfg.EnrollConcurrency, &f.stats)
		start := time.Now()
		f.enrollAll(ctx, e, creds, have)
		e.close()
		f.mu.Lock()
		f.enrollTime = time.Since(start)
		f.mu.Unlock()
	}
	out := creds[:0]
	for _, c := range creds {
		if c.DeviceID != "" {
			out = append(out, c)
		}
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoDevices
	}
	if f.cfg.SaveCredentials != "" {
		if err := SaveCredentialsFile(f.cfg.SaveCredentials, out); err != nil {
			return nil, fmt.Errorf("save credentials: %w", err)
		}
	}
	return out, nil
}
