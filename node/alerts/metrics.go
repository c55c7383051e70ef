package alerts

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	active      *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	evaluations prometheus.Counter
	dropped     prometheus.Counter
	rules       prometheus.Gauge
	notified    *prometheus.CounterVec
	groups      prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_alerts",
			Help: "Alerts of this node's own devices now, by state: pending, firing.",
		}, []string{"state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_alerts_transitions_total",
			Help: "Alerts of this node's devices that entered a state: pending, firing, resolved.",
		}, []string{"state"}),
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_alerts_evaluations_total",
			Help: "Evaluations of a rule on a device's change or state.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_alerts_dropped_total",
			Help: "Changes the evaluator's queue had no room for (each makes the next tick rescan every rule's devices).",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_alerts_rules",
			Help: "Alert rules of this node.",
		}),
		notified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_alerts_notifications_total",
			Help: "Notifications of alert groups, by receiver and outcome: sent, failed.",
		}, []string{"receiver", "outcome"}),
		groups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_alerts_notification_groups",
			Help: "Notification groups held by this node.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.active, m.transitions, m.evaluations, m.dropped, m.rules, m.notified, m.groups} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
