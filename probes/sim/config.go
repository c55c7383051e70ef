package sim

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"time"
)

// Config describes one simulated fleet. Start from DefaultConfig: the zero
// value of a bool field is not always its default (AnswerCommands,
// Reconnect).
type Config struct {
	// Devices is the number of simulated devices.
	Devices int

	// Where credentials come from, in this order: Credentials, then the
	// lines of CredentialsFile, then enrollment through API with
	// EnrollToken for the devices still missing. Anonymous skips all three:
	// client ids are IDPrefix0..IDPrefixN-1 with no username (raw broker
	// baselines, e.g. Mosquitto).
	Credentials     []Credentials
	CredentialsFile string
	API             string // https://HOST:PORT of a node: enrollment, device downloads (Fleet.Download)
	EnrollToken     string
	Anonymous       bool
	// IDPrefix names the devices: hardware ids are sim-<IDPrefix>-<n>,
	// anonymous client ids <IDPrefix><n>. Concurrent simulators against
	// one node need distinct prefixes (re-enrolling rotates a secret).
	IDPrefix string
	// SaveCredentials, when set, receives every device's credentials as
	// JSON lines once they are known (before connecting).
	SaveCredentials string

	// CAPEM is trusted for the API and for MQTT over TLS, besides the
	// ca_pem of each device's credentials. Empty: system roots plus ca_pem.
	CAPEM []byte
	// MQTTAddr overrides the credentials' mqtt_address (HOST:PORT).
	MQTTAddr string
	// Plain uses plain TCP instead of TLS for MQTT.
	Plain bool
	// SourceAddrs are local addresses connections are spread over, round
	// robin by device, to get past ~28k ephemeral ports per address.
	SourceAddrs []netip.Addr

	// Rate is the total telemetry messages per second over all devices,
	// spread evenly. Zero sends no telemetry.
	Rate float64
	// Duration is how long the fleet runs after the connect phase. Zero:
	// until Stop or the context ends.
	Duration time.Duration
	// Idle holds the sessions without telemetry (session-count benchmarks).
	Idle bool
	// QoS of telemetry, 0 or 1.
	QoS byte
	// PayloadBytes is the approximate size of a telemetry payload.
	PayloadBytes int
	// Payload, when set, makes the telemetry payloads instead of the
	// filler of PayloadBytes: it appends device's (an index into the
	// fleet's devices) message number seq at now to b and returns it. It
	// is called concurrently and must not block.
	Payload func(b []byte, device int, seq uint64, now time.Time) []byte
	// Inventory, when set, is the inventory device (an index) publishes
	// on each connection instead of the default, which declares the echo
	// function. Whatever functions it declares, a command is answered
	// with {"echo": args}.
	Inventory func(device int) []byte
	// Inflight is the per-device window of unacknowledged QoS 1 telemetry.
	Inflight int

	// ConnectRate is the number of connection attempts per second.
	ConnectRate float64
	// ConnectConcurrency bounds connection attempts in progress.
	ConnectConcurrency int
	// EnrollConcurrency bounds enrollment requests in progress.
	EnrollConcurrency int
	// ConnectTimeout bounds dial + TLS handshake + CONNACK.
	ConnectTimeout time.Duration
	// Keepalive is the MQTT keepalive announced in CONNECT.
	Keepalive time.Duration
	// CleanSession is the CONNECT flag (the contract's devices use false).
	CleanSession bool
	// Reconnect re-opens sessions lost during the run, with backoff. Auth
	// refusals (CONNACK 2, 4, 5) are never retried.
	Reconnect bool

	// AnswerCommands subscribes to strata/<id>/cmd/+ and answers each job
	// with {"status":"succeeded","result":{"echo": args}}.
	AnswerCommands bool
	// OnCommand, when set, is called for every command received, on the
	// connection's reader goroutine: it must not block.
	OnCommand func(Command)

	// Pretend installs (install.go): TrustedKeys, when set, verify the
	// signature of an install's release (else only its form is checked);
	// InstallOS and InstallArch are the platform whose artifact devices
	// pick (default linux/amd64; they prefer a deb); at most
	// InstallConcurrency downloads run at once over the fleet (default
	// 64); InstallDownloader sets their attempts, backoff and
	// interruption (API and Client are the fleet's).
	TrustedKeys        []ed25519.PublicKey
	InstallOS          string
	InstallArch        string
	InstallConcurrency int
	InstallDownloader  Downloader

	// ReportInterval is the period of Progress calls; zero disables them.
	ReportInterval time.Duration
	// Progress receives a snapshot every ReportInterval.
	Progress func(Report)
	// Logger receives warnings (first error of each kind). Nil: discarded.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of every field; callers set Devices
// and a credentials source.
func DefaultConfig() Config {
	return Config{
		IDPrefix:           "dev",
		QoS:                1,
		PayloadBytes:       100,
		Inflight:           1,
		ConnectRate:        2000,
		ConnectConcurrency: 512,
		EnrollConcurrency:  32,
		ConnectTimeout:     15 * time.Second,
		Keepalive:          60 * time.Second,
		Reconnect:          true,
		AnswerCommands:     true,
		InstallOS:          "linux",
		InstallArch:        "amd64",
		InstallConcurrency: 64,
	}
}

// maxPayloadBytes is the node's default mqtt.max_payload_bytes.
const maxPayloadBytes = 256 << 10

// ErrInvalidConfig is wrapped by Validate's errors.
var ErrInvalidConfig = errors.New("invalid simulator config")

// Validate checks the config; it does not read files.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Devices <= 0:
		return bad("devices must be positive")
	case c.QoS > 1:
		return bad("qos must be 0 or 1")
	case c.Rate < 0 || c.ConnectRate <= 0:
		return bad("rates must be positive")
	case c.Duration < 0:
		return bad("duration must not be negative")
	case c.PayloadBytes < 0 || c.PayloadBytes > maxPayloadBytes:
		return bad("payload bytes must be within 0..%d", maxPayloadBytes)
	case c.Inflight < 1 || c.Inflight > 65000:
		return bad("inflight must be within 1..65000")
	case c.ConnectConcurrency < 1 || c.EnrollConcurrency < 1:
		return bad("concurrency must be positive")
	case c.ConnectTimeout <= 0:
		return bad("connect timeout must be positive")
	case c.Keepalive < time.Second || c.Keepalive > 65535*time.Second:
		return bad("keepalive must be within 1s..65535s")
	case c.ReportInterval < 0:
		return bad("report interval must not be negative")
	case c.IDPrefix == "":
		return bad("id prefix must not be empty")
	case c.InstallConcurrency < 0:
		return bad("install concurrency must not be negative")
	}
	if c.InstallOS == "" {
		c.InstallOS = "linux"
	}
	if c.InstallArch == "" {
		c.InstallArch = "amd64"
	}
	if c.MQTTAddr != "" {
		if _, _, err := net.SplitHostPort(c.MQTTAddr); err != nil {
			return bad("mqtt address: %v", err)
		}
	}
	for _, a := range c.SourceAddrs {
		if !a.IsValid() {
			return bad("invalid source address")
		}
	}
	if c.Anonymous {
		if c.MQTTAddr == "" {
			return bad("anonymous mode needs an MQTT address")
		}
		return nil
	}
	if c.API != "" {
		u, err := url.Parse(c.API)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return bad("api must be an http(s)://HOST:PORT URL")
		}
	}
	if c.EnrollToken != "" && c.API == "" {
		return bad("enrollment needs both an API URL and a token")
	}
	if len(c.Credentials) == 0 && c.CredentialsFile == "" && c.EnrollToken == "" {
		return bad("no credentials: give an enrollment token, a credentials file, or anonymous mode")
	}
	return nil
}
