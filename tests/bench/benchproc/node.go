package benchproc

import (
	"context"
	"log/slog"
	"os"
	"runtime"

	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
)

// StartNode starts a node on cfg in this process as strata serve does:
// the Go runtime's Ps and the MQTT ingest slots from node.Procs (unless
// GOMAXPROCS is set), warnings logged to standard error. The caller shuts
// it down.
func StartNode(cfg config.Config) (*node.Node, error) {
	return StartNodeLogging(cfg, slog.LevelWarn)
}

// StartNodeLogging is StartNode logging from level up.
func StartNodeLogging(cfg config.Config, level slog.Level) (*node.Node, error) {
	cores := runtime.GOMAXPROCS(0)
	procs, slots := node.Procs(cfg.MQTT, cores)
	cfg.MQTT.IngestSlots = slots
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && procs != cores {
		runtime.GOMAXPROCS(procs)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n, err := node.New(node.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))})
	if err != nil {
		return nil, err
	}
	if err := n.Start(context.Background()); err != nil {
		return nil, err
	}
	return n, nil
}
