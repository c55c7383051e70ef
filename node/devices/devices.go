// Package devices is a node's device registry: enrollment tokens, the
// devices enrolled with them, their MQTT credentials, and revocation.
//
// Invariants the package keeps (and its tests try to break):
//
//   - Secrets are never stored: enrollment tokens and device secrets as
//     SHA-256 of the secret string (256 bits of entropy each), and never
//     appear in Device, EnrollToken, logs or errors.
//   - A device id is derived from the tenant and the hardware id, so the
//     same hardware enrolling again in the same tenant keeps its id; its
//     previous secret and certificate stop working at once.
//   - A device's context /devices/<id> is created by enrollment only,
//     with the tenant of the enrollment token, and is its device's own:
//     type "device" and the device's tenant. Enrollment (and a device's
//     authentication) never writes into a context that is not its
//     device's own: it takes it back whole (OpPut with Replace), so that
//     nothing another tenant put there survives or receives the
//     device's data. Owner tells callers whether a path is a device's own
//     context.
//   - An enrollment token binds tenant and group: the device gets exactly
//     those, whatever it sends. A token is refused once expired, revoked
//     or used up; uses are counted in the same atomic write that records
//     the device.
//   - Tenant isolation: a non-system principal never sees or changes
//     another tenant's devices or tokens; those answer exactly like
//     missing ones.
//   - A revoked device authenticates no more, and the revocation hook
//     disconnects it. It cannot enroll again either, until an operator
//     allows it (AllowEnroll).
//   - Shared devices (no tenant) are revoked and allowed to enroll again
//     by system users only.
//   - Failed authentications and enrollments are limited per identity
//     (device id, enrollment token id) and address, each kind by its
//     own limiter, so that a device failing again and again does not
//     lock out the others behind its address.
//
// Storage is node-local records (kinds "device" and "enroll.token", JSON)
// plus the device's context /devices/<id>, written together in one Apply.
// Writes are serialised by one mutex per Service: a cluster sends them
// through its leader.
package devices

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
)

// Record kinds.
const (
	KindDevice      = "device"       // key: device id
	KindEnrollToken = "enroll.token" // key: token id
)

// Secret prefixes.
const (
	enrollPrefix = "se_"
	devicePrefix = "sd_"
)

// Root is where devices live in the tree.
const Root model.Path = "/devices"

// DeviceType is the type of a device's context.
const DeviceType = "device"

// Limits.
const (
	MaxHardwareIDLen = 128
	MaxGroupLen      = 64
	DefaultTokenTTL  = 7 * 24 * time.Hour
	MaxTokenTTL      = 10 * 365 * 24 * time.Hour
)

// Tree is the part of the model the registry writes through.
type Tree interface {
	Apply(ctx context.Context, muts ...model.Mutation) ([]model.Entry, error)
	Record(kind, key string) ([]byte, error)
	Records(kind string, fn func(key string, value []byte) error) error
	Get(p model.Path) (*model.Context, error)
}

// Config is what New needs.
type Config struct {
	Tree   Tree
	CA     *certs.Pair  // signs device certificates from CSRs; nil refuses CSRs
	CAPEM  []byte       // the CA devices trust, returned by Enroll
	Logger *slog.Logger // nil: discard
	Now    func() time.Time
	// AuthFailures failed authentications of one device, or enrollments
	// with one token, within AuthWindow from one source address block
	// further attempts of that identity from it until the window slides
	// (defaults 10 per minute); auth.AddrFactor times as many of any
	// identities block the address. Device authentications and
	// enrollments are counted apart.
	AuthFailures int
	AuthWindow   time.Duration
}

// Service is the registry. It is safe for concurrent use.
type Service struct {
	tree        Tree
	ca          *certs.Pair
	caPEM       []byte
	log         *slog.Logger
	now         func() time.Time
	mqttLimit   *auth.FailureLimiter // device authentications
	enrollLimit *auth.FailureLimiter // enrollments
	limited     *prometheus.CounterVec
	reclaimed   prometheus.Counter

	mu       sync.Mutex // serialises writes
	onRevoke func(id string)
}

// New returns a registry over cfg.Tree.
func New(cfg Config) (*Service, error) {
	if cfg.Tree == nil {
		return nil, errors.New("devices: Tree is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AuthFailures <= 0 {
		cfg.AuthFailures = 10
	}
	if cfg.AuthWindow <= 0 {
		cfg.AuthWindow = time.Minute
	}
	return &Service{
		tree:        cfg.Tree,
		ca:          cfg.CA,
		caPEM:       cfg.CAPEM,
		log:         cfg.Logger.With("component", "devices"),
		now:         cfg.Now,
		mqttLimit:   auth.NewFailureLimiter(cfg.AuthFailures, cfg.AuthWindow),
		enrollLimit: auth.NewFailureLimiter(cfg.AuthFailures, cfg.AuthWindow),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_device_auth_limited_total",
			Help: "Device authentications (kind mqtt) and enrollments (kind enroll) refused by the failure limit, by the limit that refused them (identity: that device or token from that address; address: the whole address).",
		}, []string{"kind", "limit"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_device_contexts_reclaimed_total",
			Help: "Device contexts found not to be their device's own (created or changed by someone else) and taken back whole by enrollment or authentication.",
		}),
	}, nil
}

// Collector is the registry's metrics, for the node to register.
func (s *Service) Collector() prometheus.Collector { return collectors{s.limited, s.reclaimed} }

type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// check asks limiter l whether identity may try from remoteAddr, and
// counts a refusal as kind.
func (s *Service) check(l *auth.FailureLimiter, kind, identity, remoteAddr string) error {
	limit, err := l.Check(identity, remoteAddr)
	if err != nil {
		s.limited.WithLabelValues(kind, string(limit)).Inc()
	}
	return err
}

// OnRevoke sets the function called (after the revocation is durable)
// with the id of a device whose credentials stopped working: revoked, or
// enrolled again. The node uses it to disconnect the device.
func (s *Service) OnRevoke(fn func(id string)) {
	s.mu.Lock()
	s.onRevoke = fn
	s.mu.Unlock()
}

func (s *Service) clock() time.Time { return s.now().UTC().Round(0) }

// Device is an enrolled device as operators see it.
type Device struct {
	ID         string     `json:"id"`
	Path       model.Path `json:"path"`
	Tenant     string     `json:"tenant"`
	Group      string     `json:"group"`
	HardwareID string     `json:"hardware_id"`
	Enrolled   time.Time  `json:"enrolled"`
	Token      string     `json:"enroll_token"` // id of the token it enrolled with
	CertSerial string     `json:"cert_serial,omitempty"`
	Revoked    bool       `json:"revoked"`
	RevokedAt  time.Time  `json:"revoked_at,omitzero"`
	// EnrollAllowed is set on a revoked device an operator allowed to
	// enroll again (AllowEnroll); enrolling clears it and the revocation.
	EnrollAllowed bool `json:"enroll_allowed,omitempty"`
}

// deviceRecord is a device as stored.
type deviceRecord struct {
	Device
	SecretHash string `json:"secret_hash,omitempty"`
}

// PathOf is the context path of device id.
func PathOf(id string) model.Path { return Root + "/" + model.Path(id) }

// IDOf returns the device id of a device context path (/devices/<id>).
func IDOf(p model.Path) (string, bool) {
	if p.Parent() != Root || p == Root {
		return "", false
	}
	return p.Name(), true
}

// deviceID derives a device's id from its tenant and hardware id: "d-"
// and 80 bits of SHA-256 in lower-case base32, a valid path segment and
// MQTT topic level.
func deviceID(tenant, hardwareID string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + hardwareID))
	return "d-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10]))
}

// validDeviceID reports whether id could be a device id, so no odd string
// reaches the store as a key.
func validDeviceID(id string) bool {
	return len(id) > 0 && len(id) <= model.MaxNameLen && model.ValidateName(id) == nil &&
		!strings.ContainsAny(id, "+#/$")
}

func (s *Service) load(id string) (*deviceRecord, error) {
	if !validDeviceID(id) {
		return nil, deviceNotFound(id)
	}
	b, err := s.tree.Record(KindDevice, id)
	if errors.Is(err, model.ErrNotFound) {
		return nil, deviceNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("devices: read device: %w", err)
	}
	d := new(deviceRecord)
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("devices: device %s: %w", id, err)
	}
	return d, nil
}

func putDevice(d *deviceRecord) model.Mutation {
	b, _ := json.Marshal(d)
	return model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindDevice, Key: d.ID, Value: b}}
}

func deviceNotFound(id string) error { return fmt.Errorf("%w: device %q", model.ErrNotFound, id) }

// ErrBadCredentials is the one answer to a failed device authentication,
// whatever failed (unknown device, wrong secret, revoked, wrong certificate).
var ErrBadCredentials = fmt.Errorf("%w: bad device credentials", auth.ErrUnauthorized)

// Authenticate checks a device's secret. remoteAddr keys the rate limit of
// failures (a *auth.RateLimitError once exceeded).
func (s *Service) Authenticate(id, secret, remoteAddr string) (Device, error) {
	if err := s.check(s.mqttLimit, "mqtt", id, remoteAddr); err != nil {
		return Device{}, err
	}
	d, err := s.load(id)
	if err != nil || d.Revoked || d.SecretHash == "" ||
		subtle.ConstantTimeCompare([]byte(auth.SecretHash(secret)), []byte(d.SecretHash)) != 1 {
		s.mqttLimit.Fail(id, remoteAddr)
		if err != nil && !errors.Is(err, model.ErrNotFound) {
			return Device{}, err
		}
		return Device{}, ErrBadCredentials
	}
	return d.Device, s.ensureOwn(d)
}

// AuthenticateSerial checks a device that presented a client certificate
// the TLS layer already verified against the node CA, with the device id
// as its common name and the given serial number (decimal): it must be
// the certificate issued at the device's last enrollment.
func (s *Service) AuthenticateSerial(id, serial, remoteAddr string) (Device, error) {
	if err := s.check(s.mqttLimit, "mqtt", id, remoteAddr); err != nil {
		return Device{}, err
	}
	d, err := s.load(id)
	if err != nil || d.Revoked || d.CertSerial == "" || d.CertSerial != serial {
		s.mqttLimit.Fail(id, remoteAddr)
		if err != nil && !errors.Is(err, model.ErrNotFound) {
			return Device{}, err
		}
		return Device{}, ErrBadCredentials
	}
	return d.Device, s.ensureOwn(d)
}

// canSee reports whether p may see device d at all (tenant and viewer
// grant on its path).
func canSee(p *auth.Principal, d *Device) bool {
	return p.SeesTenant(d.Tenant) && p.Can(auth.RoleViewer, d.Path)
}

// Get returns a device p may see.
func (s *Service) Get(p *auth.Principal, id string) (Device, error) {
	d, err := s.load(id)
	if err != nil {
		return Device{}, err
	}
	if !canSee(p, &d.Device) {
		return Device{}, deviceNotFound(id)
	}
	return d.Device, nil
}

// List returns the devices p may see, by id.
func (s *Service) List(p *auth.Principal) ([]Device, error) {
	var out []Device
	err := s.tree.Records(KindDevice, func(_ string, b []byte) error {
		var d deviceRecord
		if err := json.Unmarshal(b, &d); err != nil {
			return nil // a damaged record is skipped, not fatal to listing
		}
		if canSee(p, &d.Device) {
			out = append(out, d.Device)
		}
		return nil
	})
	return out, err
}

// Revoke revokes a device's credentials (operator on its path) and
// disconnects it. Revoking a revoked device is not an error.
func (s *Service) Revoke(ctx context.Context, p *auth.Principal, id string) (Device, error) {
	s.mu.Lock()
	d, err := s.load(id)
	if err != nil {
		s.mu.Unlock()
		return Device{}, err
	}
	if !canSee(p, &d.Device) {
		s.mu.Unlock()
		return Device{}, deviceNotFound(id)
	}
	if err := mayOperate(p, &d.Device, "revoking"); err != nil {
		s.mu.Unlock()
		return Device{}, err
	}
	if !d.Revoked || d.EnrollAllowed {
		now := s.clock()
		d.Revoked, d.RevokedAt, d.SecretHash, d.CertSerial, d.EnrollAllowed = true, now, "", "", false
		payload, _ := json.Marshal(map[string]string{"by": p.User})
		_, err = s.tree.Apply(ctx, putDevice(d), model.Mutation{
			Op: model.OpEvent, Path: d.Path,
			Event: &model.Event{Name: "revoked", Level: model.LevelWarning, Payload: payload, Time: now},
		})
		if err != nil {
			s.mu.Unlock()
			return Device{}, fmt.Errorf("devices: revoke: %w", err)
		}
		s.log.Info("device revoked", "device", id, "by", p.User)
	}
	fn := s.onRevoke
	s.mu.Unlock()
	if fn != nil {
		fn(id)
	}
	return d.Device, nil
}

// validText checks a free-text field: 1..max bytes of printable UTF-8.
func validText(what, v string, max int) error {
	if v == "" || len(v) > max || !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s must be 1..%d bytes of UTF-8", model.ErrInvalid, what, max)
	}
	if slices.ContainsFunc([]rune(v), func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: control character in %s", model.ErrInvalid, what)
	}
	return nil
}

// RevokedRecord reports whether value, a KindDevice record (as a
// replica applies it from a cluster's log), is that of a revoked device.
func RevokedRecord(value []byte) bool {
	var d struct {
		Revoked bool `json:"revoked"`
	}
	return json.Unmarshal(value, &d) == nil && d.Revoked
}
