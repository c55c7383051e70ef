package node

import (
	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/probes/mqtt"
)

// Procs is how a node process on cores cores (Go's default GOMAXPROCS:
// the cores available to it) should set GOMAXPROCS, and the number of
// ingest slots its device endpoint gets (mqtt.ingest_slots resolved: by
// default half of cores, at least one; negative: unbounded).
//
// Device ingest may keep its slots' worth of Ps busy all the time; so
// that it never takes a P the operator API would need, the process runs
// with that many Ps beyond its cores. The kernel then shares the cores
// among all of them, and a thread woken by an API request runs at once
// (it slept; the ingest threads did not) instead of its request waiting
// in the Go run queue behind device messages. Unbounded ingest adds no
// Ps. The process's owner applies it (strata serve does); a process
// that runs several nodes, or tests, should not.
func Procs(cfg config.MQTT, cores int) (procs, slots int) {
	cores = max(1, cores)
	slots = cfg.IngestSlots
	if slots == 0 {
		slots = max(1, cores/2)
	}
	if slots < 0 {
		return cores, slots
	}
	return cores + slots, slots
}

// deviceWork is the node's device-work limiter: mqtt.ingest_slots slots
// (0: mqtt.DefaultIngestSlots, half of GOMAXPROCS; strata serve resolves
// it against the cores first, see Procs), shared by the MQTT ingest and
// the federation's mirrors; nil (unbounded) when negative.
func deviceWork(cfg config.MQTT) *slots.Limiter {
	n := cfg.IngestSlots
	if n == 0 {
		n = mqtt.DefaultIngestSlots()
	}
	return slots.New(n)
}
