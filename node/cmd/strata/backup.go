package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

// backupResult is what strata backup reports (-o json).
type backupResult struct {
	File    string    `json:"file"`
	Bytes   int64     `json:"bytes"`
	Store   string    `json:"store"`
	Node    string    `json:"node"`
	Time    time.Time `json:"time"`
	LastSeq uint64    `json:"last_seq"`
	Seconds float64   `json:"seconds"`
}

func (a *app) backupCmd() *cobra.Command {
	x := &ctl{app: a}
	var out string
	c := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Take an online backup of a running node's store",
		Long: `Backup asks a running node for a backup of its whole store (POST
/api/v1/backup; system administrators only) and writes it to FILE. The
node keeps serving and writing meanwhile: the backup is one consistent
view of the store, holding every write the node acknowledged before the
backup started (docs/operations.md, "Backups").

The file is written as FILE.tmp, checked as it arrives (its header, every
frame and every checksum), synced and only then renamed to FILE: a
transfer that is cut or damaged leaves no FILE. FILE must not exist.
--timeout does not apply: the transfer takes as long as the store needs.

The backup holds every tenant's data, users' password hashes, token
hashes and, on a cluster, federation credentials: keep it as secret as
the node's own files (it is written with mode 0600).

` + targetHelp,
		Example: `  strata backup --config /etc/strata/strata.yaml --out /backups/hq-$(date +%F).strata`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := x.backup(ctx, out)
			if err != nil {
				return err
			}
			return x.show(res, func(w io.Writer) {
				mb := float64(res.Bytes) / 1e6
				fmt.Fprintf(w, "backup of %s (%s store) written to %s: %d bytes (%.1f MB), last sequence number %d, in %.1fs (%.1f MB/s)\n",
					res.Node, res.Store, res.File, res.Bytes, mb, res.LastSeq, res.Seconds, mb/max(res.Seconds, 1e-3))
			})
		},
	}
	x.addTargetFlags(c)
	c.Flags().StringVar(&out, "out", "", "file to write the backup to (must not exist)")
	c.MarkFlagRequired("out")
	return c
}

// backup streams a backup from the node into out.tmp, verifying it as it
// arrives, then syncs it and renames it to out.
func (x *ctl) backup(ctx context.Context, out string) (backupResult, error) {
	if _, err := os.Lstat(out); err == nil {
		return backupResult{}, fmt.Errorf("%s exists: choose another name, or remove it first", out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return backupResult{}, err
	}
	cl, err := x.client()
	if err != nil {
		return backupResult{}, err
	}
	defer cl.CloseIdleConnections()
	start := time.Now()
	body, err := cl.Backup(ctx)
	if err != nil {
		return backupResult{}, err
	}
	defer body.Close()
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return backupResult{}, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	cw := &countingWriter{w: f}
	// Every byte read from the node is written to the file; the file is
	// kept only if the whole stream checks.
	h, err := store.VerifyBackup(io.TeeReader(body, cw))
	if err == nil {
		err = cw.err
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return backupResult{}, fmt.Errorf("backup failed after %d bytes, nothing written to %s: %w", cw.n, out, err)
	}
	if err := f.Sync(); err != nil {
		return backupResult{}, err
	}
	if err := f.Close(); err != nil {
		return backupResult{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return backupResult{}, err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return backupResult{File: out, Bytes: cw.n, Store: h.Store, Node: h.Node, Time: h.Time, LastSeq: h.LastSeq,
		Seconds: time.Since(start).Seconds()}, nil
}

type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

// Write writes p, remembering the first error: a TeeReader stops reading
// at a write error, and the caller reports it rather than the reader's.
func (c *countingWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

type restoreOptions struct {
	from    string
	dataDir string
	config  string
}

func (a *app) restoreCmd() *cobra.Command {
	var o restoreOptions
	c := &cobra.Command{
		Use:   "restore --from FILE (--data-dir DIR | --config FILE)",
		Short: "Restore a backup into an empty store",
		Long: `Restore reads a backup made by strata backup into an empty store of the
same kind: a Badger backup into a data directory, a PostgreSQL backup into
a PostgreSQL database. (To move a Badger store to PostgreSQL, restore it
into a data directory, then run strata store migrate.)

--data-dir DIR restores a Badger backup into DIR, which must be empty or
missing. Otherwise the node's config (--config, else $STRATA_CONFIG, else
./strata.yaml) names the place: its data_dir (store.kind badger; with the
config's encryption key, if any) or its database (store.kind postgres:
the schema is created as the node creates it at start, and the database
must hold no Strata data). Restore refuses any place that is not empty.

The whole file is checked: a Badger restore that fails leaves the
directory as it found it (missing or empty); a PostgreSQL restore is one
transaction, committed only once the file's checksum matched and every
table holds the rows the backup counted.

The config file, the TLS keys and CA, admin.token and the object store's
artifact bytes are not in a backup: restore them from their own copies
(docs/operations.md, "Backups"), then start the node.`,
		Example: `  strata restore --from /backups/hq-2026-12-07.strata --config /srv/strata/strata.yaml
  strata restore --from hq.strata --data-dir /srv/strata/data`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.restore(ctx, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.from, "from", "", "backup file to restore")
	f.StringVar(&o.dataDir, "data-dir", "", "restore a Badger backup into this empty or missing directory")
	addConfigFlag(c, &o.config)
	c.MarkFlagRequired("from")
	return c
}

// newLogID drops the change log's id from a restored store: the node makes
// a new one, and its consumers resynchronise rather than trust cursors
// into the history lost after the backup.
var newLogID = store.RecordName{Kind: federation.LogIDKind, Key: federation.LogIDKey}

func (a *app) restore(ctx context.Context, o restoreOptions) error {
	f, err := os.Open(o.from)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := store.ReadBackupHeader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", o.from, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	var cfg *config.Config
	path, explicit := a.configPath(o.config)
	if o.dataDir == "" || explicit {
		c, err := config.Load(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		cfg = &c
	}
	kind := config.StoreBadger
	if o.dataDir == "" {
		kind = cfg.Store.Kind
	}
	if kind != h.Store {
		return fmt.Errorf("%s is a backup of a %s store; it restores into %s only (a data directory for badger, a database for postgres)", o.from, h.Store, h.Store)
	}
	start := time.Now()
	switch kind {
	case config.StoreBadger:
		opts := store.BadgerOptions{Dir: o.dataDir, Logger: log}
		if cfg != nil {
			if cfg.Cluster.Enabled() && o.dataDir == "" {
				return fmt.Errorf("%s is a replica's config: a replica's data directory is made by the cluster, not restored (restore into a single node's data directory with --data-dir)", path)
			}
			if opts.EncryptionKey, err = node.EncryptionKey(cfg); err != nil {
				return err
			}
			if opts.Dir == "" {
				opts.Dir = cfg.Path(cfg.DataDir)
			}
		}
		if _, err := store.RestoreBadgerBackup(opts, f, newLogID); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "restored the backup of %s taken %s into %s: last sequence number %d (%.1fs)\n",
			h.Node, h.Time.Format(time.RFC3339), opts.Dir, h.LastSeq, time.Since(start).Seconds())
	case config.StorePostgres:
		popts := node.PostgresOptions(cfg, log)
		popts.ReadDSNs = nil
		octx, cancel := context.WithTimeout(ctx, migrateOpenTimeout)
		dst, err := store.OpenPostgres(octx, popts)
		cancel()
		if err != nil {
			return err
		}
		defer dst.Close()
		if _, err := store.RestorePostgresBackup(ctx, dst, f, newLogID); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "restored the backup of %s taken %s into the database of %s: last sequence number %d (%.1fs)\n",
			h.Node, h.Time.Format(time.RFC3339), path, h.LastSeq, time.Since(start).Seconds())
	default:
		return fmt.Errorf("%s: store kind %q", path, kind)
	}
	return nil
}
