package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

type truncateWALOptions struct {
	config  string
	segment string
	offset  int64
}

func (a *app) storeTruncateWALCmd() *cobra.Command {
	var o truncateWALOptions
	c := &cobra.Command{
		Use:   "truncate-wal --segment NAME --offset N [--config FILE]",
		Short: "Cut a stopped node's damaged write-ahead log where the node said it is damaged",
		Long: `A node whose Badger store finds its write-ahead log damaged anywhere but at
the very end refuses to start, naming the segment and the offset:

  write-ahead log segment DATA_DIR/wal/0000000000000002.log is damaged at offset 4096 ...

Copy the whole data directory aside first (it is the only copy of what
the damaged segment holds), then run

  strata store truncate-wal --segment 0000000000000002.log --offset 4096

to cut that segment at that offset. The records from there to the end of
that segment are lost; every record before it, and every later segment,
is applied at the next start. The node must be stopped (truncate-wal
takes the data directory's lock), and the offset must be where a record
starts (the one the node named), so that no intact record is cut.
A store with an encryption key needs no key here: only lengths and
checksums are read. If the node named a record that does not decrypt,
check store.encryption_key_file first: a wrong key is not damage.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.truncateWAL(o)
		},
	}
	addConfigFlag(c, &o.config)
	f := c.Flags()
	f.StringVar(&o.segment, "segment", "", "file name of the damaged segment, as the node named it (e.g. 0000000000000002.log)")
	f.Int64Var(&o.offset, "offset", -1, "offset the node named: where the damaged record starts")
	c.MarkFlagRequired("segment")
	c.MarkFlagRequired("offset")
	return c
}

func (a *app) truncateWAL(o truncateWALOptions) error {
	const cmd = "strata store truncate-wal"
	if o.offset < 0 {
		return usageError{err: errors.New("--offset must be 0 or more"), cmd: cmd}
	}
	path, _ := a.configPath(o.config)
	cfg, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.Store.Kind != config.StoreBadger {
		return fmt.Errorf("%s: the store is %s, which has no write-ahead log of its own", path, cfg.Store.Kind)
	}
	dataDir := cfg.Path(cfg.DataDir)
	if _, err := os.Stat(dataDir); err != nil {
		return fmt.Errorf("no Badger store: %w", err)
	}
	dropped, err := store.TruncateWAL(dataDir, o.segment, o.offset)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Cut %s at offset %d: %d bytes removed.\n", o.segment, o.offset, dropped)
	fmt.Fprintf(a.stdout, "Start the node again: strata serve --config %s\n", path)
	return nil
}
