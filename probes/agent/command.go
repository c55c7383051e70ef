package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/apitypes"
)

// Command is a job the node publishes on strata/<id>/cmd/<job>.
type Command = apitypes.Command

// Result is what the agent publishes on strata/<id>/cmd/<job>/result.
type Result = apitypes.CommandResult

// Result statuses (docs/mqtt.md). The agent sends only final ones.
const (
	StatusSucceeded = apitypes.ResultSucceeded
	StatusFailed    = apitypes.ResultFailed
)

// Errors reported in failed results; callers may branch on them with
// errors.Is.
var (
	ErrInvalidCommand  = errors.New("invalid command")
	ErrUnknownFunction = errors.New("unknown function")
	ErrDeadlinePassed  = errors.New("deadline passed")
	ErrInterrupted     = errors.New("interrupted: the agent stopped while running this job; it is not run again")
	ErrBusy            = errors.New("agent busy: too many commands pending")
)

const (
	maxCommandBytes = 256 << 10 // the node's default MQTT payload limit
	maxResultBytes  = 200 << 10 // leaves room under it for the JSON envelope
)

// DecodeCommand parses a command payload. Unknown keys are ignored (a newer
// node may add some); the function is required, the job id when present
// must be a valid topic level, args must be an object, and the deadline an
// RFC 3339 time.
func DecodeCommand(payload []byte) (Command, error) {
	if len(payload) > maxCommandBytes {
		return Command{}, fmt.Errorf("%w: %d bytes", ErrInvalidCommand, len(payload))
	}
	var wire struct {
		apitypes.Command
		// Deadline is decoded here, where an empty one means none.
		Deadline *string `json:"deadline"`
	}
	if err := json.Unmarshal(payload, &wire); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrInvalidCommand, err)
	}
	c := Command{Job: wire.Job, Function: wire.Function}
	if err := validTopicSegment(c.Function); err != nil {
		return Command{}, fmt.Errorf("%w: function: %v", ErrInvalidCommand, err)
	}
	if c.Job != "" {
		if err := validTopicSegment(c.Job); err != nil {
			return Command{}, fmt.Errorf("%w: job: %v", ErrInvalidCommand, err)
		}
	}
	if args := bytes.TrimSpace(wire.Args); len(args) > 0 && !bytes.Equal(args, []byte("null")) {
		if args[0] != '{' {
			return Command{}, fmt.Errorf("%w: args must be an object", ErrInvalidCommand)
		}
		c.Args = args
	}
	if wire.Deadline != nil && *wire.Deadline != "" {
		t, err := time.Parse(time.RFC3339Nano, *wire.Deadline)
		if err != nil {
			return Command{}, fmt.Errorf("%w: deadline: %v", ErrInvalidCommand, err)
		}
		c.Deadline = t
	}
	return c, nil
}

// failure is a failed result carrying err's message.
func failure(err error) Result { return Result{Status: StatusFailed, Error: err.Error()} }

// delivery is a command handed from the MQTT callback to a worker.
type delivery struct {
	job     string // from the topic, which is where the result goes
	cmd     Command
	err     error // decoding error: answered, not run
	verdict verdict
}

// onMessage is the MQTT handler for strata/<id>/cmd/+. It runs on paho's
// callback goroutine, so it only decodes, de-duplicates in memory and hands
// the command to a worker; it never waits for disk or for a function.
func (a *Agent) onMessage(_ mqtt.Client, m mqtt.Message) {
	job, ok := strings.CutPrefix(m.Topic(), a.prefix+"cmd/")
	if !ok || validTopicSegment(job) != nil {
		a.log.Warn("message on an unexpected topic ignored", "topic", m.Topic())
		return
	}
	cmd, err := DecodeCommand(m.Payload())
	if err == nil && cmd.Job != "" && cmd.Job != job {
		err = fmt.Errorf("%w: job %q in the payload differs from %q in the topic", ErrInvalidCommand, cmd.Job, job)
	}
	v := a.jobs.reserve(job)
	if v == jobDuplicate {
		a.duplicates.Add(1)
		a.log.Debug("duplicate delivery ignored", "job", job)
		return
	}
	select {
	case a.cmds <- delivery{job: job, cmd: cmd, err: err, verdict: v}:
	default:
		a.log.Warn("command refused", "job", job, "err", ErrBusy)
		a.answer(job, failure(ErrBusy))
		a.jobs.finish(job)
	}
}

// worker runs commands until ctx ends. Deliveries still in the channel at
// shutdown were never claimed: the node delivers them again later.
func (a *Agent) worker(ctx context.Context) {
	for {
		select {
		case d := <-a.cmds:
			a.process(ctx, d)
		case <-ctx.Done():
			return
		}
	}
}

// afterAckTimeout bounds how long an after-action (reboot) waits for its
// job's result to be acknowledged; the result is on disk regardless.
const afterAckTimeout = 15 * time.Second

// process answers one delivery: it records the job as started (fsynced)
// before running it, queues the result, then records it as done.
func (a *Agent) process(ctx context.Context, d delivery) {
	log := a.log.With("job", d.job, "function", d.cmd.Function)
	var res Result
	var after func(context.Context) error
	switch {
	case d.verdict == jobInterrupted:
		res = failure(ErrInterrupted)
	case d.err != nil:
		res = failure(d.err)
	case !d.cmd.Deadline.IsZero() && !time.Now().Before(d.cmd.Deadline):
		res = failure(ErrDeadlinePassed)
	default:
		if err := a.jobs.claim(d.job); err != nil {
			log.Error("cannot record the job; not running it", "err", err)
			res = failure(fmt.Errorf("cannot record the job: %w", err))
			break
		}
		log.Info("running command")
		res, after = a.call(ctx, d)
	}
	seq, err := a.answer(d.job, res)
	if err != nil {
		log.Error("cannot queue the result", "err", err)
	}
	if err := a.jobs.finish(d.job); err != nil {
		log.Error("cannot record the job as done", "err", err)
	}
	log.Info("command finished", "status", res.Status, "error", res.Error)
	if after == nil || err != nil {
		return
	}
	a.waitAcked(ctx, seq, afterAckTimeout)
	if err := after(ctx); err != nil {
		log.Error("after-action failed", "err", err)
		a.event("agent-error", "alert", map[string]any{"job": d.job, "error": err.Error()})
	}
}

// call runs the function named by the command under its deadline. A
// function returning an error fails the job, keeping any partial result.
func (a *Agent) call(ctx context.Context, d delivery) (res Result, after func(context.Context) error) {
	f, ok := a.funcs[d.cmd.Function]
	if !ok {
		return failure(fmt.Errorf("%w %q", ErrUnknownFunction, d.cmd.Function)), nil
	}
	if !d.cmd.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.cmd.Deadline)
		defer cancel()
	}
	c := &call{job: d.job, args: d.cmd.Args, deadline: d.cmd.Deadline}
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("function panicked", "function", f.Name, "panic", r)
			res, after = failure(fmt.Errorf("internal error in %s", f.Name)), nil
		}
	}()
	out, err := f.run(ctx, c)
	res = Result{Status: StatusSucceeded}
	if err != nil {
		res = Result{Status: StatusFailed, Error: err.Error()}
	}
	if out != nil {
		raw, merr := json.Marshal(out)
		if merr != nil {
			return failure(fmt.Errorf("cannot encode the result: %w", merr)), nil
		}
		res.Result = raw
	}
	if err != nil {
		return res, nil
	}
	return res, c.after
}

// answer queues res for strata/<id>/cmd/<job>/result. A result too large
// for one MQTT message is replaced by a failure saying so.
func (a *Agent) answer(job string, res Result) (uint64, error) {
	payload, err := json.Marshal(res)
	if err != nil {
		payload, _ = json.Marshal(failure(fmt.Errorf("cannot encode the result: %w", err)))
	}
	if len(payload) > maxResultBytes {
		payload, _ = json.Marshal(failure(fmt.Errorf("result too large: %d bytes (limit %d)", len(payload), maxResultBytes)))
	}
	return a.queue.append("cmd/"+job+"/result", payload)
}

// waitAcked waits until the queue record seq is acknowledged by the broker,
// ctx ends or d passes.
func (a *Agent) waitAcked(ctx context.Context, seq uint64, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, acked, done := a.queue.state(seq)
		if done {
			return
		}
		select {
		case <-acked:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
