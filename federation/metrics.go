package federation

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's counters; per-link gauges are collected from
// Peers at scrape time.
type metrics struct {
	refused *prometheus.CounterVec // connections and requests refused, by reason
	sent    *prometheus.CounterVec // entries published, by consumer
	applied *prometheus.CounterVec // entries applied to mirrors, by provider
	dropped *prometheus.CounterVec // entries a mirror refused, by provider
	// rejected counts what providers sent outside their bounds, by
	// provider and reason (see bounds.go).
	rejected *prometheus.CounterVec
	commit   *prometheus.HistogramVec // a mirror's durable commit of one batch, by provider
	// applyWait is the time a mirror waited for a device-work slot
	// (Config.Slots) before decoding and translating what a provider sent.
	applyWait prometheus.Histogram
	// fetches counts artifact fetches a consumer answered, by provider
	// and outcome; artifactBytes the artifact bytes over links, by peer
	// and the peer's direction.
	fetches       *prometheus.CounterVec
	artifactBytes *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_refused_total", Help: "Federation connections, joins and requests refused, by reason."}, []string{"reason"}),
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_entries_sent_total", Help: "Change-log entries published, by consumer."}, []string{"consumer"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_entries_applied_total", Help: "Provider entries applied to mirrors, by provider."}, []string{"provider"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_entries_refused_total", Help: "Provider entries a mirror refused or ignored, by provider."}, []string{"provider"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_entries_rejected_total",
			Help: "Entries and snapshot contexts a provider sent outside its bounds (bad path, not published, not granted, too deep, bad op), refused, by provider and reason."}, []string{"provider", "reason"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "strata_federation_mirror_commit_seconds",
			Help:    "Time a mirror takes to apply one batch of provider entries durably, by provider.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"provider"}),
		applyWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_federation_apply_wait_seconds",
			Help:    "Time a mirror waited for a device-work slot (shared with MQTT ingest, mqtt.ingest_slots) before decoding and translating a batch or snapshot chunk from a provider.",
			Buckets: []float64{0, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_artifact_fetches_total",
			Help: "Artifact fetches this node answered for its providers, by provider and outcome (served, refused, failed)."}, []string{"peer", "outcome"}),
		artifactBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_federation_artifact_bytes_total",
			Help: "Artifact bytes over links: sent to a provider (direction provider) or fetched from a consumer (direction consumer), by peer."}, []string{"peer", "direction"}),
	}
}

func (m *metrics) linkState(peer, direction, state string) {}

// Collector returns the federation's metrics for a Prometheus registry:
// the counters above and, per link, its state, lag, RTT and bytes.
func (s *Service) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Service }

var (
	descUp    = prometheus.NewDesc("strata_federation_link_up", "1 when the link is connected.", []string{"peer", "direction"}, nil)
	descLagN  = prometheus.NewDesc("strata_federation_lag_entries", "Provider log entries not yet applied by the consumer.", []string{"peer", "direction"}, nil)
	descLagS  = prometheus.NewDesc("strata_federation_lag_seconds", "Time since the mirror was last caught up, while it is behind.", []string{"peer", "direction"}, nil)
	descRTT   = prometheus.NewDesc("strata_federation_rtt_seconds", "Smoothed round-trip time of the link.", []string{"peer", "direction"}, nil)
	descSent  = prometheus.NewDesc("strata_federation_bytes_sent", "Bytes sent on the link's current connection.", []string{"peer", "direction"}, nil)
	descRecv  = prometheus.NewDesc("strata_federation_bytes_received", "Bytes received on the link's current connection.", []string{"peer", "direction"}, nil)
	descGaps  = prometheus.NewDesc("strata_federation_gaps", "Resynchronisations of a mount that lost history.", []string{"peer", "direction"}, nil)
	descQueue = prometheus.NewDesc("strata_federation_cursor", "Provider sequence applied (provider links) or acknowledged (consumer links).", []string{"peer", "direction"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.metrics.refused.Describe(ch)
	c.s.metrics.sent.Describe(ch)
	c.s.metrics.applied.Describe(ch)
	c.s.metrics.dropped.Describe(ch)
	c.s.metrics.rejected.Describe(ch)
	c.s.metrics.commit.Describe(ch)
	c.s.metrics.applyWait.Describe(ch)
	c.s.metrics.fetches.Describe(ch)
	c.s.metrics.artifactBytes.Describe(ch)
	for _, d := range []*prometheus.Desc{descUp, descLagN, descLagS, descRTT, descSent, descRecv, descGaps, descQueue} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.metrics
	m.refused.Collect(ch)
	m.sent.Collect(ch)
	m.applied.Collect(ch)
	m.dropped.Collect(ch)
	m.rejected.Collect(ch)
	m.commit.Collect(ch)
	m.applyWait.Collect(ch)
	m.fetches.Collect(ch)
	m.artifactBytes.Collect(ch)
	for _, p := range c.s.Peers() {
		name := p.Name
		if name == "" {
			name = p.Address
		}
		up := 0.0
		if p.State == "connected" {
			up = 1
		}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name, p.Direction)
		}
		g(descUp, up)
		g(descLagN, float64(p.LagEntries))
		g(descLagS, p.LagSeconds)
		g(descRTT, p.RTTMillis/1000)
		g(descSent, float64(p.BytesSent))
		g(descRecv, float64(p.BytesReceived))
		g(descGaps, float64(p.Gaps))
		g(descQueue, float64(p.Cursor))
	}
}
