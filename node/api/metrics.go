package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the API's own Prometheus metrics. Labels are route patterns
// (bounded by the route table), never raw paths.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	refused  *prometheus.CounterVec
	// feedShort counts event feed pages answered with fewer events than
	// asked and a cursor: the store's scan bound stopped them.
	feedShort prometheus.Counter
}

// newMetrics builds the API's collectors and registers them on reg (none
// when reg is nil). streams, conns and unauth report the open change
// streams, open connections and unauthenticated requests in flight.
func newMetrics(reg prometheus.Registerer, version string, streams, conns, unauth func() int) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_api_requests_total",
			Help: "API requests answered, by route pattern and HTTP status.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_api_request_duration_seconds",
			Help:    "Time to answer API requests (change streams: their lifetime), by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5 ms .. ~131 s
		}, []string{"route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_api_refused_total",
			Help: "Connections and requests refused by a limit on slow or numerous clients, by reason " +
				"(connections, connections_per_address, unauthenticated, unauthenticated_per_address, body_timeout, streams, streams_per_user).",
		}, []string{"reason"}),
		feedShort: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_api_event_feed_short_pages_total",
			Help: "Event feed pages answered short (fewer events than asked, with a next cursor) because the store read its bound of index entries: feeds of small subtrees among many warnings elsewhere.",
		}),
	}
	for _, r := range []string{refusedConns, refusedConnsPerAddr, refusedUnauth, refusedUnauthPerAddr,
		refusedBodyTimeout, refusedStreams, refusedStreamsPerUser} {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_api_sse_streams",
		Help: "Open live change streams.",
	}, func() float64 { return float64(streams()) })
	openConns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_api_connections",
		Help: "Open connections to the API listener.",
	}, func() float64 { return float64(conns()) })
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_api_unauthenticated_in_flight",
		Help: "Requests in flight on the routes that take no token (login, enrollment).",
	}, func() float64 { return float64(unauth()) })
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "strata_build_info",
		Help:        "The node's build version, as a label; always 1.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	cs := []prometheus.Collector{m.requests, m.duration, m.refused, m.feedShort, gauge, openConns, inFlight, info}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) refuse(reason string) { m.refused.WithLabelValues(reason).Inc() }

func (m *metrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// metricsHandler serves cfg.Gatherer in the Prometheus text format.
func (s *Server) metricsHandler() http.Handler {
	g := s.cfg.Gatherer
	if g == nil {
		g = prometheus.NewRegistry()
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogPrinter{s}})
}

// slogPrinter adapts the server's logger to promhttp's error log.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Warn("metrics", "err", v) }
