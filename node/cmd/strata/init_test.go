package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/config"
)

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	code, out, errOut := runCmd(t, nil, "", "init", "--dir", dir, "--name", "plant-7", "--role", "probe",
		"--api-addr", "10.9.8.7:9443", "--mqtt-addr", "0.0.0.0:8883", "--federation-addr", "[::]:7443",
		"--tls-host", "plant7.example", "--tls-host", "192.0.2.1")
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "strata serve --config "+filepath.Join(dir, "strata.yaml")) {
		t.Errorf("init output lacks the next step:\n%s", out)
	}

	modes := map[string]os.FileMode{
		configFile: 0o644, caFile: 0o644, apiCertFile: 0o644,
		caKeyFile: 0o600, apiKeyFile: 0o600, adminTokenFile: 0o600,
	}
	for f, mode := range modes {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", f, st.Mode().Perm(), mode)
		}
	}

	cfg, err := config.Load(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatalf("written config does not load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "plant-7" || cfg.Role != config.RoleProbe || cfg.API.Addr != "10.9.8.7:9443" ||
		cfg.MQTT.Addr != "0.0.0.0:8883" || cfg.Federation.Addr != "[::]:7443" {
		t.Errorf("config = %+v", cfg)
	}
	// The default TLS paths point at what init wrote.
	if _, err := certs.LoadPair(cfg.Path(cfg.API.TLSCert), cfg.Path(cfg.API.TLSKey)); err != nil {
		t.Errorf("api certificate from the config: %v", err)
	}

	raw, _ := os.ReadFile(filepath.Join(dir, configFile))
	text := string(raw)
	if !strings.HasPrefix(text, "# Strata node \"plant-7\"") {
		t.Errorf("no comment header:\n%s", text)
	}
	for _, absent := range []string{"data_dir", "tls_cert", "store", "retention", "log"} {
		if strings.Contains(text, absent+":") {
			t.Errorf("config holds the default key %s:\n%s", absent, text)
		}
	}

	token, _ := os.ReadFile(filepath.Join(dir, adminTokenFile))
	if !strings.HasPrefix(string(token), "st_") || len(token) != 82 {
		t.Errorf("admin token %q does not look like auth.NewTokenSecret's", token)
	}

	// The API certificate is signed by the CA for the usual hosts, the API
	// address and the extra hosts.
	ca, _ := os.ReadFile(filepath.Join(dir, caFile))
	pair, err := certs.LoadPair(filepath.Join(dir, apiCertFile), filepath.Join(dir, apiKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "10.9.8.7", "plant7.example", "192.0.2.1"} {
		if _, err := pair.Cert.Verify(x509.VerifyOptions{DNSName: h, Roots: roots}); err != nil {
			t.Errorf("api certificate for %s: %v", h, err)
		}
	}
	caKey, _ := os.ReadFile(filepath.Join(dir, caKeyFile))
	if b, _ := pem.Decode(caKey); b == nil || b.Type != "PRIVATE KEY" {
		t.Error("ca.key is not a PKCS #8 PEM key")
	}
}

func TestInitPostgres(t *testing.T) {
	dir := t.TempDir()
	const dsn = "postgres://strata@db.example:5432/strata?sslmode=verify-full"
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq", "--store", "postgres", "--dsn", dsn); code != 0 {
		t.Fatal(e)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, configFile))
	if !strings.Contains(string(raw), "store:\n  kind: postgres\n  dsn: "+dsn+"\n") {
		t.Errorf("config lacks the store:\n%s", raw)
	}
	cfg, err := config.Load(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Kind != config.StorePostgres || cfg.Store.DSN != dsn {
		t.Errorf("store = %+v", cfg.Store)
	}
}

func TestInitReadDSNs(t *testing.T) {
	dir := t.TempDir()
	// A multi-host DSN holds a comma: the flag must not split it.
	replicas := []string{"postgres://strata@r1.example,r2.example/strata", "host=r3.example dbname=strata"}
	code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq", "--store", "postgres", "--dsn", "host=db",
		"--read-dsn", replicas[0], "--read-dsn", replicas[1])
	if code != 0 {
		t.Fatal(e)
	}
	cfg, err := config.Load(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Store.ReadDSNs, replicas) {
		t.Errorf("read_dsns = %q, want %q", cfg.Store.ReadDSNs, replicas)
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "hq"); code != 0 {
		t.Fatal(e)
	}
	token1, _ := os.ReadFile(filepath.Join(dir, adminTokenFile))
	ca1, _ := os.ReadFile(filepath.Join(dir, caFile))

	code, _, errOut := runCmd(t, nil, "", "init", "--dir", dir, "--name", "other")
	if code != 1 || !strings.Contains(errOut, "exists (use --force") {
		t.Fatalf("second init: exit %d, %q", code, errOut)
	}
	token2, _ := os.ReadFile(filepath.Join(dir, adminTokenFile))
	ca2, _ := os.ReadFile(filepath.Join(dir, caFile))
	if string(token1) != string(token2) || string(ca1) != string(ca2) {
		t.Error("a refused init changed files")
	}
	if cfg, err := config.Load(filepath.Join(dir, configFile)); err != nil || cfg.Name != "hq" {
		t.Errorf("config after refused init: %+v, %v", cfg.Name, err)
	}

	if code, _, e := runCmd(t, nil, "", "init", "--dir", dir, "--name", "other", "--force"); code != 0 {
		t.Fatal(e)
	}
	token3, _ := os.ReadFile(filepath.Join(dir, adminTokenFile))
	if string(token3) == string(token1) {
		t.Error("--force kept the old admin token")
	}
	if cfg, err := config.Load(filepath.Join(dir, configFile)); err != nil || cfg.Name != "other" {
		t.Errorf("config after --force: %+v, %v", cfg.Name, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestInitInvalidWritesNothing(t *testing.T) {
	for _, args := range [][]string{
		{"--name", "Bad_Name"},
		{"--name", "ok", "--role", "boss"},
		{"--name", "ok", "--api-addr", "nohostport"},
		{"--name", "ok", "--mqtt-addr", "1.2.3.4"},
		{"--name", "ok", "--store", "postgres"},
		{"--name", "ok", "--store", "sqlite"},
		{"--name", "ok", "--dsn", "host=db"},
		{"--name", "ok", "--read-dsn", "host=r1"},
		{"--name", "ok", "--store", "postgres", "--dsn", "host=db", "--read-dsn", ""},
	} {
		dir := filepath.Join(t.TempDir(), "n")
		code, _, errOut := runCmd(t, nil, "", append([]string{"init", "--dir", dir}, args...)...)
		if code != 1 || !strings.HasPrefix(errOut, "error: ") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%v: init wrote %s", args, dir)
		}
	}
	code, _, errOut := runCmd(t, nil, "", "init", "--dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, `"name" not set`) {
		t.Errorf("init without --name: exit %d, %q", code, errOut)
	}
}
