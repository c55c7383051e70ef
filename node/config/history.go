package config

import (
	"errors"
	"fmt"
	"time"
)

// History configures the time series of variables (docs/history.md).
type History struct {
	// Enabled keeps history (default true).
	Enabled bool `yaml:"enabled"`
	// Types are the context types whose numeric and boolean variables
	// keep history (default [device]); ["*"]: every type.
	Types []string `yaml:"types"`
	// Labels, when set, must all be on a context with these values.
	Labels map[string]string `yaml:"labels"`
	// FlushInterval is how often every head chunk is written with the
	// cursor (default 10m): the longest replay after a crash.
	FlushInterval Duration `yaml:"flush_interval"`
	// ChunkSamples closes a chunk at this many samples (default 1024).
	ChunkSamples int `yaml:"chunk_samples"`
	// ChunkSpan closes a chunk spanning this long (default 2h).
	ChunkSpan Duration `yaml:"chunk_span"`
	// Retention of the tiers: raw samples (default 168h), 1-minute
	// aggregates (default 2160h), 1-hour aggregates (default 17520h).
	RawRetention    Duration `yaml:"raw_retention"`
	MinuteRetention Duration `yaml:"minute_retention"`
	HourRetention   Duration `yaml:"hour_retention"`
	// CompactInterval is how often a compaction round runs (default
	// 1m); CompactBudget bounds the records one round reads (default
	// 2000).
	CompactInterval Duration `yaml:"compact_interval"`
	CompactBudget   int      `yaml:"compact_budget"`
	// MaxPoints bounds the points of one answer (default 100000).
	MaxPoints int `yaml:"max_points"`
}

func defaultHistory() History {
	return History{
		Enabled: true, Types: []string{"device"},
		FlushInterval: Duration(10 * time.Minute), ChunkSamples: 1024, ChunkSpan: Duration(2 * time.Hour),
		RawRetention: Duration(7 * 24 * time.Hour), MinuteRetention: Duration(90 * 24 * time.Hour),
		HourRetention:   Duration(2 * 365 * 24 * time.Hour),
		CompactInterval: Duration(time.Minute), CompactBudget: 2000, MaxPoints: 100_000,
	}
}

func (h *History) validate() error {
	switch {
	case h.FlushInterval <= 0 || h.CompactInterval <= 0 || h.ChunkSpan <= 0:
		return errors.New("history: flush_interval, compact_interval and chunk_span must be positive")
	case h.ChunkSamples < 2 || h.ChunkSamples > 8192:
		return errors.New("history.chunk_samples: must be in 2..8192")
	case h.RawRetention < 2*h.ChunkSpan:
		return fmt.Errorf("history.raw_retention (%s) must be at least twice chunk_span (%s)", h.RawRetention.D(), h.ChunkSpan.D())
	case h.MinuteRetention.D() < h.RawRetention.D()+24*time.Hour:
		return errors.New("history.minute_retention must exceed raw_retention by 24h at least")
	case h.HourRetention.D() < h.MinuteRetention.D()+30*24*time.Hour:
		return errors.New("history.hour_retention must exceed minute_retention by 720h at least")
	case h.CompactBudget < 10:
		return errors.New("history.compact_budget: must be at least 10")
	case h.MaxPoints < 100 || h.MaxPoints > 1_000_000:
		return errors.New("history.max_points: must be in 100..1000000")
	}
	for _, t := range h.Types {
		if t == "" {
			return errors.New("history.types: an empty type")
		}
	}
	return nil
}

// AllTypes reports whether history.types selects every type.
func (h *History) AllTypes() bool {
	for _, t := range h.Types {
		if t == "*" {
			return true
		}
	}
	return len(h.Types) == 0
}
