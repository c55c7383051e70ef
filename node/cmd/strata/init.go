package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
)

// Files strata init writes in a node's folder. ctl reads caFile and
// adminTokenFile beside the config to reach the node.
const (
	configFile     = "strata.yaml"
	adminTokenFile = node.AdminTokenFile
	caFile         = node.CACertFile
	caKeyFile      = node.CAKeyFile
	apiCertFile    = node.APICertFile
	apiKeyFile     = node.APIKeyFile
)

type initOptions struct {
	dir      string
	name     string
	role     string
	apiAddr  string
	mqttAddr string
	fedAddr  string
	tlsHosts []string
	store    string
	dsn      string
	readDSNs []string
	force    bool
	// clusterID, with clusterAdvertise and clusterAddr, makes the folder
	// the first replica of a new cluster (strata cluster init).
	clusterID, clusterAddr, clusterAdvertise string
}

func (a *app) initCmd() *cobra.Command {
	var o initOptions
	c := &cobra.Command{
		Use:   "init --name NAME [--dir DIR]",
		Short: "Write a new node's config, TLS certificates and admin token",
		Long: `Init prepares a node's folder:

  DIR/strata.yaml     the config (only settings that differ from the defaults)
  DIR/tls/ca.crt      the node's certificate authority (ca.key beside it)
  DIR/tls/api.crt     the API's server certificate (api.key beside it)
  DIR/admin.token     the token of the system user "admin", created when the
                      node first starts; strata ctl uses it by default

--store postgres --dsn DSN keeps the node's data in that PostgreSQL
database instead of the embedded Badger store in data_dir; init does not
connect to it. --read-dsn (repeatable) adds a streaming replica of that
primary, which serves tree browsing and event history. To keep a password
out of strata.yaml, leave it out of the DSN and give it when serving:
STRATA_STORE_DSN, PGPASSWORD or ~/.pgpass.

--cluster-id ID makes the node the first replica of a new Raft cluster
(strata cluster init); the other replicas join it with strata cluster join.

It refuses to overwrite an existing strata.yaml unless --force is given
(which replaces every file above: the old CA, certificates and token stop
working).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := runInit(o, a.stdout); err != nil || o.clusterID == "" {
				return err
			}
			fmt.Fprintln(a.stdout)
			return prepareReplica(clusterPrepare{dir: o.dir, id: o.clusterID, addr: o.clusterAddr, advertise: o.clusterAdvertise}, true, a.stdout)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", ".", "folder of the node")
	f.StringVar(&o.name, "name", "", "node name, unique among its consumer's providers (lowercase letters, digits, dashes)")
	f.StringVar(&o.role, "role", config.RoleHQ, "role: probe, regional, hq or reporting")
	f.StringVar(&o.apiAddr, "api-addr", config.Default().API.Addr, "operator API listen address HOST:PORT")
	f.StringVar(&o.mqttAddr, "mqtt-addr", "", "device MQTT listen address HOST:PORT (none when empty)")
	f.StringVar(&o.fedAddr, "federation-addr", "", "federation QUIC listen address HOST:PORT (none when empty)")
	f.StringSliceVar(&o.tlsHosts, "tls-host", nil, "extra DNS name or IP for the API certificate (repeatable)")
	f.StringVar(&o.store, "store", config.StoreBadger, "store kind: badger (embedded, in data_dir) or postgres")
	f.StringVar(&o.dsn, "dsn", "", "PostgreSQL DSN (URL or key=value) of the primary, with --store postgres")
	// An array, not a slice flag: a DSN may hold commas (several hosts).
	f.StringArrayVar(&o.readDSNs, "read-dsn", nil, "PostgreSQL DSN of a streaming replica of the primary, with --store postgres (repeatable)")
	f.BoolVar(&o.force, "force", false, "overwrite an existing strata.yaml, certificates and admin token")
	f.StringVar(&o.clusterID, "cluster-id", "", "make the node the first replica of a new Raft cluster, with this replica id (as strata cluster init)")
	f.StringVar(&o.clusterAddr, "cluster-addr", "0.0.0.0:7400", "with --cluster-id: listen address of the replicas' channel")
	f.StringVar(&o.clusterAdvertise, "cluster-advertise", "", "with --cluster-id: address the other replicas dial (default --cluster-addr)")
	c.MarkFlagRequired("name")
	return c
}

// runInit writes the node's files. The config is written last, so a failed
// init leaves no strata.yaml and can simply be run again.
func runInit(o initOptions, out io.Writer) error {
	cfg := config.Default()
	cfg.Name = o.name
	cfg.Role = o.role
	cfg.API.Addr = o.apiAddr
	cfg.MQTT.Addr = o.mqttAddr
	cfg.Federation.Addr = o.fedAddr
	cfg.Store.Kind = o.store
	cfg.Store.DSN = o.dsn
	cfg.Store.ReadDSNs = o.readDSNs
	if err := cfg.Validate(); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, configFile)
	if _, err := os.Lstat(cfgPath); err == nil && !o.force {
		return fmt.Errorf("%s exists (use --force to overwrite it, its certificates and admin token)", cfgPath)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}

	hosts := o.tlsHosts
	if host, _, err := net.SplitHostPort(cfg.API.Addr); err == nil {
		hosts = append([]string{host}, hosts...)
	}
	id, err := node.WriteIdentity(dir, cfg.Name, hosts...)
	if err != nil {
		return err
	}

	body, err := config.Marshal(cfg)
	if err != nil {
		return err
	}
	header := config.Comment(fmt.Sprintf(`Strata node %q (%s), written by strata init on %s.

Only settings that differ from the defaults are listed. Relative paths are
relative to this file's folder. Every key can be overridden by an
environment variable: STRATA_ and its path in upper case joined by "_"
(api.addr is STRATA_API_ADDR). Unknown keys are errors.`,
		cfg.Name, cfg.Role, time.Now().UTC().Format(time.DateOnly)))
	if err := atomicfile.Write(cfgPath, append(append(header, '\n'), body...), 0o644); err != nil {
		return err
	}

	fmt.Fprintf(out, "Initialised node %q (%s) in %s:\n", cfg.Name, cfg.Role, dir)
	for _, f := range []string{configFile, caFile, caKeyFile, apiCertFile, apiKeyFile, adminTokenFile} {
		fmt.Fprintf(out, "  %s\n", f)
	}
	fmt.Fprintf(out, "API certificate hosts: %v\n", id.APICert.DNSNames)
	if len(id.APICert.IPAddresses) > 0 {
		fmt.Fprintf(out, "API certificate IPs: %v\n", id.APICert.IPAddresses)
	}
	fmt.Fprintf(out, "\nStart it:     strata serve --config %s\n", cfgPath)
	fmt.Fprintf(out, "Then try:     strata ctl --config %s whoami\n", cfgPath)
	fmt.Fprintf(out, "Keep %s and %s secret.\n", adminTokenFile, caKeyFile)
	return nil
}
