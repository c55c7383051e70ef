// Command strata-agent is Strata's reference device agent: it enrolls the
// device with a node and then keeps it connected over MQTT, sending
// inventory and telemetry and running the node's commands. See
// docs/agent.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/probes/agent"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "strata-agent:", err)
		os.Exit(1)
	}
}

// agentVersion is the -X version, else the module version, else "dev".
func agentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// logFlags are the flags shared by every command that logs.
type logFlags struct {
	level, format string
}

func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.format)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	lf := &logFlags{}
	root := &cobra.Command{
		Use:           "strata-agent",
		Short:         "Strata device agent: enroll a device and keep it managed over MQTT",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&lf.level, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&lf.format, "log-format", "text", "log format on stderr: text or json")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newEnrollCmd(lf, stdout, stderr), newRunCmd(lf, stdout, stderr), newVersionCmd(stdout))
	return root
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version and platform",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			goos, goarch := agent.Platform()
			_, err := fmt.Fprintf(stdout, "strata-agent %s %s/%s %s\n", agentVersion(), goos, goarch, runtime.Version())
			return err
		},
	}
}

// enrollFlags are the flags of enroll, also accepted by run to enroll on
// first start.
type enrollFlags struct {
	state, api, token, tokenFile, ca, hardwareID string
}

func addEnrollFlags(cmd *cobra.Command, f *enrollFlags) {
	fs := cmd.Flags()
	fs.StringVar(&f.state, "state", "/var/lib/strata-agent", "state directory (credentials, queue, job log)")
	fs.StringVar(&f.api, "api", "", "node API base URL, https://HOST:PORT (run: also where artifacts are downloaded from, overriding the URL saved at enrollment)")
	fs.StringVar(&f.token, "token", "", "enrollment token (visible to other local users in the process list; prefer --token-file)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the enrollment token")
	fs.StringVar(&f.ca, "ca", "", "PEM file of the node CA to trust for the API (default: system roots)")
	fs.StringVar(&f.hardwareID, "hardware-id", "", "hardware id to enroll with (default: /etc/machine-id, else first MAC, else hostname)")
	cmd.MarkFlagsMutuallyExclusive("token", "token-file")
}

// enroll performs the enrollment described by f and saves the credentials.
func enroll(ctx context.Context, f *enrollFlags, log *slog.Logger) (*agent.Credentials, error) {
	if f.api == "" {
		return nil, errors.New("--api is required")
	}
	token := f.token
	if f.tokenFile != "" {
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(data))
	}
	if token == "" {
		return nil, errors.New("--token or --token-file is required")
	}
	var ca []byte
	if f.ca != "" {
		var err error
		if ca, err = os.ReadFile(f.ca); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
	}
	hw := f.hardwareID
	if hw == "" {
		var err error
		if hw, err = agent.HardwareID(); err != nil {
			return nil, err
		}
	}
	log.Info("enrolling", "api", f.api, "hardware_id", hw)
	creds, err := agent.Enroll(ctx, agent.EnrollRequest{API: f.api, Token: token, HardwareID: hw, CAPEM: ca})
	if err != nil {
		return nil, err
	}
	if err := agent.SaveCredentials(f.state, creds); err != nil {
		return nil, fmt.Errorf("saving credentials: %w", err)
	}
	return creds, nil
}

func printEnrolled(w io.Writer, c *agent.Credentials, state string) {
	fmt.Fprintf(w, "enrolled as device %s (tenant %q, group %q, path %s)\n", c.DeviceID, c.Tenant, c.Group, c.Path)
	fmt.Fprintf(w, "mqtt: %s; credentials saved to %s\n", c.MQTTAddress, filepath.Join(state, "credentials.json"))
}

func newEnrollCmd(lf *logFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &enrollFlags{}
	cmd := &cobra.Command{
		Use:   "enroll --api https://HOST:PORT --token T [--ca FILE] [--state DIR]",
		Short: "Exchange an enrollment token for device credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lf.logger(stderr)
			if err != nil {
				return err
			}
			creds, err := enroll(cmd.Context(), f, log)
			if err != nil {
				return err
			}
			printEnrolled(stdout, creds, f.state)
			return nil
		},
	}
	addEnrollFlags(cmd, f)
	return cmd
}

// runFlags are run's own flags.
type runFlags struct {
	telemetry, inventory time.Duration
	allowReboot          bool
	scriptsDir           string
	logPaths             []string
	journal              bool
	mqttAddress          string
	trustedKeys          []string
	installRoot          string
}

func newRunCmd(lf *logFlags, stdout, stderr io.Writer) *cobra.Command {
	ef, rf := &enrollFlags{}, &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [--state DIR] [--api URL --token T --ca FILE]",
		Short: "Run the agent (enrolling first if the state directory has no credentials and --api is given)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lf.logger(stderr)
			if err != nil {
				return err
			}
			if rf.telemetry < time.Second || rf.inventory < time.Minute {
				return errors.New("--telemetry-interval must be at least 1s and --inventory-interval at least 1m")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if _, err := agent.LoadCredentials(ef.state); errors.Is(err, agent.ErrNotEnrolled) {
				if ef.api == "" {
					return fmt.Errorf("%w: run strata-agent enroll first, or pass --api and --token", err)
				}
				creds, err := enroll(ctx, ef, log)
				if err != nil {
					return err
				}
				printEnrolled(stdout, creds, ef.state)
			} else if err != nil {
				return err
			}
			cfg := agent.Config{
				StateDir: ef.state, Logger: log, Version: agentVersion(),
				TelemetryInterval: rf.telemetry, InventoryInterval: rf.inventory,
				AllowReboot: rf.allowReboot, ScriptsDir: rf.scriptsDir,
				LogPaths: rf.logPaths, Journal: rf.journal, MQTTAddress: rf.mqttAddress,
				API: ef.api, InstallRoot: rf.installRoot,
			}
			if cfg.InstallRoot != "" {
				if cfg.InstallRoot, err = filepath.Abs(cfg.InstallRoot); err != nil {
					return fmt.Errorf("--install-root: %w", err)
				}
			}
			for _, k := range rf.trustedKeys {
				pub, err := agent.ParseTrustedKey(k)
				if err != nil {
					return fmt.Errorf("--trusted-key: %w", err)
				}
				cfg.TrustedKeys = append(cfg.TrustedKeys, pub)
			}
			if ef.ca != "" {
				if cfg.APICAPEM, err = os.ReadFile(ef.ca); err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	addEnrollFlags(cmd, ef)
	fs := cmd.Flags()
	fs.DurationVar(&rf.telemetry, "telemetry-interval", 30*time.Second, "telemetry sampling interval (set-config may change it)")
	fs.DurationVar(&rf.inventory, "inventory-interval", time.Hour, "inventory interval; inventory is also sent at every connect")
	fs.BoolVar(&rf.allowReboot, "allow-reboot", false, "let the reboot function reboot this machine")
	fs.StringVar(&rf.scriptsDir, "scripts-dir", "", "directory of scripts run-script may run (empty: run-script refused)")
	fs.StringArrayVar(&rf.logPaths, "log-path", nil, "log file for collect-logs; repeatable (default /var/log/syslog and /var/log/messages, when present)")
	fs.BoolVar(&rf.journal, "journal", true, "add journalctl output to collect-logs when journalctl exists")
	fs.StringVar(&rf.mqttAddress, "mqtt-address", "", "HOST:PORT of the MQTT endpoint, overriding the one enrollment returned")
	fs.StringArrayVar(&rf.trustedKeys, "trusted-key", nil, "Ed25519 public key (a file, or its base64) that release manifests must be signed with; repeatable; without any, install is refused")
	fs.StringVar(&rf.installRoot, "install-root", "", "install releases inside this directory instead of the system (deb/rpm with their own database there; tar/binary under it)")
	return cmd
}
