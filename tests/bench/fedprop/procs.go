package main

// With -separate, each tier runs in a process of its own, as deployed:
// this program again, started with -tier. The parent drives the tiers
// over their standard input and output, one JSON message a line; their
// standard error is the parent's.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
)

// separate: the tiers run as separate processes.
var separate bool

func processes() string {
	if separate {
		return "each tier in a process of its own"
	}
	return "all tiers in one process"
}

// request is a message from the parent to a tier process.
type request struct {
	Op      string       `json:"op"` // token, join, fill, wait, record, load, count, report, quit
	Peer    string       `json:"peer,omitempty"`
	Addr    string       `json:"addr,omitempty"`
	Token   string       `json:"token,omitempty"`
	Publish []model.Path `json:"publish,omitempty"`
	Path    model.Path   `json:"path,omitempty"`
	Devices int          `json:"devices,omitempty"`
	Rate    int          `json:"rate,omitempty"`
	From    time.Time    `json:"from"`
	Until   time.Time    `json:"until"`
}

// reply answers a request (the first reply, unasked, carries the tier's
// federation address).
type reply struct {
	Err     string `json:"err,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Token   string `json:"token,omitempty"`
	Count   int64  `json:"count,omitempty"`
	Summary string `json:"summary,omitempty"`
}

// serveTier runs one tier in this process for a parent.
func serveTier(dir, name string, listen bool) error {
	t, err := newTier(dir, name, listen)
	if err != nil {
		return err
	}
	defer t.close()
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(reply{Addr: t.svc.Addr()}); err != nil {
		return err
	}
	var rec *recorder
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			return err
		}
		var rep reply
		switch req.Op {
		case "token":
			rep.Token, err = t.token(req.Peer)
		case "join":
			t.ups = []federation.Upstream{{Address: req.Addr, Token: req.Token, Publish: req.Publish}}
			err = t.svc.SetUpstreams(t.ups)
		case "fill":
			fill(t.model, req.Devices)
		case "wait":
			err = pollUntil(2*time.Minute, func() bool { _, err := t.model.Get(req.Path); return err == nil })
		case "record":
			rec = newRecorder(req.From, req.Until)
			t.model.OnCommit(rec.observe)
		case "load":
			rep.Count = load(t.model, req.Rate, req.Devices, req.From, req.Until)
		case "count", "report":
			if rec == nil {
				err = errors.New("not recording")
				break
			}
			rep.Count = int64(rec.count())
			if req.Op == "report" {
				rep.Summary = rec.summary()
			}
		case "quit":
			return nil
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		if err != nil {
			rep.Err = err.Error()
			err = nil
		}
		if err := out.Encode(rep); err != nil {
			return err
		}
	}
	return in.Err()
}

// tierProc is a tier process as its parent sees it.
type tierProc struct {
	name string
	addr string
	cmd  *exec.Cmd
	in   *json.Encoder
	out  *json.Decoder
}

func startTier(dir, name string, listen bool, extra ...string) (*tierProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-tier", name, "-dir", dir, fmt.Sprintf("-listen=%t", listen), fmt.Sprintf("-nosync=%t", noSync)}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &tierProc{name: name, cmd: cmd, in: json.NewEncoder(stdin), out: json.NewDecoder(stdout)}
	var hello reply
	if err := p.out.Decode(&hello); err != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		return nil, fmt.Errorf("tier %s did not start: %w", name, err)
	}
	p.addr = hello.Addr
	return p, nil
}

func (p *tierProc) call(req request) (reply, error) {
	if err := p.in.Encode(req); err != nil {
		return reply{}, fmt.Errorf("tier %s: %w", p.name, err)
	}
	var rep reply
	if err := p.out.Decode(&rep); err != nil {
		return reply{}, fmt.Errorf("tier %s: %w", p.name, err)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("tier %s: %s: %s", p.name, req.Op, rep.Err)
	}
	return rep, nil
}

// stop asks the process to close its tier and waits for it to exit.
func (p *tierProc) stop() {
	if err := p.in.Encode(request{Op: "quit"}); err != nil {
		p.cmd.Process.Kill()
	}
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// joinProc makes p publish to t.
func joinProc(t, p *tierProc, publish ...model.Path) error {
	tok, err := t.call(request{Op: "token", Peer: p.name})
	if err != nil {
		return err
	}
	_, err = p.call(request{Op: "join", Addr: t.addr, Token: tok.Token, Publish: publish})
	return err
}

// latencySeparate is latency with each tier in a process of its own.
func latencySeparate(dir string, rate, devices int, warmup, duration time.Duration, cpuprofile string) error {
	var procs []*tierProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	start := func(name string, listen bool) (*tierProc, error) {
		var extra []string
		if cpuprofile != "" {
			extra = append(extra, "-cpuprofile", cpuprofile+"."+name)
		}
		p, err := startTier(dir, name, listen, extra...)
		if err == nil {
			procs = append(procs, p)
		}
		return p, err
	}
	hq, err := start("hq", true)
	if err != nil {
		return err
	}
	eu, err := start("eu", true)
	if err != nil {
		return err
	}
	probe, err := start("plant7", false)
	if err != nil {
		return err
	}
	if _, err := probe.call(request{Op: "fill", Devices: devices}); err != nil {
		return err
	}
	if err := joinProc(hq, eu); err != nil {
		return err
	}
	if err := joinProc(eu, probe, "/devices"); err != nil {
		return err
	}
	last := model.Path(fmt.Sprintf("/peers/eu/peers/plant7/devices/d%07d", devices-1))
	if _, err := hq.call(request{Op: "wait", Path: last}); err != nil {
		return err
	}
	from := time.Now().Add(warmup)
	until := from.Add(duration)
	for _, p := range []*tierProc{probe, eu, hq} {
		if _, err := p.call(request{Op: "record", From: from, Until: until}); err != nil {
			return err
		}
	}
	l, err := probe.call(request{Op: "load", Rate: rate, Devices: devices, From: from, Until: until})
	if err != nil {
		return err
	}
	var callErr error
	drained := waitDrained(l.Count, func() int {
		c, err := hq.call(request{Op: "count"})
		if err != nil {
			callErr = err
			return int(l.Count) // stop waiting
		}
		return int(c.Count)
	})
	if callErr != nil {
		return callErr
	}
	var sums [3]reply
	for i, p := range []*tierProc{probe, eu, hq} {
		if sums[i], err = p.call(request{Op: "report"}); err != nil {
			return err
		}
	}
	report(rate, l.Count, duration, drained, sums[0].Summary, sums[1].Summary, sums[2].Summary, int(sums[2].Count))
	return nil
}

// pollUntil polls cond until it holds or d passes.
func pollUntil(d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
