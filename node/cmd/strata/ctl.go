package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// ctlFlags are the flags every ctl command shares.
type ctlFlags struct {
	config     string
	server     string
	token      string
	ca         string
	output     string
	timeout    time.Duration
	consistent bool
}

// ctl is one ctl invocation: the app plus its shared flags.
type ctl struct {
	*app
	f ctlFlags
}

func (a *app) ctlCmd() *cobra.Command {
	x := &ctl{app: a}
	c := group(&cobra.Command{
		Use:   "ctl",
		Short: "Talk to a running node's operator API",
		Long: `Ctl is a client of a node's operator API. By default it reaches the node
of the config file (--config, else $STRATA_CONFIG, else ./strata.yaml):
server https://<api.addr> (127.0.0.1 when api.addr listens on all
addresses), CA tls/ca.crt and token admin.token beside the config. It never
opens the node's data.

` + targetHelp,
	})
	x.addTargetFlags(c)
	c.AddCommand(
		x.loginCmd(), x.whoamiCmd(),
		x.treeCmd(), x.getCmd(), x.putCmd(), x.deleteCmd(), x.historyCmd(),
		x.eventsCmd(), x.eventCmd(), x.watchCmd(),
		x.usersCmd(), x.tokensCmd(),
		x.searchCmd(), x.devicesCmd(), x.jobsCmd(), x.callCmd(),
		x.peersCmd(), x.federationCmd(), x.auditCmd(),
		x.releasesCmd(), x.artifactsCmd(), x.alertsCmd(),
	)
	return c
}

// targetHelp ends the help of every command group that talks to a node.
const targetHelp = `--server, --token (or $STRATA_TOKEN) and --ca override those. When --server
is given and the config was not named explicitly, the files beside
./strata.yaml are not used, so a local admin token is never sent to another
server.`

// addTargetFlags gives c (ctl, token) the persistent flags that choose the
// node and the output, and checks -o before any subcommand runs.
func (x *ctl) addTargetFlags(c *cobra.Command) {
	c.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		switch x.f.output {
		case "text", "json":
			return nil
		}
		return usageError{err: fmt.Errorf("-o %q: want text or json", x.f.output), cmd: c.CommandPath()}
	}
	pf := c.PersistentFlags()
	pf.StringVarP(&x.f.config, "config", "c", "", "config file of the node (default $"+envConfig+", else ./"+defaultConfigFile+")")
	pf.StringVar(&x.f.server, "server", "", "API base URL, e.g. https://hq.example:8443")
	pf.StringVar(&x.f.token, "token", "", "bearer token (default $"+envToken+", else admin.token beside the config)")
	pf.StringVar(&x.f.ca, "ca", "", "PEM file of the CA to trust (default tls/ca.crt beside the config, else the system roots)")
	pf.StringVarP(&x.f.output, "output", "o", "text", "output format: text or json")
	pf.DurationVar(&x.f.timeout, "timeout", 30*time.Second, "time limit of a request (not of watch)")
	pf.BoolVar(&x.f.consistent, "consistent", false, "linearizable reads: on a cluster, the replica answers once it holds every write acknowledged before the request")
}

// target is where ctl sends requests and with what credentials.
type target struct {
	server string
	token  string
	caPEM  []byte
}

// target resolves the server, token and CA from the flags, the environment
// and the config file (read only when something is missing).
func (x *ctl) target() (target, error) {
	t := target{server: x.f.server, token: x.f.token}
	if t.token == "" {
		t.token, _ = x.lookupEnv(envToken)
	}
	if x.f.ca != "" {
		pem, err := os.ReadFile(x.f.ca)
		if err != nil {
			return target{}, fmt.Errorf("--ca: %w", err)
		}
		t.caPEM = pem
	}
	path, explicit := x.configPath(x.f.config)
	useConfig := t.server == "" || explicit
	if !useConfig || (t.token != "" && t.caPEM != nil && t.server != "") {
		return t.withScheme(), nil
	}
	cfg, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return target{}, fmt.Errorf("no node to talk to: %s not found (use --config FILE or --server URL)", path)
	} else if err != nil {
		return target{}, fmt.Errorf("config: %w", err)
	}
	if t.server == "" {
		t.server = "https://" + dialAddr(cfg.API.Addr)
	}
	if t.token == "" {
		b, err := os.ReadFile(filepath.Join(cfg.Dir, adminTokenFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return target{}, err
		}
		t.token = strings.TrimSpace(string(b))
	}
	if t.caPEM == nil {
		b, err := os.ReadFile(filepath.Join(cfg.Dir, caFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return target{}, err
		}
		t.caPEM = b
	}
	return t.withScheme(), nil
}

// withScheme lets --server omit "https://".
func (t target) withScheme() target {
	if t.server != "" && !strings.Contains(t.server, "://") {
		t.server = "https://" + t.server
	}
	return t
}

// dialAddr turns a listen address into one to dial: a wildcard or empty
// host becomes 127.0.0.1.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// client returns an API client for the target.
func (x *ctl) client() (*client.Client, error) {
	t, err := x.target()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(t.server, t.token, t.caPEM)
	if err == nil && x.f.consistent {
		cl = cl.Consistent()
	}
	return cl, err
}

// call runs fn with a client and a context bounded by --timeout.
func (x *ctl) call(c *cobra.Command, fn func(ctx context.Context, cl *client.Client) error) error {
	return x.callFor(c, 0, fn)
}

// callFor is call with a context bounded by --timeout plus extra (the
// time a request is expected to wait on the server).
func (x *ctl) callFor(c *cobra.Command, extra time.Duration, fn func(ctx context.Context, cl *client.Client) error) error {
	cl, err := x.client()
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(c.Context(), x.f.timeout+extra)
	defer cancel()
	return fn(ctx, cl)
}

// json reports whether -o json was asked for.
func (x *ctl) json() bool { return x.f.output == "json" }

// printJSON writes v as indented JSON.
func (x *ctl) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(x.stdout, "%s\n", b)
	return err
}

// show prints v as JSON with -o json, else with text.
func (x *ctl) show(v any, text func(w io.Writer)) error {
	if x.json() {
		return x.printJSON(v)
	}
	text(x.stdout)
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
