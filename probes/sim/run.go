package sim

import (
	"context"
	"errors"
	"sync"
	"time"
)

// run is the fleet's owning goroutine: it starts each phase's goroutines
// in order and stops them in reverse (see Fleet).
func (f *Fleet) run(ctx context.Context) {
	defer close(f.done)
	defer f.cancel(nil)
	var bg sync.WaitGroup // progress and keepalive
	bgCtx, stopBg := context.WithCancel(context.Background())
	defer func() {
		stopBg()
		bg.Wait()
		f.finish(ctx)
	}()
	if f.cfg.ReportInterval > 0 && f.cfg.Progress != nil {
		bg.Go(func() { f.runProgress(bgCtx) })
	}

	var creds []Credentials
	if !f.cfg.Anonymous {
		var err error
		if creds, err = f.credentials(ctx); err != nil {
			if !errors.Is(err, errStopped) { // Stop before connecting is no failure
				f.err = err
			}
			return
		}
	}
	devs, err := f.buildDevices(creds)
	if err != nil {
		f.err = err
		return
	}
	f.mu.Lock()
	f.devices = devs
	f.phase, f.connectStart = "connecting", time.Now()
	f.mu.Unlock()

	// Connect phase.
	f.queue = make(chan *device, len(devs))
	f.firstLeft.Store(int64(len(devs)))
	for _, d := range devs {
		f.queue <- d
	}
	bg.Go(func() { f.runKeepalive(bgCtx) })
	f.installs.start(ctx, f.cfg.InstallConcurrency)
	connCtx, stopConnects := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for range min(f.cfg.ConnectConcurrency, len(devs)) {
		workers.Go(func() { f.connectWorker(connCtx) })
	}
	defer func() { // shutdown, in reverse
		f.setPhase("stopping")
		stopConnects()
		workers.Wait()
		f.mu.Lock()
		f.connectedAtEnd = f.stats.connected.Load()
		f.mu.Unlock()
		f.installs.stop()
		for _, d := range devs {
			d.shutdown()
		}
		f.readers.Wait()
	}()
	select {
	case <-f.ready:
	case <-ctx.Done():
		return
	}

	// Telemetry phase.
	f.mu.Lock()
	f.phase, f.telemetryStart = "running", time.Now()
	f.mu.Unlock()
	var end <-chan time.Time
	if f.cfg.Duration > 0 {
		t := time.NewTimer(f.cfg.Duration)
		defer t.Stop()
		end = t.C
	}
	telCtx, stopTelemetry := context.WithCancel(ctx)
	var tel sync.WaitGroup
	if !f.cfg.Idle && f.cfg.Rate > 0 {
		f.telemetryOn.Store(true)
		tel.Go(func() { f.runTelemetry(telCtx) })
	}
	select {
	case <-end:
	case <-ctx.Done():
	}
	f.telemetryOn.Store(false)
	stopTelemetry()
	tel.Wait()
	f.mu.Lock()
	f.telemetryTime = time.Since(f.telemetryStart)
	f.countAtEnd = f.delivered()
	f.mu.Unlock()
	f.drain(ctx, devs)
}

// delivered is the count the message rate is made of.
func (f *Fleet) delivered() int64 {
	if f.cfg.QoS == 0 {
		return f.stats.sent.Load()
	}
	return f.stats.acked.Load()
}

// drain waits, up to drainTimeout, for the PUBACKs of telemetry in flight.
func (f *Fleet) drain(ctx context.Context, devs []*device) {
	if f.cfg.QoS == 0 || f.stats.sent.Load() == 0 {
		return
	}
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n := 0
		for _, d := range devs {
			n += d.unacked()
		}
		if n == 0 {
			return
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// finish records the final report and error; the run is over.
func (f *Fleet) finish(ctx context.Context) {
	r := f.Stats()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phase = "done"
	r.Phase = "done"
	if f.devices != nil {
		r.Connected = f.connectedAtEnd
	}
	r.Inflight = 0
	f.report = r
	if cause := context.Cause(ctx); f.err == nil && cause != nil && !errors.Is(cause, errStopped) {
		f.err = cause
	}
}

// Stats returns a snapshot of the fleet's figures; it may be called at
// any time, from any goroutine.
func (f *Fleet) Stats() Report {
	var r Report
	f.stats.snapshot(&r)
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	r.Phase, r.Devices = f.phase, f.cfg.Devices
	if !f.begin.IsZero() {
		r.Elapsed = now.Sub(f.begin)
	}
	r.EnrollTime = f.enrollTime
	r.ConnectTime = f.connectTime
	connects := f.connectsAtReady
	if r.ConnectTime == 0 && !f.connectStart.IsZero() {
		r.ConnectTime, connects = now.Sub(f.connectStart), r.Connects
	}
	if r.ConnectTime > 0 {
		r.ConnectRate = float64(connects) / r.ConnectTime.Seconds()
	}
	r.TelemetryTime = f.telemetryTime
	count := f.countAtEnd
	if r.TelemetryTime == 0 && !f.telemetryStart.IsZero() {
		r.TelemetryTime, count = now.Sub(f.telemetryStart), f.delivered()
	}
	if r.TelemetryTime > 0 {
		r.MessageRate = float64(count) / r.TelemetryTime.Seconds()
	}
	if f.cfg.QoS == 1 {
		r.Inflight = max(0, r.Sent-r.Acked-r.Lost)
	}
	return r
}

func (f *Fleet) runProgress(ctx context.Context) {
	t := time.NewTicker(f.cfg.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.cfg.Progress(f.Stats())
		}
	}
}
