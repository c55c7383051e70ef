package releases

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploaded    prometheus.Counter
	served      prometheus.Counter
	deviceBytes prometheus.Counter
	refused     *prometheus.CounterVec
	objects     prometheus.Gauge
	objectBytes prometheus.Gauge
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
	}
	for _, r := range []string{RefusedCredentials, RefusedRateLimited, RefusedNotFound} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.uploaded, m.served, m.deviceBytes, m.refused, m.objects, m.objectBytes} {
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
