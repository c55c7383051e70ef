package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
	"github.com/strata-dm/strata/node/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestStoreMigrate moves an encrypted Badger node to PostgreSQL: refused
// while the data directory is held, then copied, the config rewritten
// with a backup; a second run finds the node moved, and a run into the
// now non-empty database is refused.
func TestStoreMigrate(t *testing.T) {
	pg := pgtest.Shared(t)
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	cfgPath := filepath.Join(dir, configFile)
	if err := os.WriteFile(filepath.Join(dir, "store.key"), []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("store:\n  encryption_key_file: store.key # badger only\n  cache_mb: 16\n")
	f.Close()
	original, _ := os.ReadFile(cfgPath)

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	src, err := node.OpenBadger(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []model.Path{"/devices/a", "/devices/b"} {
		if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: p, Type: "device"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpEvent, Path: "/devices/a", Event: &model.Event{Level: model.LevelAlert}}); err != nil {
		t.Fatal(err)
	}
	if err := m.PutRecord(ctx, "user", "alice", []byte("hash")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	last, _ := src.LastSeq()

	dsn := pg.NewDatabase(t)
	migrate := func() (int, string, string) {
		return runCmd(t, nil, "", "store", "migrate", "--to", "postgres", "--dsn", dsn, "--config", cfgPath)
	}
	// The node "runs": the data directory is locked.
	code, _, errOut := migrate()
	if code != 1 || !strings.Contains(errOut, "stop the node first") {
		t.Fatalf("migrate while the node runs: exit %d, %s", code, errOut)
	}
	src.Close()

	code, out, errOut := migrate()
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "Rewrote "+cfgPath) || !strings.Contains(out, "last sequence number "+itoa(last)) {
		t.Errorf("migrate output:\n%s", out)
	}
	backup, _ := os.ReadFile(cfgPath + ".bak")
	if string(backup) != string(original) {
		t.Errorf("backup =\n%s\nwant\n%s", backup, original)
	}
	raw, _ := os.ReadFile(cfgPath)
	if !strings.HasPrefix(string(raw), "# Strata node") || strings.Contains(string(raw), "encryption_key_file") {
		t.Errorf("rewritten config:\n%s", raw)
	}
	cfg, err = config.Load(cfgPath)
	if err != nil {
		t.Fatalf("rewritten config: %v\n%s", err, raw)
	}
	if cfg.Store.Kind != config.StorePostgres || cfg.Store.DSN != dsn || cfg.Store.CacheMB != 16 || cfg.Name != "hq" {
		t.Errorf("rewritten config = %+v", cfg)
	}

	dst, err := store.OpenPostgres(ctx, node.PostgresOptions(&cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := dst.LastSeq(); err != nil || got != last {
		t.Errorf("last seq = %d, %v; want %d", got, err, last)
	}
	if cs, err := dst.Children("/devices", "", 0); err != nil || len(cs) != 2 {
		t.Errorf("children = %+v, %v", cs, err)
	}
	if evs, err := dst.Events("/devices/a", model.EventQuery{}); err != nil || len(evs) != 1 || evs[0].Level != model.LevelAlert {
		t.Errorf("events = %+v, %v", evs, err)
	}
	if v, err := dst.Record("user", "alice"); err != nil || string(v) != "hash" {
		t.Errorf("record = %q, %v", v, err)
	}
	dst.Close()

	code, _, errOut = migrate()
	if code != 1 || !strings.Contains(errOut, "already postgres") {
		t.Errorf("second migrate: exit %d, %s", code, errOut)
	}
	// Back on the old config, the database is no longer empty.
	if err := os.WriteFile(cfgPath, original, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = migrate()
	if code != 1 || !strings.Contains(errOut, "not empty") {
		t.Errorf("migrate into a non-empty database: exit %d, %s", code, errOut)
	}
	if raw, _ := os.ReadFile(cfgPath); string(raw) != string(original) {
		t.Error("a refused migrate changed the config")
	}
}

func TestStoreMigrateNoRewrite(t *testing.T) {
	pg := pgtest.Shared(t)
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	cfgPath := filepath.Join(dir, configFile)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	src, err := node.OpenBadger(&cfg, nil) // an empty store: nothing written yet
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	original, _ := os.ReadFile(cfgPath)
	dsn := pg.NewDatabase(t)
	code, out, errOut := runCmd(t, nil, "", "store", "migrate", "--to", "postgres", "--dsn", dsn,
		"--config", cfgPath, "--rewrite-config=false")
	if code != 0 {
		t.Fatalf("migrate: exit %d, %s", code, errOut)
	}
	if !strings.Contains(out, "store:\n  kind: postgres\n  dsn: \""+dsn+"\"\n") {
		t.Errorf("migrate does not print the change:\n%s", out)
	}
	if raw, _ := os.ReadFile(cfgPath); string(raw) != string(original) {
		t.Error("--rewrite-config=false changed the config")
	}
	if _, err := os.Stat(cfgPath + ".bak"); err == nil {
		t.Error("backup written without a rewrite")
	}
}

func TestStoreMigrateUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--dsn", "host=db"}, `"to" not set`},
		{[]string{"--to", "postgres"}, `"dsn" not set`},
		{[]string{"--to", "sqlite", "--dsn", "host=db"}, `only postgres`},
	} {
		code, _, errOut := runCmd(t, nil, "", append([]string{"store", "migrate"}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d, %q", tc.args, code, errOut)
		}
	}
	// No data directory: nothing to migrate.
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	code, _, errOut := runCmd(t, nil, "", "store", "migrate", "--to", "postgres", "--dsn", "host=db",
		"--config", filepath.Join(dir, configFile))
	if code != 1 || !strings.Contains(errOut, "no Badger store") {
		t.Errorf("migrate without a data directory: exit %d, %q", code, errOut)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
