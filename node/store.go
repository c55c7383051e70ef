package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/store"
)

// nodeStore is what the node needs of a store: the model's interface, plus
// the retention work maintain runs.
type nodeStore interface {
	model.Store
	// PruneEvents drops events beyond perContext per context or older
	// than olderThan and reports how many went.
	PruneEvents(perContext int, olderThan time.Time) (int, error)
	// CompactLog drops change-log entries beyond the newest keep and
	// reports how many went.
	CompactLog(keep uint64) (int, error)
}

// Interface guards.
var (
	_ nodeStore = (*store.Badger)(nil)
	_ nodeStore = (*store.Postgres)(nil)
)

// storeOpenTimeout bounds connecting to PostgreSQL and migrating its schema
// (which waits for other processes migrating the same database).
const storeOpenTimeout = time.Minute

// openStore opens the store cfg.Store selects (cfg is validated). On error
// the result is a nil interface, never a nil pointer inside one.
func openStore(cfg *config.Config, log *slog.Logger) (nodeStore, error) {
	switch cfg.Store.Kind {
	case config.StorePostgres:
		ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
		defer cancel()
		s, err := store.OpenPostgres(ctx, PostgresOptions(cfg, log))
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		s, err := OpenBadger(cfg, log)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// PostgresOptions are the PostgreSQL store's options from cfg's store
// section (whatever its kind: strata store migrate fills in the DSN).
func PostgresOptions(cfg *config.Config, log *slog.Logger) store.PostgresOptions {
	return store.PostgresOptions{
		DSN:                  cfg.Store.DSN,
		ReadDSNs:             cfg.Store.ReadDSNs,
		Logger:               log,
		MaxReplicaLag:        cfg.Store.MaxReplicaLag.D(),
		ReplicaCheckInterval: cfg.Store.ReplicaCheckInterval.D(),
		ReplicaReadTimeout:   cfg.Store.ReplicaReadTimeout.D(),
	}
}

// OpenBadger opens the Badger store in cfg's data_dir, creating the folder
// if need be, with cfg's encryption key and cache size. Badger locks the
// folder: it fails while another process (a running node) has it open.
func OpenBadger(cfg *config.Config, log *slog.Logger) (*store.Badger, error) {
	key, err := encryptionKey(cfg)
	if err != nil {
		return nil, err
	}
	dataDir := cfg.Path(cfg.DataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return store.OpenBadger(store.BadgerOptions{Dir: dataDir, Logger: log, EncryptionKey: key, CacheMB: cfg.Store.CacheMB})
}

// EncryptionKey returns the Badger store's encryption key from cfg's
// store section (nil: none).
func EncryptionKey(cfg *config.Config) ([]byte, error) { return encryptionKey(cfg) }

func encryptionKey(cfg *config.Config) ([]byte, error) {
	hexKey := cfg.Store.EncryptionKey
	if hexKey == "" && cfg.Store.EncryptionKeyFile != "" {
		data, err := os.ReadFile(cfg.Path(cfg.Store.EncryptionKeyFile))
		if err != nil {
			return nil, fmt.Errorf("store.encryption_key_file: %w", err)
		}
		raw := strings.TrimSpace(string(data))
		switch len(raw) {
		case 16, 24, 32:
			return []byte(raw), nil
		}
		hexKey = raw
	}
	if hexKey == "" {
		return nil, nil
	}
	key, err := hex.DecodeString(hexKey)
	if err != nil {
		return nil, fmt.Errorf("store encryption key: not hex: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("store encryption key: %d bytes, want 16, 24 or 32", len(key))
}

// replicaReporter is the optional capability of a store with read
// replicas (PostgreSQL).
type replicaReporter interface {
	ReplicaStatus() []store.ReplicaStatus
}

var _ replicaReporter = (*store.Postgres)(nil)

var (
	replicaHealthyDesc = prometheus.NewDesc("strata_store_replica_healthy",
		"1 while the read replica is in rotation, else 0.", []string{"replica"}, nil)
	replicaLagDesc = prometheus.NewDesc("strata_store_replica_lag_seconds",
		"How far the read replica was behind the primary at its last check.", []string{"replica"}, nil)
	replicaReadsDesc = prometheus.NewDesc("strata_store_replica_reads_total",
		"Reads the replica served.", []string{"replica"}, nil)
	fencedWritesDesc = prometheus.NewDesc("strata_store_fenced_writes_total",
		"Writes the PostgreSQL fence refused: another replica claimed a newer term, or this one has not claimed.", nil, nil)
	fenceEndedDesc = prometheus.NewDesc("strata_store_fence_sessions_ended_total",
		"Sessions this replica's claims of the PostgreSQL fence ended because they held it past the claim wait.", nil, nil)
	writerTermDesc = prometheus.NewDesc("strata_store_writer_term",
		"The term this replica's PostgreSQL writes carry (0: unfenced, or not claimed).", nil, nil)
)

// fenceReporter is the optional capability of a store whose writes a
// fence may refuse (PostgreSQL).
type fenceReporter interface {
	FenceStatus() store.FenceStatus
}

var _ fenceReporter = (*store.Postgres)(nil)

// replicaCollector exports each read replica's status at scrape time,
// and the fence's when the store has one.
type replicaCollector struct{ rs replicaReporter }

func (c replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaHealthyDesc
	ch <- replicaLagDesc
	ch <- replicaReadsDesc
	if _, ok := c.rs.(fenceReporter); ok {
		ch <- fencedWritesDesc
		ch <- fenceEndedDesc
		ch <- writerTermDesc
	}
}

func (c replicaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.rs.ReplicaStatus() {
		healthy := 0.0
		if st.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(replicaHealthyDesc, prometheus.GaugeValue, healthy, st.Name)
		ch <- prometheus.MustNewConstMetric(replicaLagDesc, prometheus.GaugeValue, st.Lag.Seconds(), st.Name)
		ch <- prometheus.MustNewConstMetric(replicaReadsDesc, prometheus.CounterValue, float64(st.Reads), st.Name)
	}
	if fr, ok := c.rs.(fenceReporter); ok {
		st := fr.FenceStatus()
		ch <- prometheus.MustNewConstMetric(fencedWritesDesc, prometheus.CounterValue, float64(st.Refused))
		ch <- prometheus.MustNewConstMetric(fenceEndedDesc, prometheus.CounterValue, float64(st.Ended))
		ch <- prometheus.MustNewConstMetric(writerTermDesc, prometheus.GaugeValue, float64(st.Term))
	}
}

// searchStore is the inventory search both stores offer; its query is the
// model's, as the API's is, so the store serves the API directly.
type searchStore interface {
	Search(ctx context.Context, q model.SearchQuery) (model.SearchPage, error)
}

var (
	_ searchStore  = (*store.Badger)(nil)
	_ searchStore  = (*store.Postgres)(nil)
	_ api.Searcher = searchStore(nil)
)

// feedOf returns the API's event feed backend for s, nil when s has none.
func feedOf(s nodeStore) api.EventFeed {
	if f, ok := s.(model.EventFeed); ok {
		return f
	}
	return nil
}

// searchOf returns the API's search backend for s, nil when s has none.
func searchOf(s nodeStore) api.Searcher {
	if ss, ok := s.(searchStore); ok {
		return ss
	}
	return nil
}
