package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node/config"
)

// clusterPrepare are the options of `strata cluster init` and `join`.
type clusterPrepare struct {
	dir       string
	id        string
	addr      string
	advertise string
	join      []string
	from      string
}

// clusterInitCmd makes an initialised node's folder the first replica of
// a new cluster; clusterJoinCmd makes a folder a replica that joins one.
// Neither talks to a node: they write strata.yaml's cluster section, and
// the replica acts on it when it is served.
func (a *app) clusterInitCmd() *cobra.Command {
	var o clusterPrepare
	c := &cobra.Command{
		Use:   "init --id ID --advertise HOST:PORT [--dir DIR]",
		Short: "Make a node's folder the first replica of a new cluster",
		Long: `Init writes the cluster section of DIR/strata.yaml (made by strata init):
this replica's id, the replicas' channel address, and bootstrap, so that
its first start creates a cluster of one replica, which the others then
join (strata cluster join). The node's data_dir must not hold a store yet:
a single node's store cannot be turned into a replica.`,
		Example: `  strata init --name plant7 --role probe --dir /srv/strata
  strata cluster init --dir /srv/strata --id r1 --advertise 10.0.0.1:7400`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return prepareReplica(o, true, a.stdout)
		},
	}
	o.flags(c, false)
	return c
}

func (a *app) clusterJoinCmd() *cobra.Command {
	var o clusterPrepare
	c := &cobra.Command{
		Use:   "join --id ID --advertise HOST:PORT --join HOST:PORT [--from DIR] [--dir DIR]",
		Short: "Make a folder a replica that joins an existing cluster",
		Long: `Join writes the cluster section of DIR/strata.yaml so that the replica's
first start asks a member (--join, the channel address of any replica)
to add it: as a non-voter, promoted to voter once it has caught up.

A replica is the same node as the others: same name, CA, API certificate
and admin token. Either copy the first replica's folder to DIR (without
its data_dir) and run join there, or give --from with that folder: its
strata.yaml, tls/ca.crt, tls/ca.key, tls/api.crt, tls/api.key and
admin.token are copied into DIR. The replica's own certificate on the
channel is issued for its --advertise host when it starts. DIR's data_dir
must not hold a store.`,
		Example: `  strata cluster join --dir /srv/strata --id r2 --advertise 10.0.0.2:7400 --join 10.0.0.1:7400`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(o.join) == 0 {
				return usageError{err: errors.New("--join: give the channel address of a replica"), cmd: c.CommandPath()}
			}
			return prepareReplica(o, false, a.stdout)
		},
	}
	o.flags(c, true)
	return c
}

func (o *clusterPrepare) flags(c *cobra.Command, join bool) {
	f := c.Flags()
	f.StringVar(&o.dir, "dir", ".", "folder of the replica (its strata.yaml)")
	f.StringVar(&o.id, "id", "", "this replica's id, stable across restarts (letters, digits, '.', '_', '-')")
	f.StringVar(&o.addr, "addr", "0.0.0.0:7400", "listen address of the replicas' channel (TCP, mutual TLS)")
	f.StringVar(&o.advertise, "advertise", "", "address the other replicas dial, HOST:PORT (default --addr)")
	if join {
		f.StringSliceVar(&o.join, "join", nil, "channel address of a replica to join through (repeatable)")
		f.StringVar(&o.from, "from", "", "folder of a replica to copy the node's config, CA, API certificate and admin token from")
	}
	c.MarkFlagRequired("id")
}

// identityFiles are what every replica of one node shares, beside the
// config.
var identityFiles = []string{caFile, caKeyFile, apiCertFile, apiKeyFile, adminTokenFile}

// prepareReplica writes the cluster section of o.dir's config (copied
// from o.from first when given); bootstrap makes the first replica.
func prepareReplica(o clusterPrepare, bootstrap bool, out io.Writer) error {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, configFile)
	if o.from != "" {
		if err := copyNodeFolder(o.from, dir); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(cfgPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s not found: run strata init first (or give --from)", cfgPath)
	} else if err != nil {
		return err
	}
	cfg, err := config.Parse(data) // not Load: no environment baked into the file
	if err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	cfg.Dir = dir
	cl := &cfg.Cluster
	cl.ID, cl.Addr, cl.Advertise = o.id, o.addr, o.advertise
	cl.Bootstrap, cl.Join = bootstrap, o.join
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Store.Kind == config.StoreBadger {
		if ents, err := os.ReadDir(cfg.Path(cfg.DataDir)); err == nil && len(ents) > 0 {
			return fmt.Errorf("data_dir %s holds a store: a replica starts on an empty one (a single node's store cannot be turned into a replica)", cfg.Path(cfg.DataDir))
		}
	}
	// A certificate on the channel names one replica: one copied from
	// another replica's folder must not be used; the node issues this
	// replica's at start.
	for _, f := range []string{cl.TLSCert, cl.TLSKey} {
		if err := os.Remove(cfg.Path(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	body, err := config.Marshal(cfg)
	if err != nil {
		return err
	}
	what := "the first replica of a new cluster"
	if !bootstrap {
		what = fmt.Sprintf("a replica joining through %v", o.join)
	}
	header := config.Comment(fmt.Sprintf(`Strata node %q (%s), replica %s: %s.
Written by strata cluster on %s.

Only settings that differ from the defaults are listed. Relative paths are
relative to this file's folder. Every key can be overridden by an
environment variable: STRATA_ and its path in upper case joined by "_"
(api.addr is STRATA_API_ADDR). Unknown keys are errors.`,
		cfg.Name, cfg.Role, cl.ID, what, time.Now().UTC().Format(time.DateOnly)))
	if err := atomicfile.Write(cfgPath, append(append(header, '\n'), body...), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s is now %s: replica %q, channel %s.\n", cfgPath, what, cl.ID, cl.Addr)
	fmt.Fprintf(out, "Start it:  strata serve --config %s\n", cfgPath)
	if bootstrap {
		fmt.Fprintf(out, "Then on each other replica: strata cluster join --id ID --advertise HOST:PORT --join %s --from <a copy of this folder>\n", orAddr(cl.Advertise, cl.Addr))
	}
	return nil
}

func orAddr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// copyNodeFolder copies from's config and identity files into dir,
// refusing to overwrite a config that is there.
func copyNodeFolder(from, dir string) error {
	if _, err := os.Lstat(filepath.Join(dir, configFile)); err == nil {
		return fmt.Errorf("%s exists: --from copies a replica's folder into an empty one", filepath.Join(dir, configFile))
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(caFile)), 0o750); err != nil {
		return err
	}
	for _, f := range append([]string{configFile}, identityFiles...) {
		data, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		mode := os.FileMode(0o644)
		if f == caKeyFile || f == apiKeyFile || f == adminTokenFile {
			mode = 0o600
		}
		if err := atomicfile.Write(filepath.Join(dir, f), data, mode); err != nil {
			return err
		}
	}
	return nil
}
