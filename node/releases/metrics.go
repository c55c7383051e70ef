package releases

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploaded    prometheus.Counter
	served      prometheus.Counter
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
		objects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_objects_stored", Help: "Objects in the node's object store.",
		}),
		objectBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_objects_stored_bytes", Help: "Bytes of the objects in the node's object store.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.uploaded, m.served, m.objects, m.objectBytes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
