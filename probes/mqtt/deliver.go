package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// commandWindow is how many commands may await a device's PUBACK at once.
// mochi drops a publication when a client's write queue (WritesPending,
// kept small because each slot costs ~800 bytes per session) is full, so
// commands beyond the window wait in the connection's backlog and go out
// as acknowledgements come back.
const commandWindow = 4

// outbox is one connection's command delivery state.
type outbox struct {
	subscribed  bool              // the device subscribed to its command topic
	backlog     []Command         // to send, oldest first
	outstanding int               // sent, awaiting PUBACK or a drop
	sent        map[uint16]string // packet id → job, until PUBACK
	queued      map[string]bool   // jobs sent or in backlog on this connection
}

// outboxLocked returns cl's outbox; the caller holds h.mu.
func (h *hook) outboxLocked(cl *mochi.Client) *outbox {
	o := h.out[cl]
	if o == nil {
		o = &outbox{sent: map[uint16]string{}, queued: map[string]bool{}}
		h.out[cl] = o
	}
	return o
}

// deliverPending queues every pending command of the device on its
// connection cl, which has just subscribed to its command topic.
func (h *hook) deliverPending(cl *mochi.Client) {
	if h.b.cfg.Commands == nil {
		return
	}
	h.enqueue(cl, h.b.cfg.Commands.Pending(cl.ID), true)
}

// enqueue adds commands not yet queued on cl to its backlog, then sends
// what the window allows. subscribed marks the connection as able to
// receive commands. A command of another tenant than the connection's
// device is refused, never sent.
func (h *hook) enqueue(cl *mochi.Client, cmds []Command, subscribed bool) {
	h.mu.Lock()
	tenant, live := h.tenants[cl]
	if !live {
		h.mu.Unlock()
		return
	}
	o := h.outboxLocked(cl)
	o.subscribed = o.subscribed || subscribed
	for _, c := range cmds {
		if c.Tenant != tenant {
			h.b.metrics.commandsRefused.Inc()
			h.b.log.Warn("command of another tenant than its device's not delivered", "device", cl.ID, "job", c.Job)
			continue
		}
		if !o.queued[c.Job] {
			o.queued[c.Job] = true
			o.backlog = append(o.backlog, c)
		}
	}
	h.mu.Unlock()
	h.pump(cl)
}

// pump sends backlog commands while the window has room.
func (h *hook) pump(cl *mochi.Client) {
	for {
		h.mu.Lock()
		o := h.out[cl]
		if o == nil || !o.subscribed || len(o.backlog) == 0 || o.outstanding >= commandWindow {
			h.mu.Unlock()
			return
		}
		c := o.backlog[0]
		o.backlog = o.backlog[1:]
		o.outstanding++
		h.mu.Unlock()
		h.b.publish(cl.ID, c)
	}
}

// publish sends one command through mochi's inline client: the device is
// the only possible subscriber of its command topic.
func (b *Broker) publish(id string, c Command) {
	payload, err := json.Marshal(c.payload())
	if err == nil {
		err = b.srv.Publish(TopicPrefix(id)+"cmd/"+c.Job, payload, false, 1)
	}
	if err != nil {
		b.log.Warn("publish command", "device", id, "job", c.Job, "err", err)
		return
	}
	b.metrics.commandsSent.Inc()
}

// OnQosPublish remembers which job an outgoing QoS 1 packet carries.
func (h *hook) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	kind, job, ok := parseTopic(cl.ID, pk.TopicName)
	if !ok || kind != topicCommand {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, live := h.tenants[cl]; live {
		h.outboxLocked(cl).sent[pk.PacketID] = job
	}
}

// OnPublishDropped puts a command mochi could not queue back at the front
// of the backlog.
func (h *hook) OnPublishDropped(cl *mochi.Client, pk packets.Packet) {
	kind, job, ok := parseTopic(cl.ID, pk.TopicName)
	if !ok || kind != topicCommand {
		return
	}
	var p apitypes.Command
	if json.Unmarshal(pk.Payload, &p) != nil {
		return
	}
	c := Command{Job: p.Job, Function: p.Function, Args: p.Args, Deadline: p.Deadline}
	h.mu.Lock()
	c.Tenant = h.tenants[cl] // checked when it was queued on this connection
	if o := h.out[cl]; o != nil {
		o.outstanding = max(o.outstanding-1, 0)
		delete(o.sent, pk.PacketID)
		o.backlog = append([]Command{c}, o.backlog...)
		o.queued[job] = true
	}
	h.mu.Unlock()
}

// OnQosComplete marks a command delivered when the device acknowledges it
// and sends the next one.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	h.mu.Lock()
	o := h.out[cl]
	var job string
	var ok bool
	if o != nil {
		if job, ok = o.sent[pk.PacketID]; ok {
			delete(o.sent, pk.PacketID)
			o.outstanding = max(o.outstanding-1, 0)
		}
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	h.pump(cl)
	if h.b.cfg.Commands == nil {
		return
	}
	h.b.delivered(cl.Net.Conn, delivery{device: cl.ID, job: job})
}

// maxDeliveries bounds the commands acknowledged by their devices and
// waiting to be recorded delivered.
const maxDeliveries = 4096

// delivery is a command its device acknowledged.
type delivery struct{ device, job string }

// delivered queues d to be recorded, from the reader of connection conn.
// While the queue is full the reader waits, without its ingest slot: the
// device's connection is not read meanwhile (backpressure). When the
// broker is stopping d is dropped: the job stays queued and is delivered
// again on the device's next connection.
func (b *Broker) delivered(conn net.Conn, d delivery) {
	select {
	case b.deliveries <- d:
		return
	default:
	}
	yieldSlot(conn)
	select {
	case b.deliveries <- d:
	case <-b.stopped:
	}
}

// recordDeliveries records the acknowledged commands one after another
// until quit is closed, then what is left in the queue. One goroutine
// for every connection: a job on 100,000 devices would otherwise start a
// goroutine per acknowledgement, each runnable ahead of the operator API
// and memory held while they wait, for writes that the jobs service
// makes one at a time anyway.
func (b *Broker) recordDeliveries(quit <-chan struct{}) {
	for {
		select {
		case d := <-b.deliveries:
			b.recordDelivery(d)
		case <-quit:
			for {
				select {
				case d := <-b.deliveries:
					b.recordDelivery(d)
				default:
					return
				}
			}
		}
	}
}

func (b *Broker) recordDelivery(d delivery) {
	if err := b.cfg.Commands.Delivered(context.Background(), d.device, d.job); err != nil && !errors.Is(err, model.ErrClosed) {
		b.log.Warn("delivery not recorded", "device", d.device, "job", d.job, "err", err)
	}
}
