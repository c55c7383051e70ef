package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

// writeBackup writes a backup of a Badger store holding /devices/a and a
// change-log id to a file.
func writeBackup(t *testing.T) string {
	t.Helper()
	src, err := store.OpenBadger(store.BadgerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, err := model.New(model.Config{Store: src})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device"}); err != nil {
		t.Fatal(err)
	}
	if err := m.PutRecord(ctx, federation.LogIDKind, federation.LogIDKey, []byte("old-log")); err != nil {
		t.Fatal(err)
	}
	b, err := src.Backup("hq")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	file := filepath.Join(t.TempDir(), "hq.strata")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := b.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return file
}

// strata restore puts a backup into the config's empty data directory,
// with its encryption key and a new change-log id, and refuses every
// other place.
func TestRestore(t *testing.T) {
	file := writeBackup(t)
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	cfgPath := filepath.Join(dir, configFile)
	if err := os.WriteFile(filepath.Join(dir, "store.key"), []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("store:\n  encryption_key_file: store.key\n")
	f.Close()

	code, out, e := runCmd(t, nil, "", "restore", "--from", file, "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "restored the backup of hq") {
		t.Fatalf("restore: %d %s %s", code, out, e)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenBadger(store.BadgerOptions{Dir: cfg.Path(cfg.DataDir)}); err == nil {
		t.Fatal("the restored store opens without the config's key")
	}
	st, err := node.OpenBadger(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Context("/devices/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Record(federation.LogIDKind, federation.LogIDKey); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("the restored store kept the change-log id: %v", err)
	}
	st.Close()

	// Into --data-dir, which may be missing.
	if code, _, e := runCmd(t, nil, "", "restore", "--from", file, "--data-dir", filepath.Join(t.TempDir(), "d")); code != 0 {
		t.Fatalf("restore --data-dir: %s", e)
	}

	pgCfg := filepath.Join(t.TempDir(), "pg.yaml")
	os.WriteFile(pgCfg, []byte("name: hq\nstore:\n  kind: postgres\n  dsn: postgres://nobody@127.0.0.1:1/none\n"), 0o600)
	replicaCfg := filepath.Join(t.TempDir(), "replica.yaml")
	os.WriteFile(replicaCfg, []byte("name: hq\ncluster:\n  id: r1\n  bootstrap: true\n  addr: 127.0.0.1:7400\n"), 0o600)
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("not a backup at all, not even close to one"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", file, "--config", cfgPath}, "not empty"},
		{[]string{"--from", file, "--config", pgCfg}, "it restores into badger only"},
		{[]string{"--from", file, "--config", replicaCfg}, "a replica's data directory is made by the cluster"},
		{[]string{"--from", garbage, "--data-dir", t.TempDir()}, "not a strata backup"},
		{[]string{"--from", filepath.Join(t.TempDir(), "none"), "--data-dir", t.TempDir()}, "no such file"},
	} {
		code, _, e := runCmd(t, nil, "", append([]string{"restore"}, c.args...)...)
		if code != 1 || !strings.Contains(e, c.want) {
			t.Errorf("restore %v: %d %s, want %q", c.args, code, e, c.want)
		}
	}
	if code, _, e := runCmd(t, nil, "", "restore", "--data-dir", t.TempDir()); code != 1 || !strings.Contains(e, `"from" not set`) {
		t.Errorf("restore without --from: exit %d, %s", code, e)
	}
}

// strata backup keeps a file only when the whole backup arrived and
// checked: a transfer that ends early, a damaged one and a refusal leave
// neither FILE nor FILE.tmp.
func TestBackupKeepsOnlyWholeFiles(t *testing.T) {
	data, err := os.ReadFile(writeBackup(t))
	if err != nil {
		t.Fatal(err)
	}
	var serve atomic.Value // func(http.ResponseWriter)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/backup" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"unexpected request","code":"invalid"}`, http.StatusBadRequest)
			return
		}
		serve.Load().(func(http.ResponseWriter))(w)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	damaged := bytes.Clone(data)
	damaged[len(damaged)-30] ^= 1
	for name, c := range map[string]struct {
		body   []byte
		status int
		want   string
	}{
		"cut":        {data[:len(data)/2], 200, "cut short"},
		"damaged":    {damaged, 200, "bad"},
		"refused":    {[]byte(`{"error":"forbidden: backups are for system administrators","code":"forbidden"}`), 403, "system administrators"},
		"not at all": {[]byte("<html>a proxy's page</html>"), 200, "not a strata backup"},
	} {
		serve.Store(func(w http.ResponseWriter) {
			w.WriteHeader(c.status)
			w.Write(c.body)
		})
		out := filepath.Join(t.TempDir(), "hq.strata")
		code, _, e := runCmd(t, nil, "", "backup", "--server", srv.URL, "--token", "tok", "--ca", ca, "--out", out)
		if code != 1 || !strings.Contains(e, c.want) {
			t.Errorf("%s: exit %d, %s, want %q", name, code, e, c.want)
		}
		for _, f := range []string{out, out + ".tmp"} {
			if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s left: %v", name, f, err)
			}
		}
	}
	serve.Store(func(w http.ResponseWriter) { w.Write(data) })
	out := filepath.Join(t.TempDir(), "hq.strata")
	code, stdout, e := runCmd(t, nil, "", "backup", "--server", srv.URL, "--token", "tok", "--ca", ca, "--out", out, "-o", "json")
	if code != 0 {
		t.Fatalf("backup: %s", e)
	}
	var res backupResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Bytes != int64(len(data)) || res.Node != "hq" || res.Store != "badger" || res.LastSeq == 0 {
		t.Fatalf("backup -o json: %+v, %v\n%s", res, err, stdout)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file differs from what was sent: %v", err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}
