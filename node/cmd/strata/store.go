package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

func (a *app) storeCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "store",
		Short: "Work on a stopped node's store",
	})
	c.AddCommand(a.storeMigrateCmd())
	c.AddCommand(a.storeTruncateWALCmd())
	return c
}

type migrateOptions struct {
	config  string
	to      string
	dsn     string
	rewrite bool
}

// migrateOpenTimeout bounds connecting to PostgreSQL and creating its
// schema; the copy itself runs until done or interrupted.
const migrateOpenTimeout = time.Minute

func (a *app) storeMigrateCmd() *cobra.Command {
	var o migrateOptions
	c := &cobra.Command{
		Use:   "migrate --to postgres --dsn DSN [--config FILE]",
		Short: "Copy a stopped node's Badger store into an empty PostgreSQL database",
		Long: `Migrate moves a node from its embedded Badger store to PostgreSQL. The node
must be stopped: migrate takes the data directory's lock and fails while
the node holds it.

It creates the schema in the database at --dsn, which must be empty (a new
database: migrate refuses one that holds any Strata data), and copies
everything in one transaction: every context, the event history, the
node-local records (users, tokens, devices, jobs, ...) and the change log
with its sequence numbers, so the node and its consumers carry on where
they stopped. It checks the row counts against the Badger store before
committing; a failed or interrupted migrate leaves the database empty and
can simply be run again.

Then it rewrites the config's store section to kind postgres with that
DSN, keeping the old file as strata.yaml.bak (or .bak.1, .bak.2, ... if
that exists); store.encryption_key_file, which only Badger uses, is
dropped. With --rewrite-config=false, or if the file cannot be written, it
prints the change to make instead. The Badger data directory is left as it
was: remove it once the node runs well on PostgreSQL.

A password in --dsn would end up in the config file: leave it out and give
it to both migrate and serve as PGPASSWORD or in ~/.pgpass, or set
STRATA_STORE_DSN when serving.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.migrateStore(ctx, o)
		},
	}
	addConfigFlag(c, &o.config)
	f := c.Flags()
	f.StringVar(&o.to, "to", "", "store kind to move to: postgres")
	f.StringVar(&o.dsn, "dsn", "", "PostgreSQL DSN (URL or key=value) of the primary, an empty database")
	f.BoolVar(&o.rewrite, "rewrite-config", true, "rewrite the config's store section (else print the change)")
	c.MarkFlagRequired("to")
	c.MarkFlagRequired("dsn")
	return c
}

// migrateStore copies the Badger store of the node at o.config into
// PostgreSQL, then points the config at it.
func (a *app) migrateStore(ctx context.Context, o migrateOptions) error {
	if o.to != config.StorePostgres {
		return usageError{err: fmt.Errorf("--to %q: only postgres is supported", o.to), cmd: "strata store migrate"}
	}
	if strings.TrimSpace(o.dsn) == "" {
		return usageError{err: errors.New("--dsn is empty"), cmd: "strata store migrate"}
	}
	path, _ := a.configPath(o.config)
	cfg, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.Store.Kind != config.StoreBadger {
		return fmt.Errorf("%s: the store is already %s", path, cfg.Store.Kind)
	}
	dataDir := cfg.Path(cfg.DataDir)
	if _, err := os.Stat(dataDir); err != nil {
		return fmt.Errorf("no Badger store to migrate: %w", err)
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	src, err := node.OpenBadger(&cfg, log)
	if err != nil {
		if strings.Contains(err.Error(), "directory lock") {
			return fmt.Errorf("the data directory %s is in use: stop the node first (%w)", dataDir, err)
		}
		return err
	}
	// Kept open (and so locked) until the config points elsewhere: a node
	// started meanwhile cannot write to Badger what the copy would miss.
	defer src.Close()

	opts := node.PostgresOptions(&cfg, log)
	opts.DSN, opts.ReadDSNs = o.dsn, nil
	octx, cancel := context.WithTimeout(ctx, migrateOpenTimeout)
	dst, err := store.OpenPostgres(octx, opts)
	cancel()
	if err != nil {
		return err
	}
	start := time.Now()
	st, err := store.CopyToPostgres(ctx, src, dst)
	dst.Close()
	if err != nil {
		return err
	}
	// Check from a fresh connection that the copy is there to stay.
	octx, cancel = context.WithTimeout(ctx, migrateOpenTimeout)
	defer cancel()
	check, err := store.OpenPostgres(octx, opts)
	if err != nil {
		return fmt.Errorf("reopen after the copy: %w", err)
	}
	last, err := check.LastSeq()
	check.Close()
	if err != nil {
		return fmt.Errorf("reopen after the copy: %w", err)
	}
	if last != st.LastSeq {
		return fmt.Errorf("after the copy the database's last sequence number is %d, the Badger store's %d", last, st.LastSeq)
	}
	fmt.Fprintf(a.stdout, "Copied %s into PostgreSQL in %v:\n", dataDir, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(a.stdout, "  %d contexts, %d events, %d records, %d change-log entries (last sequence number %d)\n",
		st.Contexts, st.Events, st.Records, st.Entries, st.LastSeq)

	return a.pointConfig(path, &cfg, o)
}

// pointConfig rewrites the config file's store section for PostgreSQL,
// or prints the change to make.
func (a *app) pointConfig(path string, cfg *config.Config, o migrateOptions) error {
	var backup string
	err := errors.New("not asked to (--rewrite-config=false)")
	if o.rewrite {
		backup, err = rewriteStoreSection(path, o.dsn)
	}
	if err != nil {
		fmt.Fprintf(a.stdout, "\nThe config was not changed (%v). Change its store section to:\n\n", err)
		fmt.Fprintf(a.stdout, "store:\n  kind: postgres\n  dsn: %s\n", strconv.Quote(o.dsn))
		if cfg.Store.EncryptionKeyFile != "" {
			fmt.Fprintf(a.stdout, "\nand remove store.encryption_key_file.\n")
		}
	} else {
		fmt.Fprintf(a.stdout, "\nRewrote %s for PostgreSQL; the old file is %s.\n", path, backup)
	}
	if v, ok := a.lookupEnv("STRATA_STORE_ENCRYPTION_KEY"); ok && v != "" {
		fmt.Fprintf(a.stdout, "Unset STRATA_STORE_ENCRYPTION_KEY before serving: it is for Badger only.\n")
	}
	fmt.Fprintf(a.stdout, "Start the node again: strata serve --config %s\n", path)
	fmt.Fprintf(a.stdout, "The Badger data in %s is no longer used; remove it once the node runs well.\n", cfg.Path(cfg.DataDir))
	return nil
}

// rewriteStoreSection sets store.kind and store.dsn in the YAML file at
// path, drops store.encryption_key_file, and keeps the rest of the file
// (comments included). The old file is kept beside it; its name is
// returned. The new file must load (config.Parse and Validate) before it
// replaces the old one.
func rewriteStoreSection(path, dsn string) (backup string, err error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(old, &doc); err != nil {
		return "", err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", errors.New("the file is not a YAML mapping")
	}
	root := doc.Content[0]
	st := mappingValue(root, "store")
	if st == nil {
		st = &yaml.Node{Kind: yaml.MappingNode}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "store"}, st)
	}
	if st.Kind != yaml.MappingNode {
		return "", errors.New("store is not a mapping")
	}
	setScalar(st, 0, "kind", config.StorePostgres)
	setScalar(st, 1, "dsn", dsn)
	removeKey(st, "encryption_key_file")

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	cfg, err := config.Parse(buf.Bytes())
	if err == nil {
		cfg.Dir = filepath.Dir(path)
		err = cfg.Validate()
	}
	if err != nil {
		return "", fmt.Errorf("the rewritten file would not load: %w", err)
	}

	backup, err = freeBackupName(path)
	if err != nil {
		return "", err
	}
	st0, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(backup, old, st0.Mode().Perm()); err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, buf.Bytes(), st0.Mode().Perm()); err != nil {
		return "", err
	}
	return backup, nil
}

// freeBackupName returns path.bak, or path.bak.N for the first N not
// taken: an older backup is never overwritten.
func freeBackupName(path string) (string, error) {
	for n := 0; n < 1000; n++ {
		name := path + ".bak"
		if n > 0 {
			name += "." + strconv.Itoa(n)
		}
		_, err := os.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return name, nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("%s.bak.1 to .999 exist", path)
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setScalar sets key to a string value, keeping the key's comments; a
// new key goes in as the at-th pair (or last, if there are fewer).
func setScalar(m *yaml.Node, at int, key, value string) {
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			v.LineComment, v.HeadComment, v.FootComment = old.LineComment, old.HeadComment, old.FootComment
			m.Content[i+1] = v
			return
		}
	}
	at = min(2*at, len(m.Content))
	m.Content = slices.Insert(m.Content, at, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
}

func removeKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}
