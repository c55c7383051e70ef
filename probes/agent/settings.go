package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/internal/atomicfile"
)

// Settings are the agent parameters an operator may change at run time with
// the set-config function. They take effect at once.
type Settings struct {
	TelemetryInterval time.Duration
	InventoryInterval time.Duration
}

// storedConfig is DIR/config.json: the keys set by set-config, as Go
// duration strings. A key absent there keeps its command-line value.
type storedConfig struct {
	TelemetryInterval string `json:"telemetry_interval,omitempty"`
	InventoryInterval string `json:"inventory_interval,omitempty"`
}

// configKey is one key set-config accepts, with its bounds.
type configKey struct {
	name     string
	min, max time.Duration
	field    func(*storedConfig) *string
	apply    func(*Settings, time.Duration)
}

// configKeys is the allow-list of set-config; anything else is refused.
var configKeys = []configKey{
	{"telemetry_interval", time.Second, 24 * time.Hour,
		func(c *storedConfig) *string { return &c.TelemetryInterval },
		func(s *Settings, d time.Duration) { s.TelemetryInterval = d }},
	{"inventory_interval", time.Minute, 7 * 24 * time.Hour,
		func(c *storedConfig) *string { return &c.InventoryInterval },
		func(s *Settings, d time.Duration) { s.InventoryInterval = d }},
}

// ErrConfigKey is wrapped by set-config errors about a key or its value.
var ErrConfigKey = errors.New("invalid config")

// settingsStore holds the effective settings: command-line defaults
// overridden by DIR/config.json. Readers wait on changed() to see updates.
type settingsStore struct {
	path     string
	defaults Settings

	mu      sync.Mutex
	stored  storedConfig
	current Settings
	changeC chan struct{} // closed and replaced at every change
}

func openSettings(dir string, defaults Settings) (*settingsStore, error) {
	s := &settingsStore{path: filepath.Join(dir, configFile), defaults: defaults,
		changeC: make(chan struct{})}
	data, err := os.ReadFile(s.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, err
	default:
		if err := strictUnmarshal(data, &s.stored); err != nil {
			return nil, fmt.Errorf("%s: %w", configFile, err)
		}
	}
	cur, err := s.stored.effective(defaults)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	s.current = cur
	return s, nil
}

// effective applies the stored keys over defaults.
func (c storedConfig) effective(defaults Settings) (Settings, error) {
	out := defaults
	for _, k := range configKeys {
		v := *k.field(&c)
		if v == "" {
			continue
		}
		raw, _ := json.Marshal(v)
		d, err := k.parse(raw)
		if err != nil {
			return out, err
		}
		k.apply(&out, d)
	}
	return out, nil
}

// parse accepts a Go duration string ("45s") or a number of seconds.
func (k configKey) parse(raw json.RawMessage) (time.Duration, error) {
	var d time.Duration
	var s string
	var secs float64
	switch {
	case json.Unmarshal(raw, &s) == nil:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%w: %s: %v", ErrConfigKey, k.name, err)
		}
	case json.Unmarshal(raw, &secs) == nil:
		d = time.Duration(secs * float64(time.Second))
	default:
		return 0, fmt.Errorf("%w: %s: want a duration string or a number of seconds", ErrConfigKey, k.name)
	}
	if d < k.min || d > k.max {
		return 0, fmt.Errorf("%w: %s must be between %v and %v", ErrConfigKey, k.name, k.min, k.max)
	}
	return d, nil
}

// get returns the effective settings.
func (s *settingsStore) get() Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// changed returns a channel closed at the next change.
func (s *settingsStore) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changeC
}

// set validates and stores one key, writes config.json atomically and
// returns the stored configuration.
func (s *settingsStore) set(key string, value json.RawMessage) (storedConfig, error) {
	i := slices.IndexFunc(configKeys, func(k configKey) bool { return k.name == key })
	if i < 0 {
		names := make([]string, len(configKeys))
		for i, k := range configKeys {
			names[i] = k.name
		}
		return storedConfig{}, fmt.Errorf("%w: key %q is not settable (allowed: %s)", ErrConfigKey, key, strings.Join(names, ", "))
	}
	k := configKeys[i]
	d, err := k.parse(value)
	if err != nil {
		return storedConfig{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.stored
	*k.field(&next) = d.String()
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return storedConfig{}, err
	}
	if err := atomicfile.Write(s.path, append(data, '\n'), 0o600); err != nil {
		return storedConfig{}, err
	}
	s.stored = next
	k.apply(&s.current, d)
	close(s.changeC)
	s.changeC = make(chan struct{})
	return next, nil
}
