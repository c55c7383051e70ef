package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dustin/go-humanize"

	"github.com/strata-dm/strata/model"
)

// validate checks the federation section; every message names its key.
func (f *Federation) validate() error {
	if err := validAddr(f.Addr, true); err != nil {
		return fmt.Errorf("federation.addr: %w", err)
	}
	seen := map[string]bool{}
	for i, u := range f.Upstreams {
		key := fmt.Sprintf("federation.upstreams[%d]", i)
		if err := ValidUpstreamAddress(u.Address); err != nil {
			return fmt.Errorf("%s.address: %w", key, err)
		}
		if seen[u.Address] {
			return fmt.Errorf("%s.address: %s is listed twice", key, u.Address)
		}
		seen[u.Address] = true
		for j, r := range u.Replicas {
			if err := ValidUpstreamAddress(r); err != nil {
				return fmt.Errorf("%s.replicas[%d]: %w", key, j, err)
			}
			if r == u.Address || slices.Contains(u.Replicas[:j], r) {
				return fmt.Errorf("%s.replicas[%d]: %s is listed twice", key, j, r)
			}
		}
		for j, p := range u.Publish {
			if err := validSubtree(p); err != nil {
				return fmt.Errorf("%s.publish[%d]: %w", key, j, err)
			}
		}
		if _, err := u.BandwidthBytes(); err != nil {
			return fmt.Errorf("%s.bandwidth: %w", key, err)
		}
		if _, err := u.TransferWindows(); err != nil {
			return fmt.Errorf("%s.windows: %w", key, err)
		}
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"federation.keepalive", f.KeepAlive},
		{"federation.idle_timeout", f.IdleTimeout},
		{"federation.cert_validity", f.CertValidity},
	} {
		if d.d <= 0 {
			return fmt.Errorf("%s: %v must be positive", d.key, d.d.D())
		}
	}
	if f.KeepAlive >= f.IdleTimeout {
		return fmt.Errorf("federation.keepalive (%v) must be below federation.idle_timeout (%v)", f.KeepAlive.D(), f.IdleTimeout.D())
	}
	if f.LogBudget < 1 {
		return errors.New("federation.log_budget must be at least 1")
	}
	return nil
}

// ValidUpstreamAddress checks a consumer's address: HOST:PORT with a host
// and a port number (an upstream is dialled, so no wildcard host).
func ValidUpstreamAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q: no host", s)
	}
	if !utf8.ValidString(host) || strings.IndexFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("%q: not a host name or address", s)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: %s is not an address to dial", s, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

// validSubtree accepts a published subtree: a canonical context path
// ("/devices", not "devices/" nor "/a//b").
func validSubtree(s string) error {
	p, err := model.ParsePath(s)
	if err != nil {
		return err
	}
	if string(p) != s {
		return fmt.Errorf("%q: write it as %s", s, p)
	}
	return nil
}

// PublishPaths returns u's published subtrees as paths (validated by
// Validate).
func (u Upstream) PublishPaths() []model.Path {
	out := make([]model.Path, 0, len(u.Publish))
	for _, p := range u.Publish {
		out = append(out, model.Path(p))
	}
	return out
}

// BandwidthBytes returns u.Bandwidth in bytes per second (0: no bound).
func (u Upstream) BandwidthBytes() (int64, error) {
	if u.Bandwidth == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(u.Bandwidth)
	if err != nil || n < 1024 || n > 1<<40 {
		return 0, fmt.Errorf("%q: want bytes per second such as 10MB or 512KiB, at least 1KiB", u.Bandwidth)
	}
	return int64(n), nil
}

// Window is a daily time range: offsets from midnight, To before From
// spanning midnight.
type Window struct{ From, To time.Duration }

// TransferWindows returns u.Windows parsed.
func (u Upstream) TransferWindows() ([]Window, error) {
	var out []Window
	for _, w := range u.Windows {
		from, to, ok := strings.Cut(w, "-")
		f, ferr := clockTime(from)
		t, terr := clockTime(to)
		if !ok || ferr != nil || terr != nil || f == t {
			return nil, fmt.Errorf("%q: want HH:MM-HH:MM, two different times of day", w)
		}
		out = append(out, Window{From: f, To: t})
	}
	return out, nil
}

func clockTime(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}
