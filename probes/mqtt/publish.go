package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/model"
)

// applyTimeout bounds one proposal's write; beyond it the messages are
// not acknowledged and the device sends them again.
const applyTimeout = 30 * time.Second

// OnPublish maps an uplink message onto the tree. Messages that become
// mutations are queued on the uplink pipeline (uplink.go), which
// acknowledges them once durable; mochi sends no PUBACK for them. A
// command result is handled here, after everything the connection sent
// before it, and mochi acknowledges it. Accepted messages are not
// forwarded to subscribers (nobody but the device may subscribe under its
// prefix anyway).
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the node's own command publications
	}
	u := h.uplink(cl)
	if u == nil {
		return pk, packets.ErrRejectPacket
	}
	qos := pk.FixedHeader.Qos
	kind, job, _ := parseTopic(u.id, pk.TopicName)
	if kind == topicResult {
		u.drain() // gives the ingest slot back: the result is written synchronously
		err := h.result(u, job, pk.Payload)
		return pk, h.answer(u, qos, h.judge(u, kind, pk.TopicName, err))
	}
	it := &item{up: u, kind: kind, qos: qos, id: pk.PacketID, topic: pk.TopicName}
	muts, err := h.decode(u.path, u.tenant, kind, pk.Payload, u.names, &it.one)
	it.muts = muts
	if err != nil {
		it.decided, it.v = true, h.judge(u, kind, pk.TopicName, err)
		if qos == 0 {
			return pk, packets.ErrRejectPacket
		}
	}
	if !u.enter() {
		return pk, packets.ErrRejectPacket // stopping: not acknowledged
	}
	u.sh.push(it)
	return pk, packets.ErrRejectPacket // the pipeline acknowledges
}

// errRevokedWrite refuses a message of a connection whose device was
// revoked after it connected.
var errRevokedWrite = errors.New("device credentials revoked")

// judge counts and records a message's outcome.
func (h *hook) judge(u *uplink, kind topicKind, topic string, err error) verdict {
	switch {
	case err == nil:
		h.b.metrics.stored[kind].Inc()
		return stored
	case errors.Is(err, errRevokedWrite):
		h.b.metrics.revokedWrites.Inc()
		return refusedRevoked
	case errors.Is(err, errPayload), errors.Is(err, model.ErrInvalid), errors.Is(err, model.ErrInvalidPath):
		h.rejected(u, true, topic, err)
		return refusedPayload
	case errors.Is(err, model.ErrNotFound), errors.Is(err, model.ErrShared):
		// The device's context belongs to another tenant: refuse, never write.
		h.rejected(u, false, topic, err)
		return refusedForeign
	}
	h.b.metrics.storeErrors.Inc()
	h.b.log.Warn("device message not stored", "device", u.id, "topic", topic, "err", err)
	return notStored
}

// answer is what OnPublish tells mochi for a message handled in place.
func (h *hook) answer(u *uplink, qos byte, v verdict) error {
	switch {
	case v == refusedRevoked && u.v5 && qos > 0:
		return packets.ErrNotAuthorized
	case v == refusedRevoked:
		return packets.ErrRejectPacket // 3.1.1: being closed, acknowledge nothing
	case v == stored || qos == 0 || (!u.v5 && v != notStored):
		return packets.CodeSuccessIgnore
	case v == refusedPayload:
		return packets.ErrPayloadFormatInvalid
	case v == refusedForeign:
		return packets.ErrNotAuthorized
	case u.v5:
		return packets.ErrImplementationSpecificError
	}
	// The store did not take it: never acknowledge.
	h.b.srv.DisconnectClient(u.cl, packets.ErrServerUnavailable)
	return packets.ErrRejectPacket
}

func kindName(k topicKind) string {
	switch k {
	case topicTelemetry:
		return "telemetry"
	case topicInventory:
		return "inventory"
	case topicEvents:
		return "events"
	case topicStatus:
		return "status"
	case topicResult:
		return "result"
	}
	return "unknown"
}

// decode turns a message into mutations of the device's context. The
// names of telemetry variables come from ns when there (nil: none), and a
// message of one mutation is returned in one (nil: allocated).
func (h *hook) decode(path model.Path, tenant string, kind topicKind, payload []byte, ns names, one *[1]model.Mutation) ([]model.Mutation, error) {
	if len(payload) > h.b.cfg.MaxPayloadBytes {
		return nil, payloadErr("payload larger than %d bytes", h.b.cfg.MaxPayloadBytes)
	}
	now := h.b.cfg.Now().UTC()
	switch kind {
	case topicTelemetry:
		points, err := decodeTelemetryNames(payload, now, ns)
		if err != nil {
			return nil, err
		}
		var muts []model.Mutation
		if len(points) == 1 && one != nil {
			muts = one[:]
		} else {
			muts = make([]model.Mutation, len(points))
		}
		for i, vars := range points {
			muts[i] = model.Mutation{Op: model.OpPut, Path: path, Actor: tenant, Variables: vars}
		}
		return muts, nil
	case topicInventory:
		inv, err := DecodeInventory(payload, now)
		if err != nil {
			return nil, err
		}
		return []model.Mutation{{
			Op: model.OpPut, Path: path, Type: "device", Actor: tenant, Variables: inv.Variables,
			Labels: inv.Labels, Functions: inv.Functions, SetFunctions: inv.SetFunctions,
		}}, nil
	case topicEvents:
		evs, err := DecodeEvents(payload, now)
		if err != nil {
			return nil, err
		}
		muts := make([]model.Mutation, len(evs))
		for i := range evs {
			muts[i] = model.Mutation{Op: model.OpEvent, Path: path, Actor: tenant, Event: &evs[i]}
		}
		return muts, nil
	case topicStatus:
		text := strings.ToValidUTF8(truncate(string(payload), 1024), "?")
		v, _ := json.Marshal(text)
		return []model.Mutation{{
			Op: model.OpPut, Path: path, Actor: tenant,
			Variables: map[string]model.Variable{"status": {Value: v, Type: model.TypeString, Time: now}},
		}}, nil
	case topicResult:
		return nil, nil
	}
	return nil, payloadErr("unknown topic")
}

// result hands a command result of connection u to Commands, durably,
// unless u's device was revoked since u authenticated.
func (h *hook) result(u *uplink, job string, payload []byte) error {
	r, err := DecodeResult(payload)
	if err != nil {
		return err
	}
	if h.b.cfg.Commands == nil {
		return payloadErr("this node takes no command results")
	}
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	u.sh.gate.Lock()
	defer u.sh.gate.Unlock()
	h.mu.Lock()
	live := h.liveLocked(u.id, u.epoch)
	h.mu.Unlock()
	if !live {
		return errRevokedWrite
	}
	if err := h.b.cfg.Commands.Report(ctx, u.id, job, r); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return payloadErr("unknown job %q", job)
		}
		return err
	}
	return nil
}

// rejected counts a refused message of connection u and, when record is
// set, records it on the device's context, at most once per second per
// device, unless the device was revoked since u authenticated.
func (h *hook) rejected(u *uplink, record bool, topic string, err error) {
	id := u.id
	reason := err.Error()
	h.b.metrics.rejected.WithLabelValues(reasonLabel(err)).Inc()
	now := h.b.cfg.Now()
	h.mu.Lock()
	last, seen := h.reject[id]
	if seen && now.Sub(last) < time.Second {
		h.mu.Unlock()
		return
	}
	h.reject[id] = now
	h.mu.Unlock()
	if !record {
		return // the context is not the device's: nothing to record it on
	}
	payload, _ := json.Marshal(map[string]string{"topic": truncate(topic, 256), "reason": truncate(reason, 512)})
	h.writeLive(u, model.Mutation{
		Op: model.OpEvent, Path: DevicePath(id), Actor: u.tenant,
		Event: &model.Event{Name: "rejected", Level: model.LevelWarning, Payload: payload, Time: now.UTC()},
	})
}

// reasonLabel is a bounded metric label for a rejection.
func reasonLabel(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, model.ErrNotFound), errors.Is(err, model.ErrShared):
		return "foreign_context"
	case errors.Is(err, model.ErrInvalidValue):
		return "invalid_value"
	case strings.Contains(msg, "larger than"):
		return "too_large"
	case strings.Contains(msg, "unknown topic"):
		return "unknown_topic"
	case strings.Contains(msg, "unknown job"):
		return "unknown_job"
	case strings.Contains(msg, "variable"):
		return "bad_variable"
	}
	return "malformed"
}
