package sim

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/apitypes"
)

// Command is a command a device received on strata/<id>/cmd/<job>.
type Command struct {
	DeviceID   string
	Job        string // from the topic
	Function   string
	Args       json.RawMessage // nil when absent
	Deadline   time.Time       // zero when absent
	ReceivedAt time.Time
}

// errBadCommand is returned by parseCommand for a payload that is not a
// command object.
var errBadCommand = errors.New("invalid command payload")

// parseCommand decodes a command payload (docs/mqtt.md, "Commands").
func parseCommand(payload []byte) (Command, error) {
	var raw struct {
		apitypes.Command
		// Deadline is decoded here, where an empty one means none.
		Deadline string `json:"deadline"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return Command{}, errBadCommand
	}
	cmd := Command{Function: raw.Function}
	if len(raw.Args) > 0 && string(raw.Args) != "null" {
		cmd.Args = append(json.RawMessage(nil), raw.Args...)
	}
	if raw.Deadline != "" {
		t, err := time.Parse(time.RFC3339Nano, raw.Deadline)
		if err != nil {
			return cmd, errBadCommand
		}
		cmd.Deadline = t
	}
	return cmd, nil
}

// appendResult appends the answer to cmd: an echo of its arguments, or a
// failure when the command could not be read.
func appendResult(b []byte, cmd *Command, err error) []byte {
	if err != nil {
		return append(b, `{"status":"failed","error":"invalid command payload"}`...)
	}
	b = append(b, `{"status":"succeeded","result":{"echo":`...)
	if cmd.Args == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, cmd.Args...)
	}
	return append(b, "}}"...)
}

// jobID extracts the job from a command topic under prefix; ok is false
// for any other topic (including a result topic).
func jobID(prefix, topic string) (string, bool) {
	job, ok := strings.CutPrefix(topic, prefix+"cmd/")
	if !ok || job == "" || strings.ContainsAny(job, "/+#") {
		return "", false
	}
	return job, true
}

func (d *device) onPublish(c *conn, pk *packets.Packet) {
	f := d.f
	now := time.Now()
	job, ok := jobID(d.prefix, pk.TopicName)
	if !ok {
		f.stats.unexpectedPub.Add(1)
		return
	}
	job = strings.Clone(job) // the topic aliases the packet buffer
	f.stats.cmdReceived.Add(1)
	if !f.jobs.received(job, now) {
		f.stats.cmdDuplicate.Add(1)
	}
	cmd, err := parseCommand(pk.Payload)
	cmd.DeviceID, cmd.Job, cmd.ReceivedAt = d.id, job, now
	if err != nil {
		f.stats.cmdInvalid.Add(1)
	} else if !cmd.Deadline.IsZero() && now.After(cmd.Deadline) {
		f.stats.cmdExpired.Add(1) // a device must not run a command past its deadline
		return
	}
	if f.cfg.OnCommand != nil {
		f.cfg.OnCommand(cmd)
	}
	if !f.cfg.AnswerCommands {
		return
	}
	if err == nil && isInstall(&cmd) {
		d.onInstall(c, pk.TopicName, cmd)
		return
	}
	d.mu.Lock()
	if d.c != c {
		d.mu.Unlock()
		return
	}
	id := d.reserve(pending{at: now, job: job})
	d.mu.Unlock()
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendResult(buf.AvailableBuffer(), &cmd, err))
	_ = c.publish(pk.TopicName+"/result", buf.Bytes(), 1, id)
}

// jobs remembers, per job id, when the fleet first received the command
// and when its first result was acknowledged, so a benchmark can time
// commands end to end (Fleet.ReceivedAt, Fleet.AnsweredAt).
type jobs struct {
	mu sync.Mutex
	m  map[string]*jobTimes
}

type jobTimes struct {
	received, answered time.Time
}

// received records a receipt and reports whether it is the job's first.
func (j *jobs) received(job string, at time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.m == nil {
		j.m = map[string]*jobTimes{}
	}
	if _, seen := j.m[job]; seen {
		return false
	}
	j.m[job] = &jobTimes{received: at}
	return true
}

// answered records the PUBACK of a result; only a job's first counts.
func (j *jobs) answered(f *Fleet, job string, at time.Time) {
	j.mu.Lock()
	t := j.m[job]
	first := t != nil && t.answered.IsZero()
	if first {
		t.answered = at
	}
	j.mu.Unlock()
	if first {
		f.stats.cmdAnswered.Add(1)
		f.stats.commandLat.record(at.Sub(t.received))
	}
}

func (j *jobs) get(job string) (jobTimes, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	t, ok := j.m[job]
	if !ok {
		return jobTimes{}, false
	}
	return *t, true
}
