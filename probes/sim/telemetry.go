package sim

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// Telemetry is paced by a few shards rather than a goroutine per device:
// each shard owns every S-th device, accumulates tokens at its share of
// the rate, and spends them on its devices round robin from a random
// start, so every device gets rate/N messages per second, evenly spread.
// A device whose window is full keeps a few owed messages, sent as PUBACKs
// arrive (device.tick, device.onPuback).

// shardTick is the pacing granularity.
const shardTick = 5 * time.Millisecond

// maxVars bounds the filler variables of a payload; the rest of the
// requested size is a string, so large payloads stay within the node's
// limit of variables per point.
const maxVars = 16

// appendTelemetry appends a telemetry object of about size bytes:
// {"ts":<unix ms>,"seq":<n>,"v0":..,"v1":..,"pad":"xx.."}.
func appendTelemetry(b []byte, seq uint64, now time.Time, size int) []byte {
	start := len(b)
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	for i := 0; i < maxVars && len(b)-start+12 <= size; i++ {
		b = append(b, `,"v`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `":`...)
		v := float64((seq*31+uint64(i)*17)%1000) / 10
		b = strconv.AppendFloat(b, v, 'f', 1, 64)
	}
	if pad := size - (len(b) - start) - 10; pad > 0 {
		b = append(b, `,"pad":"`...)
		for range pad {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// runTelemetry paces telemetry until ctx ends; it returns when every shard
// has stopped.
func (f *Fleet) runTelemetry(ctx context.Context) {
	n := len(f.devices)
	shards := max(1, min(n, 4*runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for s := range shards {
		var devs []*device
		for i := s; i < n; i += shards {
			devs = append(devs, f.devices[i])
		}
		wg.Go(func() { f.shard(ctx, devs, f.cfg.Rate*float64(len(devs))/float64(n)) })
	}
	wg.Wait()
}

func (f *Fleet) shard(ctx context.Context, devs []*device, rate float64) {
	t := time.NewTicker(shardTick)
	defer t.Stop()
	next := rand.IntN(len(devs))
	last := time.Now()
	tokens := 0.0
	burst := max(1, rate/2) // at most half a second of catching up
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			tokens += now.Sub(last).Seconds() * rate
			last = now
			if tokens > burst {
				f.stats.due.Add(int64(tokens - burst))
				f.stats.skipped.Add(int64(tokens - burst))
				tokens = burst
			}
			for ; tokens >= 1 && ctx.Err() == nil; tokens-- {
				devs[next].tick()
				if next++; next == len(devs) {
					next = 0
				}
			}
		}
	}
}
