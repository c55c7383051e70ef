package releases

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploaded    prometheus.Counter
	served      prometheus.Counter
	deviceBytes prometheus.Counter
	refused     *prometheus.CounterVec
	objects     prometheus.Gauge
	objectBytes prometheus.Gauge
	// The cache (cache.go).
	fetched   prometheus.Counter
	peerBytes prometheus.Counter
	fetches   *prometheus.CounterVec
	evicted   prometheus.Counter
	budget    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_uploaded_bytes_total", Help: "Artifact bytes received by uploads.",
		}),
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_served_bytes_total", Help: "Artifact bytes sent to downloads.",
		}),
		deviceBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_device_served_bytes_total", Help: "Artifact bytes sent to devices' downloads (also in strata_software_served_bytes_total).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_software_device_downloads_refused_total",
			Help: "Device downloads refused, by reason (credentials: missing, wrong or revoked; rate_limited; not_found: no release the device may see names the artifact, or it is not stored).",
		}, []string{"reason"}),
		objects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_objects_stored", Help: "Objects in the node's object store.",
		}),
		objectBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_objects_stored_bytes", Help: "Bytes of the objects in the node's object store.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_fetched_bytes_total", Help: "Artifact bytes fetched from the tier above (the cache's misses).",
		}),
		peerBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_peer_served_bytes_total", Help: "Artifact bytes sent to the tiers below (also in strata_software_served_bytes_total).",
		}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_software_fetches_total", Help: "Artifact fetches from the tier above, by outcome (fetched; failed after retries; corrupt: the bytes did not have the manifest's SHA-256 and were fetched again).",
		}, []string{"outcome"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_software_cache_evictions_total", Help: "Fetched artifacts removed from the cache to keep it within software.cache_budget.",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_software_cache_budget_bytes", Help: "The cache's budget for artifacts fetched from above (0: none).",
		}),
	}
	for _, o := range []string{"fetched", "failed", "corrupt"} {
		m.fetches.WithLabelValues(o)
	}
	for _, r := range []string{RefusedCredentials, RefusedRateLimited, RefusedNotFound} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.uploaded, m.served, m.deviceBytes, m.refused, m.objects, m.objectBytes,
			m.fetched, m.peerBytes, m.fetches, m.evicted, m.budget} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Reasons of refused device downloads (CountDeviceRefusal).
const (
	RefusedCredentials = "credentials"
	RefusedRateLimited = "rate_limited"
	RefusedNotFound    = "not_found"
)
