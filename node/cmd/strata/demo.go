package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
)

// Limits of strata demo --devices: at least one device per probe; at most
// what one process's open files allow (each device holds two descriptors
// in the demo's process, its session and the broker's end of it).
const (
	demoMinDevices     = 2
	demoMaxDevices     = 5000
	demoDefaultDevices = 200
	demoLogFile        = "demo.log"
	// demoNodeFiles is a generous count of the files the five nodes hold
	// open besides the devices' sessions (stores, listeners, clients).
	demoNodeFiles = 400
)

type demoOptions struct {
	dir     string
	devices int
	rate    float64
}

func (a *app) demoCmd() *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "demo [--dir DIR] [--devices N]",
		Short: "Run a whole hierarchy on this machine, with simulated devices and the console",
		Long: `Demo starts, in this process, a Strata hierarchy with its own store per
node under DIR: hq (the operators' console), a regional node eu, two
probes probe-a and probe-b, and a reporting node. The probes publish their
devices to eu, which publishes to hq (grant operate) and to reporting
(grant read), joined with one-time peer tokens as real tiers are. Every
listener is on 127.0.0.1, on ports free at the first start.

N simulated devices (half on each probe) enroll through the probes' API,
get labels (site, line, model, kind), publish telemetry (--rate messages/s
in all, default one every 5 s per device) and answer function calls (ping,
reboot, set-setpoint). At HQ they are under /peers/eu/peers/probe-a/devices
and /peers/eu/peers/probe-b/devices.

Demo prints HQ's console URL and the login (the user admin, with a new
random password on every node at each start), each node's API and
config, then runs until SIGINT (Ctrl-C) or SIGTERM, stops the devices and
then the nodes (probes, eu, hq, reporting) and exits 0. A second signal
exits at once, with status 130.

Without --dir the data is in a new temporary folder, removed at exit. With
--dir it is kept: a folder of an earlier demo is started again (same
nodes, ports and devices; more devices are enrolled if N grew), an empty or
missing folder gets a new demo, anything else is refused. Node logs go to
DIR/demo.log. STRATA_* variables do not apply to the demo's nodes.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.devices < demoMinDevices || o.devices > demoMaxDevices {
				return usageError{err: fmt.Errorf("--devices %d: want %d..%d", o.devices, demoMinDevices, demoMaxDevices), cmd: c.CommandPath()}
			}
			if o.rate < 0 {
				return usageError{err: fmt.Errorf("--rate must not be negative"), cmd: c.CommandPath()}
			}
			if limit, need := openFileLimit(), uint64(2*o.devices+demoNodeFiles); limit != 0 && limit < need {
				return fmt.Errorf("--devices %d needs about %d open files, and this process may open %d: raise the limit (ulimit -n) or simulate fewer devices", o.devices, need, limit)
			}
			if !c.Flags().Changed("rate") {
				o.rate = float64(o.devices) / 5
			}
			return a.demo(c.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "folder of the nodes' data, kept at exit (default a new temporary folder, removed at exit)")
	f.IntVar(&o.devices, "devices", demoDefaultDevices, "simulated devices, half on each probe")
	f.Float64Var(&o.rate, "rate", 0, "telemetry messages per second over all devices (default devices/5)")
	return c
}

// demo runs the hierarchy until the first SIGINT or SIGTERM.
func (a *app) demo(ctx context.Context, o demoOptions) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	temp := o.dir == ""
	if temp {
		if o.dir, err = os.MkdirTemp("", "strata-demo-"); err != nil {
			return err
		}
		defer func() {
			if rerr := os.RemoveAll(o.dir); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}()
	} else if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	again, err := demoHasNodes(o.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o750); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(o.dir, demoLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer logf.Close()
	logger := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	d := &demoRun{o: o, log: logger, nodes: map[string]*demoNode{}}
	defer func() { err = errors.Join(err, d.stop()) }()
	if again {
		fmt.Fprintf(a.stderr, "starting the demo kept in %s\n", o.dir)
	} else {
		fmt.Fprintf(a.stderr, "starting a new demo in %s\n", o.dir)
	}
	password, err := d.start(ctx, again)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: stopped cleanly
		}
		return err
	}
	d.print(a.stdout, password, temp)

	<-ctx.Done()
	// A second signal does not wait for the clean stop.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sig:
			fmt.Fprintln(a.stderr, "second signal: exiting at once")
			os.Exit(130)
		case <-done:
		}
	}()
	fmt.Fprintln(a.stderr, "stopping the devices, then the nodes")
	if err := d.stop(); err != nil {
		return err
	}
	fmt.Fprintln(a.stderr, "stopped")
	return nil
}

// demoRun is one run of the demo: its nodes in start order and the
// fleets of simulated devices.
type demoRun struct {
	o      demoOptions
	log    *slog.Logger
	nodes  map[string]*demoNode
	order  []*demoNode // started, in start order
	fleets []*sim.Fleet
	counts map[string]int // devices per probe
	done   bool           // stopped
}

// start creates the nodes (again: reopens them), starts them in order,
// gives each the password, enrolls the devices and starts the fleets.
func (d *demoRun) start(ctx context.Context, again bool) (password string, err error) {
	for _, s := range demoTopology {
		nd := &demoNode{spec: s, dir: filepath.Join(d.o.dir, s.name)}
		nd.config = filepath.Join(nd.dir, configFile)
		if !again {
			if err := initDemoNode(nd.dir, s); err != nil {
				return "", fmt.Errorf("init %s: %w", s.name, err)
			}
			if err := joinDemoUpstreams(ctx, nd, d.nodes); err != nil {
				return "", err
			}
		}
		if err := startDemoNode(ctx, nd, d.log); err != nil {
			return "", err
		}
		d.nodes[s.name] = nd
		d.order = append(d.order, nd)
	}
	password = rand.Text()
	for _, nd := range d.order {
		if _, err := nd.admin.UpdateUser(ctx, "admin", client.UserUpdate{Password: password}); err != nil {
			return "", fmt.Errorf("%s: set the admin's password: %w", nd.spec.name, err)
		}
	}
	d.counts = map[string]int{}
	probes := []*demoNode{d.nodes["probe-a"], d.nodes["probe-b"]}
	for i, nd := range probes {
		n := d.o.devices / len(probes)
		if i < d.o.devices%len(probes) {
			n++
		}
		creds, err := enrollDemoDevices(ctx, nd, n, d.log)
		if err != nil {
			return "", err
		}
		f, err := newDemoFleet(nd, creds, d.o.rate*float64(n)/float64(d.o.devices), d.log)
		if err != nil {
			return "", err
		}
		// Not ctx: the fleet runs until d.stop stops it.
		if err := f.Start(context.Background()); err != nil {
			return "", err
		}
		d.fleets = append(d.fleets, f)
		d.counts[nd.spec.name] = n
	}
	return password, nil
}

// stop stops the devices, then the nodes: providers before their
// consumers (probes, eu, hq, reporting).
func (d *demoRun) stop() error {
	if d.done {
		return nil
	}
	d.done = true
	var errs []error
	for _, f := range d.fleets {
		f.Stop()
	}
	for _, f := range d.fleets {
		if _, err := f.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("devices: %w", err))
		}
	}
	for _, name := range []string{"probe-a", "probe-b", "eu", "hq", "reporting"} {
		if nd := d.nodes[name]; nd != nil {
			errs = append(errs, stopDemoNode(nd))
		}
	}
	return errors.Join(errs...)
}

// print writes what a user needs: the console and its login first, one
// item per line, then every node's API and config for strata ctl.
func (d *demoRun) print(w io.Writer, password string, temp bool) {
	hq := d.nodes["hq"]
	fmt.Fprintf(w, "console: %s/\n", hq.apiURL())
	fmt.Fprintln(w, "user: admin")
	fmt.Fprintf(w, "password: %s\n", password)
	fmt.Fprintf(w, "ca: %s (the demo's own CA: the browser warns about the certificate)\n", filepath.Join(hq.dir, caFile))
	fmt.Fprintln(w, "nodes (each with its console at its API URL and the same login):")
	for _, nd := range d.order {
		fmt.Fprintf(w, "  %-10s %-9s %s  strata ctl --config %s  (admin token: %s)\n", nd.spec.name, nd.spec.role,
			nd.apiURL(), nd.config, filepath.Join(nd.dir, adminTokenFile))
	}
	for _, p := range []string{"probe-a", "probe-b"} {
		fmt.Fprintf(w, "devices: %d on %s (MQTT %s), at hq under /peers/eu/peers/%s/devices\n",
			d.counts[p], p, d.nodes[p].n.MQTTAddr("tls"), p)
	}
	kept := "kept at exit"
	if temp {
		kept = "removed at exit"
	}
	fmt.Fprintf(w, "data: %s (%s)\n", d.o.dir, kept)
	fmt.Fprintf(w, "logs: %s\n", filepath.Join(d.o.dir, demoLogFile))
	fmt.Fprintln(w, "Press Ctrl-C to stop.")
}
