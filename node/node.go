// Package node assembles one Strata server from its parts: store, model,
// auth and API. It is the only package that knows all of them.
package node

import (
	"context"
	"errors"
	"log/slog"

	"github.com/strata-dm/strata/node/config"
)

// Options are what New needs.
type Options struct {
	Config  config.Config
	Logger  *slog.Logger
	Version string
}

// Node is one running Strata server.
type Node struct{}

// New opens the store and wires the node; it listens only in Start.
func New(opts Options) (*Node, error) { return nil, errors.New("node: not wired") }

// Start opens the listeners and serves until Shutdown.
func (n *Node) Start(ctx context.Context) error { return nil }

// Shutdown stops serving and closes the store; calling it twice is safe.
func (n *Node) Shutdown(ctx context.Context) error { return nil }

// APIAddr is the address the API listens on once started.
func (n *Node) APIAddr() string { return "" }
