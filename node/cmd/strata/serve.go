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
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
)

// shutdownTimeout bounds a graceful stop after SIGINT or SIGTERM.
const shutdownTimeout = 30 * time.Second

// serveFlags override the file and the environment when set.
type serveFlags struct {
	config    string
	apiAddr   string
	dataDir   string
	logLevel  string
	logFormat string
}

func (a *app) serveCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve [--config FILE]",
		Short: "Run the node",
		Long: `Serve runs the node described by the config file until SIGINT or SIGTERM,
then stops it gracefully (at most 30s).

Settings come from, in increasing precedence: the defaults, the file,
STRATA_* environment variables (STRATA_API_ADDR, STRATA_LOG_LEVEL, ...),
and the flags below. Unknown keys in the file are errors.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, _ := a.configPath(f.config)
			cfg, err := loadServeConfig(path, c, f)
			if err != nil {
				return err
			}
			return a.serve(c.Context(), cfg, path)
		},
	}
	addConfigFlag(c, &f.config)
	fl := c.Flags()
	fl.StringVar(&f.apiAddr, "api-addr", "", "operator API listen address HOST:PORT (api.addr)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data folder (data_dir; relative to the current folder)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json (log.format)")
	return c
}

// loadServeConfig loads the file (which applies the environment), then the
// flags the user set, and validates the result.
func loadServeConfig(path string, c *cobra.Command, f serveFlags) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	changed := c.Flags().Changed
	if changed("api-addr") {
		cfg.API.Addr = f.apiAddr
	}
	if changed("data-dir") {
		dir, err := filepath.Abs(f.dataDir)
		if err != nil {
			return config.Config{}, err
		}
		cfg.DataDir = dir
	}
	if changed("log-level") {
		cfg.Log.Level = f.logLevel
	}
	if changed("log-format") {
		cfg.Log.Format = f.logFormat
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// newLogger builds the node's logger on w from the log settings.
func newLogger(w io.Writer, l config.Log) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not one of text, json", l.Format)
}

// tuneProcs gives the process Ps for device ingest beyond its cores
// (node.Procs), unless the operator set GOMAXPROCS, and resolves
// mqtt.ingest_slots against the cores (not the raised count).
func (a *app) tuneProcs(m *config.MQTT, logger *slog.Logger) {
	if a.setProcs == nil {
		return
	}
	cores := a.setProcs(0)
	procs, slots := node.Procs(*m, cores)
	m.IngestSlots = slots
	if _, set := a.lookupEnv("GOMAXPROCS"); !set && procs != cores {
		a.setProcs(procs)
		logger.Info("GOMAXPROCS raised for device ingest", "cores", cores, "gomaxprocs", procs, "mqtt.ingest_slots", slots)
	}
}

// serve runs the node until the first SIGINT or SIGTERM, then shuts it
// down. A second signal kills the process the default way.
func (a *app) serve(ctx context.Context, cfg config.Config, path string) error {
	logger, err := newLogger(a.stderr, cfg.Log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	a.tuneProcs(&cfg.MQTT, logger)
	n, err := node.New(node.Options{Config: cfg, Logger: logger, Version: version, ConfigFile: path})
	if err != nil {
		return fmt.Errorf("start node %q: %w", cfg.Name, err)
	}
	if err := n.Start(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("start node %q: %w", cfg.Name, err), n.Shutdown(sctx))
	}
	logger.Info("node started", "name", cfg.Name, "role", cfg.Role, "version", version,
		"api", "https://"+n.APIAddr(), "config", path)

	<-ctx.Done()
	stop()
	logger.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}
