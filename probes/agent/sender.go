package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"
)

const (
	// maxBatchPoints and maxBatchBytes bound one message of buffered
	// telemetry or events: the node takes at most 1,000 points a message and
	// 256 KiB a payload.
	maxBatchPoints = 1000
	maxBatchBytes  = 192 << 10
	// ackTimeout bounds the wait for a PUBACK on a live connection before
	// the message is sent again.
	ackTimeout = 60 * time.Second
)

// errNoSession is returned when a publish had no connection to go out on.
var errNoSession = errors.New("not connected")

// sendLoop drains the queue in order over the current session, one message
// in flight at a time. Consecutive telemetry points (or events) go out as
// one JSON array; a record leaves the queue only once its PUBACK arrived.
func (a *Agent) sendLoop(ctx context.Context) {
	for {
		s := a.waitSession(ctx)
		if s == nil {
			return
		}
		entries, err := a.queue.peek(maxBatchPoints, maxBatchBytes)
		if err != nil {
			a.log.Error("cannot read the queue", "err", err)
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		if len(entries) == 0 {
			select {
			case <-a.queue.notify:
			case <-s.lost:
			case <-ctx.Done():
				return
			}
			continue
		}
		batch := batchOf(entries)
		err = a.publish(ctx, s, batch[0].topic, encodeBatch(batch))
		switch {
		case err == nil:
			if err := a.queue.ack(batch[len(batch)-1].seq); err != nil {
				a.log.Error("cannot remove sent entries from the queue", "err", err)
				if !sleepCtx(ctx, time.Second) {
					return
				}
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNoSession):
		default:
			a.log.Warn("publish failed; will retry", "topic", batch[0].topic, "err", err)
			if !sleepCtx(ctx, time.Second) {
				return
			}
		}
	}
}

// batchOf returns the leading entries that can share one message: several
// consecutive telemetry points or events, else the first entry alone.
func batchOf(entries []queueEntry) []queueEntry {
	first := entries[0].topic
	if first != "telemetry" && first != "events" {
		return entries[:1]
	}
	n := 1
	for n < len(entries) && entries[n].topic == first {
		n++
	}
	return entries[:n]
}

// encodeBatch is one entry's payload, or a JSON array of several.
func encodeBatch(batch []queueEntry) []byte {
	if len(batch) == 1 {
		return batch[0].payload
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, e := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e.payload)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// publish sends payload at QoS 1 on prefix+topic and waits for its PUBACK.
// It returns errNoSession if the session ends first.
func (a *Agent) publish(ctx context.Context, s *session, topic string, payload []byte) error {
	tok := s.client.Publish(a.prefix+topic, 1, false, payload)
	timer := time.NewTimer(ackTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-s.lost:
		return errNoSession
	case <-timer.C:
		return errors.New("no PUBACK within " + ackTimeout.String())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// inventoryLoop publishes the inventory at every connect and then every
// inventory interval. Inventory is current state, not history: it is sent
// directly, not queued; a tick while disconnected waits for the next
// connection.
func (a *Agent) inventoryLoop(ctx context.Context) {
	for a.waitInterval(ctx, func(s Settings) time.Duration { return s.InventoryInterval }, a.invNow) {
		// Wait for the session: paho signals a connect (onConnect) before
		// the connection loop has published the session.
		s := a.waitSession(ctx)
		if s == nil {
			return
		}
		inv := GatherInventory(ctx)
		inv.AgentVersion = a.cfg.Version
		inv.Functions = a.FunctionInfos()
		inv.Software = a.inst.software.list()
		payload, err := json.Marshal(inv)
		if err == nil {
			err = a.publish(ctx, s, "inventory", payload)
		}
		switch {
		case err == nil:
			a.log.Debug("inventory sent")
		case ctx.Err() == nil:
			a.log.Warn("cannot send inventory", "err", err)
		}
	}
}

// sleepCtx waits d; false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
