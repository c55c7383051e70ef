package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/strata-dm/strata/model"
)

// The fleet: devices /devices/d0000000... with a site label (plant-N)
// and inventory variables as probes/mqtt stores them.
var (
	oses  = []weighted{{"linux", 70}, {"windows", 20}, {"darwin", 10}}
	archs = []weighted{{"amd64", 60}, {"arm64", 30}, {"armv7", 10}}
)

type weighted struct {
	v string
	w int
}

func pick(r *rand.Rand, ws []weighted) string {
	n := r.IntN(100)
	for _, w := range ws {
		if n < w.w {
			return w.v
		}
		n -= w.w
	}
	return ws[len(ws)-1].v
}

var at = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func raw(v any) model.Variable {
	b, _ := json.Marshal(v)
	x, err := model.NewVariable(b, at)
	if err != nil {
		panic(err)
	}
	return x
}

func hostname(i int) string { return fmt.Sprintf("host-%07d", i) }

// device is device i's context.
func device(i, sites int) *model.Context {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	return &model.Context{
		Path:   model.Path(fmt.Sprintf("/devices/d%07d", i)),
		Type:   "device",
		Tenant: []string{"acme", "globex"}[i%2],
		Labels: map[string]string{"site": fmt.Sprintf("plant-%d", r.IntN(sites))},
		Variables: map[string]model.Variable{
			"os":       raw(pick(r, oses)),
			"arch":     raw(pick(r, archs)),
			"hostname": raw(hostname(i)),
			"temp":     raw(15 + r.Float64()*30),
			"online":   raw(r.IntN(10) != 0),
		},
		Created: at, Updated: at, Version: 1,
	}
}

// load writes the devices in chunks, the next chunk built while the last
// is written.
func load(write func([]*model.Context) error, devices, sites int) error {
	const chunk = 20_000
	chunks := make(chan []*model.Context, 2)
	done := make(chan struct{})
	go func() {
		defer close(chunks)
		for start := 0; start < devices; start += chunk {
			cs := make([]*model.Context, 0, chunk)
			for i := start; i < min(start+chunk, devices); i++ {
				cs = append(cs, device(i, sites))
			}
			select {
			case chunks <- cs:
			case <-done:
				return
			}
		}
	}()
	defer func() {
		close(done)
		for range chunks { // wait for the producer to stop
		}
	}()
	for cs := range chunks {
		if err := write(cs); err != nil {
			return err
		}
	}
	return nil
}

// filter is one query of the Devices screen: its kind and the line typed
// in the screen's "labels and variables" field (type=device, subtree /,
// the screen's defaults, are left as they are).
type filter struct {
	kind, line string
}

// The filter kinds, in the order each round runs them. Consecutive
// queries always differ: the screen does not read a query again that is
// the one it shows.
var kinds = []string{"site", "site+os", "hostname", "none"}

// filterFor is round r's query of kind.
func filterFor(kind string, r *rand.Rand, sites, devices int) filter {
	switch kind {
	case "site":
		return filter{kind, fmt.Sprintf("site=plant-%d", r.IntN(sites))}
	case "site+os":
		return filter{kind, fmt.Sprintf("site=plant-%d var.os=%s", r.IntN(sites), pick(r, oses[1:]))}
	case "hostname":
		return filter{kind, "var.hostname=" + hostname(r.IntN(devices))}
	default:
		return filter{kind, ""}
	}
}
