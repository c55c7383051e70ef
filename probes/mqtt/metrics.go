package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connects        *prometheus.CounterVec
	messages        *prometheus.CounterVec
	stored          [topicCommand + 1]prometheus.Counter // messages by kind, resolved once
	rejected        *prometheus.CounterVec
	aclDenied       prometheus.Counter
	storeErrors     prometheus.Counter
	commandsSent    prometheus.Counter
	takeovers       prometheus.Counter
	revokedWrites   prometheus.Counter
	commandsRefused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, b *Broker) (*metrics, error) {
	m := &metrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_mqtt_connects_total", Help: "Device connection attempts by result.",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_mqtt_messages_total", Help: "Device messages stored, by topic kind.",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_mqtt_rejected_total", Help: "Device messages rejected, by reason.",
		}, []string{"reason"}),
		aclDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_acl_denied_total", Help: "Publishes and subscriptions refused by the topic ACL.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_store_errors_total", Help: "Device messages not acknowledged because the store failed.",
		}),
		commandsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_commands_sent_total", Help: "Command publications to devices (including redeliveries).",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_session_takeovers_total",
			Help: "Device sessions closed because the same device id connected again.",
		}),
		revokedWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_revoked_writes_refused_total",
			Help: "Device messages refused, not stored, because the device's credentials were revoked (or replaced) after it connected.",
		}),
		commandsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_mqtt_commands_refused_total",
			Help: "Commands not delivered because their job's tenant is not the tenant of the device's connection.",
		}),
	}
	for k := topicTelemetry; k <= topicResult; k++ {
		m.stored[k] = m.messages.WithLabelValues(kindName(k))
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.connects, m.messages, m.rejected, m.aclDenied, m.storeErrors, m.commandsSent,
		m.takeovers, m.revokedWrites, m.commandsRefused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_mqtt_sessions", Help: "Connected devices.",
		}, func() float64 { return float64(b.Connected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_mqtt_uplink_queued", Help: "Device messages decoded and waiting for the store (at most 16384; beyond, connections are not read).",
		}, func() float64 { return float64(len(b.queued)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_mqtt_deliveries_queued", Help: "Commands acknowledged by their devices and waiting to be recorded delivered (at most 4096; beyond, the acknowledging connections are not read).",
		}, func() float64 { return float64(len(b.deliveries)) }),
	}
	if b.cfg.MaxConnecting > 0 {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_mqtt_connecting", Help: "Device connections accepted and not yet connected (at most max connecting per listener; beyond, connections wait to be accepted).",
		}, func() float64 {
			b.mu.Lock()
			defer b.mu.Unlock()
			n := 0
			for _, a := range b.admissions {
				n += a.connecting()
			}
			return float64(n)
		}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_mqtt_parked", Help: "Device connections accepted and waiting, unread, for their source address's share of max connecting (at most mqtt.max_parked_per_source per source).",
		}, func() float64 {
			b.mu.Lock()
			defer b.mu.Unlock()
			n := 0
			for _, a := range b.admissions {
				n += a.parkedNow()
			}
			return float64(n)
		}))
	}
	if g := b.gate; g != nil {
		cs = append(cs, g.wait,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "strata_mqtt_ingest_slots", Help: "Ingest slots: device connections that may parse and decode messages at once (mqtt.ingest_slots).",
			}, func() float64 { return float64(g.slots.Size()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "strata_mqtt_ingest_slots_in_use", Help: "Ingest slots held by device connections.",
			}, func() float64 { return float64(g.inUse()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "strata_mqtt_ingest_waiting", Help: "Device connections with data read, waiting for an ingest slot.",
			}, func() float64 { return float64(g.slots.Waiting()) }),
		)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
