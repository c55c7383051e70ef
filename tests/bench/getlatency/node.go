package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node"
	"github.com/strata-dm/strata/tests/bench/benchproc"
)

// nodeInfo is what the node process announces once it serves.
type nodeInfo struct {
	API        string `json:"api"`
	MQTT       string `json:"mqtt"`
	Fill       string `json:"fill"`
	Contexts   int    `json:"contexts"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Slots      string `json:"slots"`
}

// runNode is the node process: it starts a node on dir (made by setup),
// fills the tree, announces its addresses and answers the bench's
// commands until its input ends, then shuts the node down.
func runNode(dir string, contexts, perSite int, mqtt, mqttTLS bool, ingestSlots int, ingestPoller string) error {
	cfg, _, _, err := setup(dir)
	if err != nil {
		return err
	}
	if mqtt {
		if mqttTLS {
			cfg.MQTT.Addr = "127.0.0.1:0"
		} else {
			cfg.MQTT.TCPAddr = "127.0.0.1:0"
		}
	}
	// As strata serve does (node.Procs): Ps for device ingest beyond the
	// cores, unless GOMAXPROCS is set (-node-gomaxprocs).
	cfg.MQTT.IngestSlots = ingestSlots
	cfg.MQTT.IngestPoller = ingestPoller
	_, slots := node.Procs(cfg.MQTT, runtime.GOMAXPROCS(0)) // what StartNode takes
	n, err := benchproc.StartNode(cfg)
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	m := n.Model()

	start := time.Now()
	if m.LastSeq() < uint64(contexts) {
		const batch = 5000
		muts := make([]model.Mutation, 0, batch)
		for i := range contexts {
			muts = append(muts, model.Mutation{Op: model.OpPut, Path: devicePath(i, perSite), Type: "device", Tenant: "acme",
				Labels:    map[string]string{"site": fmt.Sprintf("s%04d", i/perSite)},
				Variables: map[string]model.Variable{"temp": {Value: json.RawMessage(fmt.Sprint(i % 90)), Type: model.TypeNumber}, "fw": {Value: json.RawMessage(`"1.4.2"`), Type: model.TypeString}}})
			if len(muts) == batch || i == contexts-1 {
				if _, err := m.Apply(context.Background(), muts...); err != nil {
					return err
				}
				muts = muts[:0]
			}
		}
	}
	info := nodeInfo{API: n.APIAddr(), Contexts: contexts, Fill: time.Since(start).Round(time.Millisecond).String(), GOMAXPROCS: gomaxprocs()}
	info.Slots = fmt.Sprint(slots)
	if slots < 0 {
		info.Slots = "unbounded"
	} else if ingestPoller == "off" {
		info.Slots += ", ingest poller off"
	}
	if mqtt {
		info.MQTT = n.MQTTAddr(map[bool]string{true: "tls", false: "tcp"}[mqttTLS])
	}
	if err := benchproc.Announce(info); err != nil {
		return err
	}

	var meter *meter
	var (
		prof benchproc.Profiler
		tr   *os.File
	)
	benchproc.ServeCommands(func(cmd string, args []string) (any, error) {
		switch cmd {
		case "begin":
			meter = begin()
			return struct{}{}, nil
		case "end":
			if meter == nil {
				return nil, errors.New("end without begin")
			}
			return meter.end(), nil
		case "baseline": // clients warmup duration
			if len(args) != 3 {
				return nil, errors.New("baseline CLIENTS WARMUP DURATION")
			}
			clients, _ := strconv.Atoi(args[0])
			warmup, _ := time.ParseDuration(args[1])
			d, _ := time.ParseDuration(args[2])
			get := func(r *rand.Rand) error {
				_, err := m.Get(devicePath(r.IntN(contexts), perSite))
				return err
			}
			measure(clients, warmup, 0, get)
			return summarize(measure(clients, d, 0, get), d), nil
		case "profile-start":
			return struct{}{}, prof.Start(args)
		case "profile-stop":
			prof.Stop()
			return struct{}{}, nil
		case "trace-start":
			if len(args) != 1 {
				return nil, errors.New("trace-start FILE")
			}
			f, err := os.Create(args[0])
			if err != nil {
				return nil, err
			}
			if err := trace.Start(f); err != nil {
				f.Close()
				return nil, err
			}
			tr = f
			return struct{}{}, nil
		case "trace-stop":
			if tr != nil {
				trace.Stop()
				tr.Close()
				tr = nil
			}
			return struct{}{}, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd)
	})
	return nil
}
