package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := Default()
	c.Name = "hq"
	return c
}

func TestValidateStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(*Store)
		err   string // substring; "" means valid
	}{
		{"badger default", func(*Store) {}, ""},
		{"postgres", func(s *Store) { s.Kind = StorePostgres; s.DSN = "postgres://strata@db/strata" }, ""},
		{"postgres with replicas", func(s *Store) {
			s.Kind = StorePostgres
			s.DSN = "host=db dbname=strata"
			s.ReadDSNs = []string{"host=r1 dbname=strata", "postgres://r2/strata"}
		}, ""},
		{"unknown kind", func(s *Store) { s.Kind = "sqlite" }, `store.kind: "sqlite" is not one of badger, postgres`},
		{"empty kind", func(s *Store) { s.Kind = "" }, "store.kind"},
		{"postgres without dsn", func(s *Store) { s.Kind = StorePostgres }, "store.dsn is required"},
		{"postgres blank dsn", func(s *Store) { s.Kind = StorePostgres; s.DSN = "  " }, "store.dsn is required"},
		{"postgres empty replica", func(s *Store) {
			s.Kind = StorePostgres
			s.DSN = "host=db"
			s.ReadDSNs = []string{"host=r1", ""}
		}, "store.read_dsns[1] is empty"},
		{"postgres with key file", func(s *Store) {
			s.Kind = StorePostgres
			s.DSN = "host=db"
			s.EncryptionKeyFile = "store.key"
		}, "encryption at rest is PostgreSQL's job"},
		{"postgres with key from env", func(s *Store) {
			s.Kind = StorePostgres
			s.DSN = "host=db"
			s.EncryptionKey = "00112233445566778899aabbccddeeff"
		}, "encryption at rest is PostgreSQL's job"},
		{"badger with dsn", func(s *Store) { s.DSN = "host=db" }, "need store.kind postgres"},
		{"badger with replicas", func(s *Store) { s.ReadDSNs = []string{"host=r1"} }, "need store.kind postgres"},
		{"badger cache", func(s *Store) { s.CacheMB = 0 }, "store.cache_mb"},
		{"negative lag", func(s *Store) { s.MaxReplicaLag = Duration(-time.Second) }, "store.max_replica_lag: -1s must be positive"},
		{"zero check interval", func(s *Store) { s.ReplicaCheckInterval = 0 }, "store.replica_check_interval"},
		{"negative read timeout", func(s *Store) {
			s.Kind = StorePostgres
			s.DSN = "host=db"
			s.ReadDSNs = []string{"host=r1"}
			s.ReplicaReadTimeout = Duration(-time.Millisecond)
		}, "store.replica_read_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.store(&c.Store)
			err := c.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.err != "" && err == nil:
				t.Fatalf("Validate passed, want %q", tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Fatalf("Validate: %v, want %q", err, tc.err)
			}
			if err != nil && c.Store.DSN != "" && strings.Contains(err.Error(), c.Store.DSN) {
				t.Errorf("error shows the dsn: %v", err)
			}
		})
	}
}

func TestParseStore(t *testing.T) {
	c, err := Parse([]byte("name: hq\nstore:\n  kind: postgres\n  dsn: postgres://strata@db:5432/strata\n  read_dsns:\n    - postgres://strata@r1/strata\n    - host=r2 dbname=strata\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Default().Store
	want.Kind, want.DSN = StorePostgres, "postgres://strata@db:5432/strata"
	want.ReadDSNs = []string{"postgres://strata@r1/strata", "host=r2 dbname=strata"}
	if !reflect.DeepEqual(c.Store, want) {
		t.Fatalf("store = %+v, want %+v", c.Store, want)
	}
	if want.MaxReplicaLag.D() != 5*time.Second || want.ReplicaCheckInterval.D() != time.Second || want.ReplicaReadTimeout.D() != 2*time.Second {
		t.Fatalf("replica defaults = %+v", want)
	}
	c, err = Parse([]byte("name: hq\nstore:\n  kind: postgres\n  dsn: host=db\n  read_dsns: [host=r1]\n" +
		"  max_replica_lag: 30s\n  replica_check_interval: 250ms\n  replica_read_timeout: 500ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.MaxReplicaLag.D() != 30*time.Second || c.Store.ReplicaCheckInterval.D() != 250*time.Millisecond ||
		c.Store.ReplicaReadTimeout.D() != 500*time.Millisecond {
		t.Fatalf("replica settings = %+v", c.Store)
	}
	if _, err := Parse([]byte("store:\n  max_replica_lag: soon\n")); err == nil {
		t.Fatal("a bad duration parsed")
	}
	if _, err := Parse([]byte("store:\n  read_dsn: host=r1\n")); err == nil {
		t.Fatal("a misspelt store key parsed")
	}
}

func TestEnvStore(t *testing.T) {
	env := map[string]string{"STRATA_STORE_KIND": "postgres", "STRATA_STORE_DSN": "postgres://strata:s3cret@db/strata"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c := validConfig()
	if err := c.ApplyEnv(lookup); err != nil {
		t.Fatal(err)
	}
	if c.Store.Kind != StorePostgres || c.Store.DSN != env["STRATA_STORE_DSN"] {
		t.Fatalf("store = %+v", c.Store)
	}
	env["STRATA_STORE_REPLICA_READ_TIMEOUT"] = "750ms"
	if err := c.ApplyEnv(lookup); err != nil || c.Store.ReplicaReadTimeout.D() != 750*time.Millisecond {
		t.Fatalf("STRATA_STORE_REPLICA_READ_TIMEOUT: %v, %v", c.Store.ReplicaReadTimeout, err)
	}
	delete(env, "STRATA_STORE_REPLICA_READ_TIMEOUT")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	// A list has no variable: setting one is an error, not a panic.
	env["STRATA_STORE_READ_DSNS"] = "host=r1"
	c = validConfig()
	err := c.ApplyEnv(lookup)
	if err == nil || !strings.Contains(err.Error(), "STRATA_STORE_READ_DSNS") {
		t.Fatalf("ApplyEnv with a list variable: %v", err)
	}
	names := EnvNames()
	if !slices.Contains(names, "STRATA_STORE_DSN") || slices.Contains(names, "STRATA_STORE_READ_DSNS") {
		t.Fatalf("EnvNames = %v", names)
	}
}

func TestMarshalStore(t *testing.T) {
	c := validConfig()
	c.Store.Kind = StorePostgres
	c.Store.DSN = "postgres://strata@db/strata"
	c.Store.ReadDSNs = []string{} // empty is not written
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "name: hq\nrole: hq\napi:\n  addr: 127.0.0.1:8443\nstore:\n  kind: postgres\n  dsn: postgres://strata@db/strata\n"
	if string(out) != want {
		t.Fatalf("Marshal =\n%s\nwant\n%s", out, want)
	}
	c.Store.ReadDSNs = []string{"postgres://strata@r1/strata"}
	out, err = Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Store, c.Store) {
		t.Fatalf("round trip: %+v, want %+v", back.Store, c.Store)
	}
}

func TestValidateAPILimits(t *testing.T) {
	if err := func() error { c := validConfig(); return c.Validate() }(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*API)
		want string
	}{
		{"no body timeout", func(a *API) { a.BodyTimeout = 0 }, "api.body_timeout"},
		{"negative header timeout", func(a *API) { a.ReadHeaderTimeout = Duration(-time.Second) }, "api.read_header_timeout"},
		{"per address above overall", func(a *API) { a.MaxConnsPerAddress = a.MaxConns + 1 }, "api.max_conns_per_address"},
		{"no unauthenticated requests", func(a *API) { a.MaxUnauthenticated = 0 }, "api.max_unauthenticated"},
		{"per user above overall", func(a *API) { a.MaxStreamsPerUser = a.MaxStreams + 1 }, "api.max_streams_per_user"},
	} {
		c := validConfig()
		tc.mod(&c.API)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	c, err := Parse([]byte("name: n\napi:\n  body_timeout: 5s\n  max_streams_per_user: 4\n"))
	if err != nil || c.API.BodyTimeout.D() != 5*time.Second || c.API.MaxStreamsPerUser != 4 || c.API.MaxConns != 4096 {
		t.Fatalf("parse: %+v, %v", c.API, err)
	}
}

func TestMQTTMaxConnecting(t *testing.T) {
	for _, n := range [][2]int{{-1, 0}, {0, 0}, {96, 96}, {64, 8}} {
		c := validConfig()
		c.MQTT.MaxConnecting, c.MQTT.MaxConnectingPerSource = n[0], n[1]
		if err := c.Validate(); err != nil {
			t.Errorf("max_connecting %d, per source %d: %v", n[0], n[1], err)
		}
	}
	c := validConfig()
	c.MQTT.MaxConnecting = -2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.max_connecting") {
		t.Fatalf("max_connecting -2: %v, want an error naming mqtt.max_connecting", err)
	}
	c = validConfig()
	c.MQTT.MaxConnectingPerSource = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.max_connecting_per_source") {
		t.Fatalf("max_connecting_per_source -1: %v, want an error naming it", err)
	}
	c = validConfig()
	c.MQTT.MaxParkedPerSource = -2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.max_parked_per_source") {
		t.Fatalf("max_parked_per_source -2: %v, want an error naming it", err)
	}
	c, err := Parse([]byte("name: n\nmqtt:\n  max_connecting: 128\n  max_connecting_per_source: 128\n  max_parked_per_source: -1\n"))
	if err != nil || c.MQTT.MaxConnecting != 128 || c.MQTT.MaxConnectingPerSource != 128 || c.MQTT.MaxParkedPerSource != -1 {
		t.Fatalf("parse: %+v, %v", c.MQTT, err)
	}
	c = validConfig()
	if err := c.ApplyEnv(func(k string) (string, bool) { return "200", k == "STRATA_MQTT_MAX_CONNECTING_PER_SOURCE" }); err != nil || c.MQTT.MaxConnectingPerSource != 200 {
		t.Fatalf("env: %d, %v", c.MQTT.MaxConnectingPerSource, err)
	}
}

func TestMQTTIngestSlots(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 64} {
		c := validConfig()
		c.MQTT.IngestSlots = n
		if err := c.Validate(); err != nil {
			t.Errorf("ingest_slots %d: %v", n, err)
		}
	}
	c := validConfig()
	c.MQTT.IngestSlots = -2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.ingest_slots") {
		t.Fatalf("ingest_slots -2: %v, want an error naming mqtt.ingest_slots", err)
	}
	c, err := Parse([]byte("name: n\nmqtt:\n  ingest_slots: 3\n"))
	if err != nil || c.MQTT.IngestSlots != 3 {
		t.Fatalf("parse: %+v, %v", c.MQTT, err)
	}
	c = validConfig()
	if err := c.ApplyEnv(func(k string) (string, bool) { return "-1", k == "STRATA_MQTT_INGEST_SLOTS" }); err != nil || c.MQTT.IngestSlots != -1 {
		t.Fatalf("env: %d, %v", c.MQTT.IngestSlots, err)
	}
}

func TestMQTTIngestPoller(t *testing.T) {
	for _, v := range []string{"", "on", "off"} {
		c := validConfig()
		c.MQTT.IngestPoller = v
		if err := c.Validate(); err != nil {
			t.Errorf("ingest_poller %q: %v", v, err)
		}
	}
	c := validConfig()
	c.MQTT.IngestPoller = "epoll"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.ingest_poller") {
		t.Fatalf("ingest_poller epoll: %v, want an error naming mqtt.ingest_poller", err)
	}
}
