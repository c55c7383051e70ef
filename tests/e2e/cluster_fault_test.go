package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/tests/lincheck"
)

// TestClusterFaults runs three real strata replicas of one node,
// publishing to a single-node HQ, under kill -9 of the leader at random
// moments and at aimed ones (while it takes a snapshot, while a
// restarted replica installs one), and partitions through the replicas'
// proxies (the links into the leader, the leader cut from both followers
// both ways, every replica cut from every other), with devices sending
// telemetry to every replica, commands running on them, and clients
// writing and reading variables through every replica
// (docs/cluster.md, "Testing"). After the rounds it checks that no
// acknowledged write or telemetry was lost, that every replica holds the
// same change log, that the history of writes and linearizable reads
// (?consistent=true) is linearizable, and that HQ's mirror verifies
// equal to the cluster's tree.
//
// STRATA_E2E_CLUSTER_ROUNDS sets the rounds (default 20; the soak mode
// runs 1000 or more), STRATA_E2E_CLUSTER_KILLS_ONLY=1 leaves partitions
// and the aimed snapshot-install kills out (the failover measurement),
// and STRATA_E2E_CLUSTER_TIMEOUTS=defaults runs with the library's Raft
// timeouts instead of tuned ones, =both runs the whole test with each,
// one after the other, and prints their figures side by side. Each kill
// logs the time from the kill to the first acknowledged write of a
// client retrying across replicas, and to HQ's mirror holding that
// write; p50/p99 of both are logged at the end. A round slower than a
// second logs its timeline (cluster_trace_test.go), every round with
// STRATA_E2E_CLUSTER_TRACE=1.
func TestClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("three strata processes under faults")
	}
	rounds := 20
	if s := os.Getenv("STRATA_E2E_CLUSTER_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("STRATA_E2E_CLUSTER_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	killsOnly := os.Getenv("STRATA_E2E_CLUSTER_KILLS_ONLY") != ""
	switch tm := os.Getenv("STRATA_E2E_CLUSTER_TIMEOUTS"); tm {
	case "", "tuned":
		runClusterFaults(t, rounds, killsOnly, true)
	case "defaults":
		runClusterFaults(t, rounds, killsOnly, false)
	case "both":
		var tuned, defaults *faultRun
		t.Run("tuned", func(t *testing.T) { tuned = runClusterFaults(t, rounds, killsOnly, true) })
		t.Run("defaults", func(t *testing.T) { defaults = runClusterFaults(t, rounds, killsOnly, false) })
		for _, f := range []*faultRun{tuned, defaults} {
			if f != nil {
				t.Log(f.summary())
			}
		}
	default:
		t.Fatalf("STRATA_E2E_CLUSTER_TIMEOUTS=%q: want tuned, defaults or both", tm)
	}
}

// runClusterFaults runs the rounds on a new cluster and checks it.
func runClusterFaults(t *testing.T, rounds int, killsOnly, tuned bool) *faultRun {
	start := time.Now()
	cp := newClusterProcs(t, tuned)
	w := newClusterWorkload(t, cp)
	w.start()
	f := &faultRun{t: t, cp: cp, w: w}
	for round := range rounds {
		time.Sleep(time.Duration(rand.Int64N(int64(time.Second)))) // a random moment of the workload, not synchronisation
		leader := cp.waitLeader(30 * time.Second)
		switch kind := roundKind(round, killsOnly); kind {
		case roundKill:
			f.kill(round, leader)
		case roundKillSnapshot:
			f.killMidSnapshot(round, leader)
		case roundKillInstall:
			f.killMidInstall(round, leader)
		case roundHoldInbound:
			f.holdInbound(round, leader)
		case roundIsolate:
			f.isolate(round, leader)
		case roundCutAll:
			f.cutAll(round, leader)
		}
		cp.waitWhole(60 * time.Second)
		f.wg.Wait() // HQ's mirror caught up with the round's write
	}
	w.stop()
	cp.checkAlive()
	t.Logf("%d kills (%d while the leader took a snapshot, %d while a replica installed one), %d partitions; %d operations recorded, %d acknowledged writes, %d unknown, %d consistent reads answered, %d telemetry messages acknowledged",
		f.kills, f.midSnapshot, f.midInstall, f.partitions, w.rec.Len(), w.acked.Load(), w.unknown.Load(), w.consistentReads.Load(), w.telemetry.Load())
	t.Logf("failed writes by error: %v", w.writeErrs)
	t.Log(f.summary())
	w.check()
	f.checkHQ()
	t.Logf("%d rounds in %v", rounds, time.Since(start).Round(time.Second))
	return f
}

// linKeys are the contexts whose variable v the clients write and read.
const linKeys = 8

// clusterWorkload drives the cluster while faults happen.
type clusterWorkload struct {
	t   *testing.T
	cp  *clusterProcs
	rec *lincheck.Recorder
	ca  []byte
	tok string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	writes map[string][]writeOp // per key, every write with its outcome

	acked, unknown, telemetry, jobs atomic.Int64
	consistentReads                 atomic.Int64 // ?consistent=true reads answered, in the history
	devices                         []*telemetryDevice
	errMu                           sync.Mutex
	errs                            []error
	writeErrs                       map[string]int // failed writes by error, for the log
}

// noteErr counts a failed write's error by its text up to the first
// digit-laden detail, for the summary.
func (w *clusterWorkload) noteErr(err error) {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	w.errMu.Lock()
	if w.writeErrs == nil {
		w.writeErrs = map[string]int{}
	}
	w.writeErrs[msg]++
	w.errMu.Unlock()
}

// writeOp is one write attempt as the client saw it.
type writeOp struct {
	value       string
	call, ret   time.Time // ret zero: outcome unknown
	acknowledge bool
}

func newClusterWorkload(t *testing.T, cp *clusterProcs) *clusterWorkload {
	w := &clusterWorkload{t: t, cp: cp, rec: lincheck.NewRecorder(), ca: cp.reps[0].caPEM(), writes: map[string][]writeOp{}}
	tok, err := os.ReadFile(cp.reps[0].dir + "/admin.token")
	if err != nil {
		t.Fatal(err)
	}
	w.tok = strings.TrimSpace(string(tok))
	w.ctx, w.cancel = context.WithCancel(context.Background())
	admin := cp.reps[0].admin()
	if _, _, err := admin.PutContext(context.Background(), "/lin", client.ContextUpdate{Type: "folder"}); err != nil {
		t.Fatal(err)
	}
	// One device per replica, enrolled through r1, each connected to its
	// own replica first.
	for i := range cp.reps {
		var e *client.Enrollment
		tstest.WaitForErr(t, e2eTimeout, "enrolling a device", func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: "pumps", TTL: time.Hour})
			if err == nil {
				e, err = cp.reps[0].client("").Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: fmt.Sprintf("hw-%d", i)})
			}
			return err == nil, err
		})
		w.devices = append(w.devices, &telemetryDevice{e: e, next: i})
	}
	return w
}

// api is a client of replica i.
func (w *clusterWorkload) api(i int) *client.Client { return w.cp.reps[i].client(w.tok) }

func (w *clusterWorkload) fail(err error) {
	w.errMu.Lock()
	w.errs = append(w.errs, err)
	w.errMu.Unlock()
}

func (w *clusterWorkload) start() {
	for c := range 4 {
		w.wg.Go(func() { w.runClient(c) })
	}
	for _, d := range w.devices {
		w.wg.Go(func() { w.runDevice(d) })
	}
	w.wg.Go(w.runOperator)
}

func (w *clusterWorkload) stop() {
	w.cancel()
	w.wg.Wait()
}

// runClient writes and reads (linearizably) the variables of the /lin
// contexts through one replica, moving to the next on 503, a timeout or
// a connection error.
func (w *clusterWorkload) runClient(id int) {
	clients := []*client.Client{w.api(0), w.api(1), w.api(2)}
	at := id % len(clients)
	for n := 0; w.ctx.Err() == nil; n++ {
		key := fmt.Sprintf("/lin/k%d", rand.IntN(linKeys))
		if rand.IntN(4) == 0 {
			at = rand.IntN(len(clients)) // sometimes through another replica: reads across replicas
		}
		c := clients[at]
		var err error
		if rand.IntN(2) == 0 {
			value := fmt.Sprintf("c%d-%d", id, n)
			op := writeOp{value: value, call: time.Now()}
			err = w.rec.Write(id, key, value, func() error {
				ctx, cancel := context.WithTimeout(w.ctx, 3*time.Second)
				defer cancel()
				v, _ := json.Marshal(value)
				_, _, err := c.PutContext(ctx, key, client.ContextUpdate{Type: "register", Variables: map[string]json.RawMessage{"v": v}})
				if errors.Is(err, syscall.ECONNREFUSED) {
					return fmt.Errorf("%w: %w", lincheck.ErrNotApplied, err) // never sent
				}
				return err
			})
			switch {
			case err == nil:
				op.ret, op.acknowledge = time.Now(), true
				w.acked.Add(1)
			case errors.Is(err, lincheck.ErrNotApplied):
			default:
				w.unknown.Add(1)
				w.noteErr(err)
			}
			if !errors.Is(err, lincheck.ErrNotApplied) {
				w.mu.Lock()
				w.writes[key] = append(w.writes[key], op)
				w.mu.Unlock()
			}
		} else {
			_, _, err = w.rec.Read(id, key, func() (string, bool, error) {
				ctx, cancel := context.WithTimeout(w.ctx, 3*time.Second)
				defer cancel()
				x, err := c.GetContextConsistent(ctx, key)
				if client.IsCode(err, "not_found") {
					w.consistentReads.Add(1)
					return "", false, nil
				}
				if err != nil {
					return "", false, err
				}
				w.consistentReads.Add(1)
				return registerValue(x), true, nil
			})
		}
		if err != nil {
			if s := statusOf(err); s != 0 && s != 503 && s != 504 {
				w.fail(fmt.Errorf("client %d on replica %d: %v", id, at, err))
			}
			at = (at + 1) % len(clients)
			select {
			case <-w.ctx.Done():
			case <-time.After(20 * time.Millisecond): // back off before the next replica
			}
		}
	}
}

// registerValue is the string in the context's variable v.
func registerValue(x *client.Context) string {
	var s string
	json.Unmarshal(x.Variables["v"].Value, &s)
	return s
}

// firstWrite measures the time from since (the kill of leader, or its
// isolation) to the first write acknowledged through a client retrying
// across replicas as an operator's script would (docs/cluster.md,
// "Clients of a cluster"): it tries every replica in turn, a killed one
// too (it does not know which), gives each attempt attemptTimeout, moves
// to the next replica on any failure, and pauses passPause after a pass
// over all of them. The write puts round in /lin/probe's variable
// "round", which HQ's mirror then shows. The round's timeline
// (cluster_trace_test.go) is logged when it was slow.
func (w *clusterWorkload) firstWrite(killed *replicaProc, since time.Time, round int) time.Duration {
	clients := []*client.Client{w.api(0), w.api(1), w.api(2)}
	v, _ := json.Marshal(round)
	var attempts []attempt
	for i := 0; ; i++ {
		if i > 0 && i%len(clients) == 0 {
			time.Sleep(passPause) // the client's pause between passes, not synchronisation
		}
		r := w.cp.reps[i%3]
		if r == killed && r.p != nil {
			continue // an isolated leader: the figure is of the others
		}
		a := attempt{target: r.id, start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		_, _, err := clients[i%3].PutContext(ctx, "/lin/probe", client.ContextUpdate{Type: "probe", Variables: map[string]json.RawMessage{"round": v}})
		cancel()
		a.end, a.err = time.Now(), err
		attempts = append(attempts, a)
		if err == nil {
			d := a.end.Sub(since)
			if d > traceSlower || traceAll() {
				w.t.Logf("round %d: timeline from the fault (%v to the first acknowledged write):\n%s", round, d.Round(time.Millisecond), w.cp.timeline(since, a.end, attempts))
			}
			return d
		}
		if st := statusOf(err); st != 0 && st != 503 && st != 504 {
			w.t.Fatalf("a write after the fault through %s: %v", r.id, err)
		}
		if time.Since(since) > time.Minute {
			d := w.cp.describe()
			w.cp.dumpStacks()
			w.t.Fatalf("no write acknowledged a minute after the fault: %v\n%s", err, d)
		}
	}
}

// The measuring client's timing: what an attempt may take before the
// client moves to the next replica, and its pause after a pass over all
// of them.
const (
	attemptTimeout = 500 * time.Millisecond
	passPause      = 10 * time.Millisecond
)

// telemetryDevice is an Eclipse Paho device publishing its counter as
// telemetry at QoS 1, moving to the next replica when its link fails. It
// offers the function "ping" and answers every command it receives once
// (by job id): a command received again after its result was
// acknowledged is a command run twice.
type telemetryDevice struct {
	e     *client.Enrollment
	next  int
	acked atomic.Int64 // last counter value acknowledged; -1 none

	cmds chan string // job ids received, from paho's handler to the device's loop

	mu       sync.Mutex
	answered map[string]bool // jobs whose result was acknowledged
	again    []string        // jobs received after their result was acknowledged
}

func (w *clusterWorkload) runDevice(d *telemetryDevice) {
	d.acked.Store(-1)
	d.cmds = make(chan string, 1024)
	d.answered = map[string]bool{}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(d.e.CAPEM))
	seq := 0
	announced := false
	for w.ctx.Err() == nil {
		r := w.cp.reps[d.next%len(w.cp.reps)]
		d.next++
		o := paho.NewClientOptions().AddBroker("ssl://" + r.mqtt).
			SetClientID(d.e.DeviceID).SetUsername(d.e.MQTTUsername).SetPassword(d.e.MQTTPassword).
			SetTLSConfig(&tls.Config{RootCAs: pool}).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
			SetOnConnectHandler(func(c paho.Client) {
				c.Subscribe(d.e.TopicPrefix+"cmd/+", 1, func(_ paho.Client, m paho.Message) {
					var cmd command
					if json.Unmarshal(m.Payload(), &cmd) != nil || cmd.Job == "" {
						return
					}
					d.mu.Lock()
					if d.answered[cmd.Job] {
						d.again = append(d.again, cmd.Job)
					}
					d.mu.Unlock()
					select {
					case d.cmds <- cmd.Job:
					default:
					}
				})
			})
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			select {
			case <-w.ctx.Done():
			case <-time.After(100 * time.Millisecond): // pause before the next replica
			}
			continue
		}
		if !announced {
			tok := c.Publish(d.e.TopicPrefix+"inventory", 1, false, `{"functions": [{"name": "ping"}]}`)
			announced = tok.WaitTimeout(3*time.Second) && tok.Error() == nil
		}
		for w.ctx.Err() == nil {
			if !d.answer(c) {
				break
			}
			b, _ := json.Marshal(map[string]int{"seq": seq})
			tok := c.Publish(d.e.TopicPrefix+"telemetry", 1, false, b)
			if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
				break
			}
			d.acked.Store(int64(seq))
			w.telemetry.Add(1)
			seq++
			select {
			case <-w.ctx.Done():
			case <-time.After(20 * time.Millisecond): // the device's telemetry rate
			}
		}
		c.Disconnect(0)
	}
}

// answer publishes the result of every command received and not yet
// answered; false when the link failed.
func (d *telemetryDevice) answer(c paho.Client) bool {
	for {
		var job string
		select {
		case job = <-d.cmds:
		default:
			return true
		}
		d.mu.Lock()
		done := d.answered[job]
		d.mu.Unlock()
		if done {
			continue
		}
		tok := c.Publish(d.e.TopicPrefix+"cmd/"+job+"/result", 1, false, `{"status": "succeeded", "result": {"pong": true}}`)
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			d.cmds <- job // not answered: again on the next link
			return false
		}
		d.mu.Lock()
		d.answered[job] = true
		d.mu.Unlock()
	}
}

// runOperator calls the devices' function through every replica in turn,
// queueing a command every 100 ms.
func (w *clusterWorkload) runOperator() {
	clients := []*client.Client{w.api(0), w.api(1), w.api(2)}
	for i := 0; w.ctx.Err() == nil; i++ {
		d := w.devices[i%len(w.devices)]
		ctx, cancel := context.WithTimeout(w.ctx, 3*time.Second)
		_, _, err := clients[i%len(clients)].CallFunction(ctx, d.e.Path, "ping", nil, 0)
		cancel()
		if err == nil {
			w.jobs.Add(1)
		}
		select {
		case <-w.ctx.Done():
		case <-time.After(100 * time.Millisecond): // the operator's rate
		}
	}
}

// check proves, once the workload stopped and the cluster is whole: no
// acknowledged write or telemetry lost on any replica, the same change
// log on every replica, and a linearizable history.
func (w *clusterWorkload) check() {
	t := w.t
	for _, err := range w.errs {
		t.Error(err)
	}
	if w.acked.Load() == 0 {
		t.Fatal("no write was acknowledged")
	}
	// A final write through the leader marks the end of the log.
	leader := w.cp.waitLeader(30 * time.Second)
	ctx := context.Background()
	end, _, err := leader.admin().PutContext(ctx, "/lin/end", client.ContextUpdate{Type: "marker"})
	if err != nil {
		t.Fatal(err)
	}
	_ = end
	final := map[string]string{}
	for i, r := range w.cp.reps {
		c := w.api(i)
		if _, err := c.GetContextConsistent(ctx, "/lin/end"); err != nil {
			t.Fatalf("%s: the end marker: %v", r.id, err)
		}
		// Every key: the same value on every replica, and no acknowledged
		// write lost (the value is not one overwritten by an acknowledged
		// write that began after it was acknowledged).
		for k := range linKeys {
			key := fmt.Sprintf("/lin/k%d", k)
			x, err := c.GetContextConsistent(ctx, key)
			got, found := "", err == nil
			if found {
				got = registerValue(x)
			} else if !client.IsCode(err, "not_found") {
				t.Fatalf("%s: %s: %v", r.id, key, err)
			}
			// Recorded as reads after every write: the checker proves them too.
			w.rec.Read(100+i, key, func() (string, bool, error) { return got, found, nil })
			if i == 0 {
				final[key] = got
			} else if final[key] != got {
				t.Errorf("%s: %s = %q; %s has %q", r.id, key, got, w.cp.reps[0].id, final[key])
			}
			w.checkNotLost(r.id, key, got)
		}
		for _, d := range w.devices {
			x, err := c.GetContext(ctx, d.e.Path)
			if err != nil {
				t.Fatalf("%s: device %s: %v", r.id, d.e.Path, err)
			}
			seq, _ := strconv.ParseInt(string(x.Variables["seq"].Value), 10, 64)
			if acked := d.acked.Load(); acked >= 0 && seq < acked {
				t.Errorf("%s: device %s telemetry seq %d; %d was acknowledged", r.id, d.e.DeviceID, seq, acked)
			}
		}
	}
	// Delivery is at least once (docs/mqtt.md): a device runs each job id
	// at most once, as these do, so no command runs twice. Deliveries
	// after the result was acknowledged are counted, not refused: a
	// replica the device moved to may not have applied the result yet.
	answered, again := 0, 0
	for _, d := range w.devices {
		d.mu.Lock()
		answered += len(d.answered)
		again += len(d.again)
		d.mu.Unlock()
	}
	t.Logf("%d commands queued, %d run once each by the devices; %d delivered again after their result was acknowledged", w.jobs.Load(), answered, again)
	// A result the node acknowledged is durable: its job is final, and
	// stays so whatever replica acted on the job afterwards.
	notFinal := 0
	for _, d := range w.devices {
		d.mu.Lock()
		ids := make([]string, 0, len(d.answered))
		for id := range d.answered {
			ids = append(ids, id)
		}
		d.mu.Unlock()
		for _, id := range ids {
			j, err := leader.admin().GetJob(ctx, id)
			if err != nil {
				t.Errorf("job %s, answered by device %s: %v", id, d.e.DeviceID, err)
			} else if j.State != "succeeded" {
				notFinal++
				t.Errorf("job %s: state %s after device %s's result %q was acknowledged; history %+v", id, j.State, d.e.DeviceID, "succeeded", j.History)
			}
		}
	}
	t.Logf("%d jobs not final although their result was acknowledged", notFinal)
	if answered == 0 {
		t.Error("no command reached a device")
	}
	w.checkLogs()
	if err := w.rec.Check(2*time.Minute, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// checkNotLost fails when got, key's final value, is lost data: absent
// although a write was acknowledged, or written by a write that an
// acknowledged write strictly followed (acknowledged before the later
// one began).
func (w *clusterWorkload) checkNotLost(replica, key, got string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ops := w.writes[key]
	var lastAck *writeOp
	for i := range ops {
		if ops[i].acknowledge && (lastAck == nil || ops[i].ret.After(lastAck.ret)) {
			lastAck = &ops[i]
		}
	}
	if lastAck == nil {
		return
	}
	for _, op := range ops {
		if op.value != got {
			continue
		}
		if op.acknowledge && op.ret.Before(lastAck.call) {
			w.t.Errorf("%s: %s = %q, written before the acknowledged write of %q began: that write is lost", replica, key, got, lastAck.value)
		}
		return
	}
	w.t.Errorf("%s: %s = %q, which no client wrote; the last acknowledged write was %q", replica, key, got, lastAck.value)
}

// logEntry is a change as compared across replicas.
type logEntry struct {
	Seq  uint64
	Op   client.Op
	Path string
	Vars string
}

// checkLogs reads every replica's change stream up to the end marker and
// requires the same sequence numbers and entries everywhere.
func (w *clusterWorkload) checkLogs() {
	var first []logEntry
	for i, r := range w.cp.reps {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		s, err := w.api(i).Changes(ctx, "", 1)
		if err != nil {
			cancel()
			w.t.Fatalf("%s: change stream: %v", r.id, err)
		}
		var log []logEntry
		for {
			ch, err := s.Next()
			if err != nil {
				cancel()
				w.t.Fatalf("%s: change stream after %d entries: %v", r.id, len(log), err)
			}
			if ch.Reset {
				cancel()
				w.t.Fatalf("%s: the change stream reset at %d (the log was compacted)", r.id, ch.Seq)
			}
			vars, _ := json.Marshal(ch.Variables)
			log = append(log, logEntry{Seq: ch.Seq, Op: ch.Op, Path: ch.Path, Vars: string(vars)})
			if ch.Path == "/lin/end" && ch.Op == "put" {
				break
			}
		}
		s.Close()
		cancel()
		if i == 0 {
			first = log
			continue
		}
		if len(log) != len(first) {
			w.t.Errorf("%s: %d log entries up to the end marker; %s has %d", r.id, len(log), w.cp.reps[0].id, len(first))
		}
		for j := range min(len(log), len(first)) {
			if log[j] != first[j] {
				w.t.Errorf("%s: log entry %d = %+v; %s has %+v", r.id, j, log[j], w.cp.reps[0].id, first[j])
				break
			}
		}
	}
	w.t.Logf("every replica holds the same %d log entries", len(first))
}
