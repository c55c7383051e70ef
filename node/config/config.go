// Package config is the node's configuration: the strata.yaml schema, strict
// loading (unknown keys are errors), STRATA_* environment overrides and
// validation. Relative paths in the file are relative to the file's folder.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Roles a node can play. The binary is the same; the role sets defaults and
// what the console shows.
const (
	RoleProbe     = "probe"
	RoleRegional  = "regional"
	RoleHQ        = "hq"
	RoleReporting = "reporting"
)

// Config is the whole strata.yaml.
type Config struct {
	// Name is unique among the providers of any consumer.
	Name string `yaml:"name"`
	Role string `yaml:"role"`
	// DataDir holds the store; default "data" beside the config file.
	DataDir string `yaml:"data_dir"`

	API        API        `yaml:"api"`
	MQTT       MQTT       `yaml:"mqtt"`
	Federation Federation `yaml:"federation"`
	Cluster    Cluster    `yaml:"cluster"`
	Store      Store      `yaml:"store"`
	Retention  Retention  `yaml:"retention"`
	Auth       Auth       `yaml:"auth"`
	Log        Log        `yaml:"log"`
	Objects    Objects    `yaml:"objects"`
	Software   Software   `yaml:"software"`
	Alerts     Alerts     `yaml:"alerts"`
	History    History    `yaml:"history"`

	// Dir is the folder of the config file (not in the file).
	Dir string `yaml:"-"`
}

// API is the operators' HTTPS endpoint.
type API struct {
	Addr string `yaml:"addr"`
	// TLSCert and TLSKey are PEM files; strata init writes self-signed ones.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// BodyTimeout is how long a request body may take to arrive after its
	// headers (default 30s); ReadHeaderTimeout bounds the TLS handshake
	// and the headers (default 10s); IdleTimeout an idle keep-alive
	// connection (default 2m).
	BodyTimeout       Duration `yaml:"body_timeout"`
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	// MaxConns and MaxConnsPerAddress bound open connections overall and
	// per client IP address (defaults 4096 and 256).
	MaxConns           int `yaml:"max_conns"`
	MaxConnsPerAddress int `yaml:"max_conns_per_address"`
	// MaxUnauthenticated and MaxUnauthenticatedPerAddress bound requests
	// in flight on login and enrollment, overall and per client IP
	// address (defaults 1024 and 64).
	MaxUnauthenticated           int `yaml:"max_unauthenticated"`
	MaxUnauthenticatedPerAddress int `yaml:"max_unauthenticated_per_address"`
	// MaxStreams and MaxStreamsPerUser bound open change streams overall
	// and per user (defaults 1000 and 32).
	MaxStreams        int `yaml:"max_streams"`
	MaxStreamsPerUser int `yaml:"max_streams_per_user"`
}

// MQTT is the device endpoint.
type MQTT struct {
	// Addr is the MQTT-over-TLS listener (conventionally :8883); empty: none.
	Addr string `yaml:"addr"`
	// TCPAddr and WSAddr are plain MQTT and MQTT-over-WebSocket listeners,
	// for labs; empty: none.
	TCPAddr string `yaml:"tcp_addr"`
	WSAddr  string `yaml:"ws_addr"`
	// Advertise is the HOST:PORT enrolling devices are told to connect to;
	// default Addr, with the API request's host when Addr listens on all
	// addresses.
	Advertise string `yaml:"advertise"`
	// TLSCert and TLSKey are the listener's certificate; default the API's.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CACert is the CA devices trust and whose certificates authenticate
	// devices; CAKey (optional) signs device certificates from CSRs at
	// enrollment. Defaults: tls/ca.crt and tls/ca.key, as strata init
	// writes them.
	CACert string `yaml:"ca_cert"`
	CAKey  string `yaml:"ca_key"`
	// MaxPayloadBytes bounds one message's payload (default 256 KiB).
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// MaxSessions bounds concurrent device connections (default 200,000).
	MaxSessions int `yaml:"max_sessions"`
	// IngestSlots bounds the device connections that read and decode
	// messages at once, so device ingest leaves CPU to the operator API;
	// 0: half the cores available (Go's default GOMAXPROCS), at least 1;
	// -1: unbounded. strata serve adds as many Ps (node.Procs).
	IngestSlots int `yaml:"ingest_slots"`
	// IngestPoller is how a device connection under ingest_slots waits
	// for data: "on" (the default, Linux): parked until a poller of the
	// endpoint's own wakes it with a slot taken for it, so that at most
	// ingest_slots device readers are runnable at once; "off": in Go's
	// network poller, taking its slot once data came (as on other
	// systems), which makes every reader whose device sent something
	// runnable at once.
	IngestPoller string `yaml:"ingest_poller"`
	// MaxConnecting bounds the connections each of the TLS and TCP
	// listeners has accepted that are not yet connected (handshake,
	// CONNECT, CONNACK); the others wait in the kernel's accept queue.
	// 0: 32 per core, at least 64; -1: unbounded.
	MaxConnecting int `yaml:"max_connecting"`
	// MaxConnectingPerSource bounds those from one source address;
	// 0: half of max_connecting. Raise it (up to max_connecting) where
	// many devices share one address, behind a NAT.
	MaxConnectingPerSource int `yaml:"max_connecting_per_source"`
	// MaxParkedPerSource bounds the connections of one source address
	// that wait, parked (accepted, unread), for a place in its share;
	// beyond it they are closed. 0: 4096; -1: none wait.
	MaxParkedPerSource int `yaml:"max_parked_per_source"`
}

// Federation links this node into a hierarchy (docs/federation.md): a
// QUIC listener for the providers below it, and the consumers above it
// that it publishes to. Validation is in federation.go.
type Federation struct {
	// Addr is the UDP listener providers dial (conventionally :7443);
	// empty: none (a probe only dials up, and needs no inbound port).
	Addr string `yaml:"addr"`
	// Upstreams are the consumers this node publishes to (strata join
	// adds them).
	Upstreams []Upstream `yaml:"upstreams"`
	// KeepAlive and IdleTimeout tune links (defaults 5s and 30s;
	// keepalive must be below idle_timeout).
	KeepAlive   Duration `yaml:"keepalive"`
	IdleTimeout Duration `yaml:"idle_timeout"`
	// CertValidity is the lifetime of the node certificates this node
	// issues to providers that join it (default 720h).
	CertValidity Duration `yaml:"cert_validity"`
	// LogBudget bounds the change-log entries kept for consumers that are
	// behind (default 5,000,000).
	LogBudget uint64 `yaml:"log_budget"`
}

// Upstream is one consumer this node publishes to.
type Upstream struct {
	// Address is the consumer's federation listener, HOST:PORT.
	Address string `yaml:"address"`
	// Token is the join token the consumer created; used on the first
	// connection only.
	Token string `yaml:"token,omitempty"`
	// Publish lists the subtrees published; empty: the whole tree.
	Publish []string `yaml:"publish,omitempty"`
	// Replicas are the other federation listeners of a consumer that is
	// a cluster (docs/cluster.md), HOST:PORT each: the link tries
	// Address, then each of these in turn, until one accepts (the
	// cluster's leader; the others refuse with not_leader). Address
	// still names the link (its credentials, its reload identity).
	Replicas []string `yaml:"replicas,omitempty"`
	// Bandwidth bounds the artifact bytes fetched over this link per
	// second ("10MB", "512KiB"; empty: no bound), Windows the daily times
	// it fetches them in ("22:00-06:00", the node's local time; none:
	// always). The sync is bound by neither (docs/software.md).
	Bandwidth string   `yaml:"bandwidth,omitempty"`
	Windows   []string `yaml:"windows,omitempty"`
}

// Store kinds.
const (
	StoreBadger   = "badger"   // embedded, in data_dir (the default)
	StorePostgres = "postgres" // a PostgreSQL primary at DSN
)

// Store selects and tunes the store.
type Store struct {
	Kind string `yaml:"kind"` // StoreBadger (default) or StorePostgres
	// DSN is the PostgreSQL primary, as a URL or key=value string; kind
	// postgres only. STRATA_STORE_DSN overrides it, so that a password need
	// not be in the file. It is never logged.
	DSN string `yaml:"dsn"`
	// ReadDSNs are PostgreSQL streaming replicas of DSN; kind postgres
	// only. Tree browsing and event history read from them (see
	// store.PostgresOptions.ReadDSNs).
	ReadDSNs []string `yaml:"read_dsns"`
	// MaxReplicaLag takes a replica further behind the primary out of
	// rotation (default 5s); ReplicaCheckInterval is how often replicas
	// are checked (default 1s); ReplicaReadTimeout bounds one read on a
	// replica, which is then retried on the primary (default 2s). Kind
	// postgres with read_dsns only; see store.PostgresOptions.
	MaxReplicaLag        Duration `yaml:"max_replica_lag"`
	ReplicaCheckInterval Duration `yaml:"replica_check_interval"`
	ReplicaReadTimeout   Duration `yaml:"replica_read_timeout"`
	// EncryptionKeyFile holds a 16, 24 or 32 byte key (raw or hex) for
	// encryption at rest; STRATA_STORE_ENCRYPTION_KEY (hex) overrides it.
	// Kind badger only: on PostgreSQL, encryption at rest is the server's.
	EncryptionKeyFile string `yaml:"encryption_key_file"`
	EncryptionKey     string `yaml:"-"`
	// CacheMB is Badger's block cache size (default 64).
	CacheMB int `yaml:"cache_mb"`
}

// Retention bounds history kept on disk.
type Retention struct {
	EventsPerContext int      `yaml:"events_per_context"` // default 1000
	EventMaxAge      Duration `yaml:"event_max_age"`      // default 720h
	LogEntries       uint64   `yaml:"log_entries"`        // change-log entries kept, default 1,000,000
	JobMaxAge        Duration `yaml:"job_max_age"`        // finished jobs kept, default 720h
}

// Auth tunes authentication.
type Auth struct {
	// LoginFailures per LoginWindow per user and per client address before
	// logins are refused (defaults 5 per 1m).
	LoginFailures int      `yaml:"login_failures"`
	LoginWindow   Duration `yaml:"login_window"`
	// SessionTTL is the lifetime of tokens issued by login (default 12h).
	SessionTTL Duration `yaml:"session_ttl"`
}

// Log configures structured logs.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Duration is a time.Duration written as "90s", "12h" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns a configuration with every default filled in.
func Default() Config {
	return Config{
		Role:    RoleHQ,
		DataDir: "data",
		API: API{
			Addr:         "127.0.0.1:8443",
			TLSCert:      "tls/api.crt",
			TLSKey:       "tls/api.key",
			MaxBodyBytes: 1 << 20,

			BodyTimeout:       Duration(30 * time.Second),
			ReadHeaderTimeout: Duration(10 * time.Second),
			IdleTimeout:       Duration(2 * time.Minute),

			MaxConns:                     4096,
			MaxConnsPerAddress:           256,
			MaxUnauthenticated:           1024,
			MaxUnauthenticatedPerAddress: 64,
			MaxStreams:                   1000,
			MaxStreamsPerUser:            32,
		},
		MQTT: MQTT{CACert: "tls/ca.crt", CAKey: "tls/ca.key", MaxPayloadBytes: 256 << 10, MaxSessions: 200_000},
		Federation: Federation{KeepAlive: Duration(5 * time.Second), IdleTimeout: Duration(30 * time.Second),
			CertValidity: Duration(720 * time.Hour), LogBudget: 5_000_000},
		Cluster: Cluster{TLSCert: "tls/replica.crt", TLSKey: "tls/replica.key"},
		Store: Store{Kind: StoreBadger, CacheMB: 64, MaxReplicaLag: Duration(5 * time.Second),
			ReplicaCheckInterval: Duration(time.Second), ReplicaReadTimeout: Duration(2 * time.Second)},
		Retention: Retention{EventsPerContext: 1000, EventMaxAge: Duration(720 * time.Hour), LogEntries: 1_000_000, JobMaxAge: Duration(720 * time.Hour)},
		Auth:      Auth{LoginFailures: 5, LoginWindow: Duration(time.Minute), SessionTTL: Duration(12 * time.Hour)},
		Log:       Log{Level: "info", Format: "text"},
		Objects:   Objects{Kind: ObjectsFS},
		Alerts:    Alerts{EvalInterval: Duration(time.Second), Queue: 65536, ResolvedRetention: Duration(24 * time.Hour)},
		History:   defaultHistory(),
	}
}

// Load reads the file at path over the defaults, strictly: an unknown key
// is an error. It then applies STRATA_* environment overrides and validates.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Config{}, err
	}
	cfg.Dir = abs
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults, rejecting unknown keys.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks the configuration and reports the first problem.
func (c *Config) Validate() error {
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	switch c.Role {
	case RoleProbe, RoleRegional, RoleHQ, RoleReporting:
	default:
		return fmt.Errorf("role: %q is not one of probe, regional, hq, reporting", c.Role)
	}
	if err := validAddr(c.API.Addr, false); err != nil {
		return fmt.Errorf("api.addr: %w", err)
	}
	for key, addr := range map[string]string{"mqtt.addr": c.MQTT.Addr, "mqtt.tcp_addr": c.MQTT.TCPAddr, "mqtt.ws_addr": c.MQTT.WSAddr} {
		if err := validAddr(addr, true); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if c.MQTT.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.MQTT.Advertise); err != nil {
			return fmt.Errorf("mqtt.advertise: %w", err)
		}
	}
	if c.MQTT.MaxPayloadBytes < 0 || c.MQTT.MaxPayloadBytes > 16<<20 {
		return errors.New("mqtt.max_payload_bytes: must be in 0..16 MiB")
	}
	if c.MQTT.MaxSessions < 0 {
		return errors.New("mqtt.max_sessions: must not be negative")
	}
	if c.MQTT.IngestSlots < -1 {
		return errors.New("mqtt.ingest_slots: must be -1 (unbounded), 0 (default) or positive")
	}
	if p := c.MQTT.IngestPoller; p != "" && p != "on" && p != "off" {
		return fmt.Errorf("mqtt.ingest_poller: %q: must be on or off", p)
	}
	if c.MQTT.MaxConnecting < -1 {
		return errors.New("mqtt.max_connecting: must be -1 (unbounded), 0 (default) or positive")
	}
	if c.MQTT.MaxConnectingPerSource < 0 {
		return errors.New("mqtt.max_connecting_per_source: must be 0 (half of max_connecting) or positive")
	}
	if c.MQTT.MaxParkedPerSource < -1 {
		return errors.New("mqtt.max_parked_per_source: must be -1 (none), 0 (default) or positive")
	}
	if err := c.Federation.validate(); err != nil {
		return err
	}
	if c.API.TLSCert == "" || c.API.TLSKey == "" {
		return errors.New("api.tls_cert and api.tls_key are required (strata init writes them)")
	}
	if c.API.MaxBodyBytes <= 0 {
		return errors.New("api.max_body_bytes must be positive")
	}
	if err := c.API.validateLimits(); err != nil {
		return err
	}
	if err := c.Objects.validate(); err != nil {
		return err
	}
	if _, err := c.TrustedKeys(); err != nil {
		return err
	}
	if _, err := c.Software.CacheBudgetBytes(); err != nil {
		return err
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if err := c.History.validate(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if err := c.Alerts.validate(); err != nil {
		return err
	}
	if c.Retention.EventsPerContext < 1 || c.Retention.EventMaxAge <= 0 || c.Retention.LogEntries < 1000 {
		return errors.New("retention: events_per_context >= 1, event_max_age > 0 and log_entries >= 1000 are required")
	}
	if c.Auth.LoginFailures < 1 || c.Auth.LoginWindow <= 0 || c.Auth.SessionTTL <= 0 {
		return errors.New("auth: login_failures >= 1, login_window > 0 and session_ttl > 0 are required")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	return nil
}

// validateLimits checks the API's bounds on slow and numerous clients:
// all positive, per-key bounds within the overall ones.
func (a *API) validateLimits() error {
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"api.body_timeout", a.BodyTimeout},
		{"api.read_header_timeout", a.ReadHeaderTimeout},
		{"api.idle_timeout", a.IdleTimeout},
	} {
		if d.d <= 0 {
			return fmt.Errorf("%s: %v must be positive", d.key, d.d.D())
		}
	}
	for _, l := range []struct {
		key, perKey string
		max, per    int
	}{
		{"api.max_conns", "api.max_conns_per_address", a.MaxConns, a.MaxConnsPerAddress},
		{"api.max_unauthenticated", "api.max_unauthenticated_per_address", a.MaxUnauthenticated, a.MaxUnauthenticatedPerAddress},
		{"api.max_streams", "api.max_streams_per_user", a.MaxStreams, a.MaxStreamsPerUser},
	} {
		if l.max < 1 || l.per < 1 {
			return fmt.Errorf("%s and %s must be at least 1", l.key, l.perKey)
		}
		if l.per > l.max {
			return fmt.Errorf("%s (%d) must not exceed %s (%d)", l.perKey, l.per, l.key, l.max)
		}
	}
	return nil
}

func (s *Store) validate() error {
	switch s.Kind {
	case StoreBadger:
		if s.DSN != "" || len(s.ReadDSNs) > 0 {
			return errors.New("store.dsn and store.read_dsns need store.kind postgres (the store is badger)")
		}
	case StorePostgres:
		if strings.TrimSpace(s.DSN) == "" {
			return errors.New("store.dsn is required with store.kind postgres (or set STRATA_STORE_DSN)")
		}
		for i, d := range s.ReadDSNs {
			if strings.TrimSpace(d) == "" {
				return fmt.Errorf("store.read_dsns[%d] is empty", i)
			}
		}
		if s.EncryptionKeyFile != "" || s.EncryptionKey != "" {
			return errors.New("store.encryption_key_file and STRATA_STORE_ENCRYPTION_KEY are for badger: " +
				"with store.kind postgres, encryption at rest is PostgreSQL's job (encrypted volumes), and TLS via the dsn's sslmode")
		}
	default:
		return fmt.Errorf("store.kind: %q is not one of badger, postgres", s.Kind)
	}
	if s.CacheMB < 1 {
		return errors.New("store.cache_mb must be at least 1")
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"store.max_replica_lag", s.MaxReplicaLag},
		{"store.replica_check_interval", s.ReplicaCheckInterval},
		{"store.replica_read_timeout", s.ReplicaReadTimeout},
	} {
		if d.d <= 0 {
			return fmt.Errorf("%s: %v must be positive", d.key, d.d.D())
		}
	}
	return nil
}

// Path resolves a path from the file against the config's folder.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

func validName(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' && i > 0)
		if !ok {
			return fmt.Errorf("%q: use lowercase letters, digits and inner dashes", s)
		}
	}
	return nil
}

func validAddr(s string, optional bool) error {
	if s == "" {
		if optional {
			return nil
		}
		return errors.New("required")
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return err
	}
	return nil
}
