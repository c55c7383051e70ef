package history

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	points      prometheus.Counter
	dropped     prometheus.Counter
	chunks      prometheus.Counter
	bytes       prometheus.Counter
	series      prometheus.Gauge
	stored      prometheus.Gauge
	compacts    prometheus.Counter
	aggregated  prometheus.Counter
	deleted     prometheus.Counter
	gaps        prometheus.Counter
	gapEntries  prometheus.Counter
	undecodable prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_points_ingested_total", Help: "Samples of numeric and boolean variables added to history.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_points_dropped_total", Help: "Samples not added: not newer than the series' newest (out of order, or replayed and already stored), or older than the raw retention.",
		}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_chunks_flushed_total", Help: "Series flushes: raw chunk records written (a head is rewritten at each flush until full).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_flushed_bytes_total", Help: "Bytes of raw chunk records written by flushes.",
		}),
		stored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_history_stored_bytes", Help: "Bytes of the chunk and aggregate records history keeps (kinds, keys and values), as of the last flush; kept with the cursor across restarts.",
		}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_history_series", Help: "Series known to history.",
		}),
		compacts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_compaction_runs_total", Help: "Compaction rounds run.",
		}),
		aggregated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_compacted_records_total", Help: "Raw chunks and 1-minute blocks turned into aggregates of the next tier.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_expired_records_total", Help: "Records deleted past the last retention.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_replay_gaps_total", Help: "Times the change log was compacted past the history cursor (samples lost).",
		}),
		gapEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_replay_gap_entries_total", Help: "Change-log entries history could not read because they were compacted first.",
		}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_history_undecodable_entries_total", Help: "Change-log entries history skipped because it could not decode them (logged).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.points, m.dropped, m.chunks, m.bytes, m.stored, m.series, m.compacts, m.aggregated, m.deleted, m.gaps, m.gapEntries, m.undecodable} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
