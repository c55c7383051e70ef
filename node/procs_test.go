package node

import (
	"testing"

	"github.com/strata-dm/strata/node/config"
)

func TestProcs(t *testing.T) {
	for _, tc := range []struct {
		slots, cores      int
		wantProcs, wantSl int
	}{
		{0, 2, 3, 1},   // default: half the cores, at least one, beyond the cores
		{0, 1, 2, 1},   //
		{0, 8, 12, 4},  //
		{3, 8, 11, 3},  // explicit
		{-1, 8, 8, -1}, // unbounded ingest: no Ps added
		{0, 0, 2, 1},   // nonsense cores count as one
	} {
		procs, slots := Procs(config.MQTT{IngestSlots: tc.slots}, tc.cores)
		if procs != tc.wantProcs || slots != tc.wantSl {
			t.Errorf("ingest_slots %d on %d cores: GOMAXPROCS %d, slots %d; want %d, %d", tc.slots, tc.cores, procs, slots, tc.wantProcs, tc.wantSl)
		}
	}
}
