// Command strata-sim simulates many Strata devices in one process: it
// enrolls them (or reads saved credentials), holds their MQTT sessions,
// sends telemetry at a total rate, answers commands, and reports connect
// rate, message rate and latencies. See docs/simulator.md.
//
//	strata-sim --api https://node:8443 --enroll-token se_... --devices 5000 --rate 2000 --duration 60s
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/probes/sim"
)

// envToken may hold the enrollment token instead of --enroll-token, which
// would show in the process list.
const envToken = "STRATA_ENROLL_TOKEN"

func main() {
	a := &app{stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	os.Exit(a.run(os.Args[1:]))
}

// app is one invocation with its streams and environment, so tests run it
// in process.
type app struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// signals, when set, replaces SIGINT/SIGTERM (tests).
	signals <-chan os.Signal
}

// options are the flags that do not map one to one onto sim.Config.
type options struct {
	cfg            sim.Config
	caFile         string
	sourceAddrs    []string
	sourceRange    string
	qos            int
	json           bool
	verbose        bool
	noRaiseLimit   bool
	reportInterval time.Duration
	// download: every device downloads this artifact once (sha256), then
	// the fleet stops.
	download            string
	downloadConcurrency int
	downloadInterruptAt int64
	// trustedKeys verify the releases of install commands.
	trustedKeys []string
}

func (a *app) run(args []string) int {
	o := &options{cfg: sim.DefaultConfig()}
	root := a.command(o)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintf(a.stderr, "strata-sim: %v\n", err)
		return 1
	}
	return 0
}

func (a *app) command(o *options) *cobra.Command {
	c := &cobra.Command{
		Use:           "strata-sim",
		Short:         "Simulate many Strata devices over MQTT and report load figures",
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE:          func(c *cobra.Command, _ []string) error { return a.simulate(c.Context(), o) },
	}
	c.SetOut(a.stdout)
	c.SetErr(a.stderr)
	c.CompletionOptions.DisableDefaultCmd = true
	fl := c.Flags()
	cfg := &o.cfg
	fl.StringVar(&cfg.API, "api", "", "node API base URL, https://HOST:PORT (enrollment)")
	fl.StringVar(&cfg.EnrollToken, "enroll-token", "", "enrollment token (default $"+envToken+")")
	fl.IntVar(&cfg.Devices, "devices", 1, "number of simulated devices")
	fl.Float64Var(&cfg.Rate, "rate", 0, "telemetry messages per second over all devices")
	fl.DurationVar(&cfg.Duration, "duration", 30*time.Second, "run time after the connect phase (0: until interrupted)")
	fl.StringVar(&o.caFile, "ca", "", "PEM file of CA certificates trusted for the API and MQTT TLS")
	fl.StringVar(&cfg.CredentialsFile, "credentials", "", "JSON lines of saved credentials (enrollment responses) to use first")
	fl.StringVar(&cfg.SaveCredentials, "save-credentials", "", "write every device's credentials to this file as JSON lines")
	fl.StringVar(&cfg.MQTTAddr, "mqtt", "", "MQTT HOST:PORT, overriding the credentials' mqtt_address")
	fl.BoolVar(&cfg.Plain, "plain", false, "plain TCP instead of TLS for MQTT")
	fl.BoolVar(&cfg.Anonymous, "anonymous", false, "no enrollment nor username: client ids <id-prefix>0..N-1 (raw broker baseline)")
	fl.StringVar(&cfg.IDPrefix, "id-prefix", cfg.IDPrefix, "device naming: hardware ids sim-<prefix>-<n>, anonymous client ids <prefix><n>")
	fl.IntVar(&o.qos, "qos", int(cfg.QoS), "telemetry QoS, 0 or 1")
	fl.IntVar(&cfg.PayloadBytes, "payload-bytes", cfg.PayloadBytes, "approximate telemetry payload size")
	fl.Float64Var(&cfg.ConnectRate, "connect-rate", cfg.ConnectRate, "connection attempts per second")
	fl.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", cfg.ConnectConcurrency, "connection attempts in progress at most")
	fl.IntVar(&cfg.EnrollConcurrency, "enroll-concurrency", cfg.EnrollConcurrency, "enrollment requests in progress at most")
	fl.IntVar(&cfg.Inflight, "inflight", cfg.Inflight, "per-device window of unacknowledged QoS 1 telemetry")
	fl.BoolVar(&cfg.Idle, "idle", false, "hold sessions without telemetry until the duration ends")
	fl.BoolVar(&cfg.AnswerCommands, "answer-commands", cfg.AnswerCommands, "subscribe to strata/<id>/cmd/+ and answer with an echo of the args")
	fl.BoolVar(&cfg.CleanSession, "clean-session", cfg.CleanSession, "CONNECT clean session flag")
	fl.BoolVar(&cfg.Reconnect, "reconnect", cfg.Reconnect, "re-open lost sessions with backoff")
	fl.DurationVar(&cfg.Keepalive, "keepalive", cfg.Keepalive, "MQTT keepalive")
	fl.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "bound on dial + TLS handshake + CONNACK")
	fl.StringSliceVar(&o.sourceAddrs, "source-addrs", nil, "local addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2")
	fl.StringVar(&o.sourceRange, "source-range", "", "a range of local addresses, e.g. 127.0.0.1-127.0.0.8")
	fl.StringVar(&o.download, "download", "", "artifact SHA-256: once connected, every device downloads it from --api with its credentials, then the fleet stops")
	fl.IntVar(&o.downloadConcurrency, "download-concurrency", 64, "device downloads in progress at most")
	fl.Int64Var(&o.downloadInterruptAt, "download-interrupt-at", 0, "cut each device's download once after this many bytes, so that it resumes (0: no cut)")
	fl.StringArrayVar(&o.trustedKeys, "trusted-key", nil, "Ed25519 public key (base64, or a file) install commands' releases must be signed with; repeatable (none: the signature is not checked)")
	fl.StringVar(&cfg.InstallOS, "install-os", cfg.InstallOS, "operating system whose artifact install commands pick")
	fl.StringVar(&cfg.InstallArch, "install-arch", cfg.InstallArch, "architecture whose artifact install commands pick")
	fl.IntVar(&cfg.InstallConcurrency, "install-concurrency", cfg.InstallConcurrency, "install downloads in progress at most over the fleet")
	fl.BoolVar(&o.json, "json", false, "print the final report as JSON")
	fl.DurationVar(&o.reportInterval, "report-interval", 5*time.Second, "period of progress lines on stderr (0: none)")
	fl.BoolVar(&o.verbose, "verbose", false, "log the first error of each kind to stderr")
	fl.BoolVar(&o.noRaiseLimit, "no-raise-nofile", false, "leave RLIMIT_NOFILE alone")
	return c
}

// config completes o.cfg from the flags that need work.
func (a *app) config(o *options) (sim.Config, error) {
	cfg := o.cfg
	if o.qos != 0 && o.qos != 1 {
		return cfg, fmt.Errorf("--qos must be 0 or 1")
	}
	cfg.QoS = byte(o.qos)
	if cfg.EnrollToken == "" {
		if v, ok := a.lookupEnv(envToken); ok {
			cfg.EnrollToken = v
		}
	}
	if cfg.API == "" {
		cfg.EnrollToken = "" // a token alone (from the environment) is no error
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return cfg, fmt.Errorf("--ca: %w", err)
		}
		cfg.CAPEM = pem
	}
	addrs, err := sourceAddrs(o.sourceAddrs, o.sourceRange)
	if err != nil {
		return cfg, err
	}
	cfg.SourceAddrs = addrs
	cfg.ReportInterval = o.reportInterval
	for _, k := range o.trustedKeys {
		pub, err := apitypes.ParsePublicKey(k)
		if err != nil {
			data, ferr := os.ReadFile(k)
			if ferr != nil {
				return cfg, fmt.Errorf("--trusted-key %q: neither a base64 key nor a readable file: %v", k, ferr)
			}
			if pub, err = apitypes.ParsePublicKey(string(data)); err != nil {
				return cfg, fmt.Errorf("--trusted-key %s: %v", k, err)
			}
		}
		cfg.TrustedKeys = append(cfg.TrustedKeys, pub)
	}
	if o.download != "" && (cfg.API == "" || cfg.Anonymous) {
		return cfg, fmt.Errorf("--download needs --api and device credentials")
	}
	return cfg, cfg.Validate()
}

func (a *app) simulate(ctx context.Context, o *options) error {
	cfg, err := a.config(o)
	if err != nil {
		return err
	}
	if !o.noRaiseLimit {
		n, err := sim.RaiseFileLimit()
		if err != nil {
			fmt.Fprintf(a.stderr, "strata-sim: raising RLIMIT_NOFILE: %v\n", err)
		} else if n > 0 && n < uint64(cfg.Devices)+256 {
			fmt.Fprintf(a.stderr, "strata-sim: warning: RLIMIT_NOFILE is %d, below %d devices\n", n, cfg.Devices)
		}
	}
	if o.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, nil))
	}
	p := &progress{w: a.stderr}
	if cfg.ReportInterval > 0 {
		cfg.Progress = p.line
	}
	f, err := sim.NewFleet(cfg)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := f.Start(ctx); err != nil {
		return err
	}
	sigs := a.signals
	if sigs == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(ch)
		sigs = ch
	}
	dlCtx, cancelDownloads := context.WithCancel(ctx)
	defer cancelDownloads()
	var downloads chan sim.DownloadReport
	if o.download != "" {
		downloads = make(chan sim.DownloadReport, 1)
		go func() {
			select {
			case <-f.Ready():
			case <-f.Done():
				downloads <- sim.DownloadReport{}
				return
			}
			d := sim.Downloader{InterruptAt: o.downloadInterruptAt}
			downloads <- f.DownloadAll(dlCtx, o.download, o.downloadConcurrency, d)
			f.Stop()
		}()
	}
	select {
	case <-sigs:
		fmt.Fprintln(a.stderr, "strata-sim: stopping")
		cancelDownloads()
		f.Stop()
	case <-f.Done():
	}
	r, runErr := f.Wait()
	if downloads != nil {
		d := <-downloads
		w := a.stdout
		if o.json {
			w = a.stderr // stdout holds the report's JSON only
		}
		fmt.Fprintf(w, "download: %d ok, %d failed %v, %d bytes, %d requests, %d resumes, %v, %.1f MB/s\n",
			d.OK, d.Failed, d.Errors, d.Bytes, d.Requests, d.Resumes, d.Elapsed.Round(time.Millisecond), d.Throughput/1e6)
		if d.Failed > 0 && runErr == nil {
			runErr = fmt.Errorf("%d of %d downloads failed", d.Failed, d.Devices)
		}
	}
	if o.json {
		if err := writeJSON(a.stdout, r); err != nil {
			return err
		}
	} else {
		writeText(a.stdout, r)
	}
	return runErr
}
