package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/strata-dm/strata/node/client"
)

// Bulk jobs: strata ctl jobs run / watch / failures, and get and cancel
// of a bulk job's id (docs/cli.md, docs/jobs.md).

// isBulkID reports whether id has the form of a bulk job's id ("b" and
// 20 characters of an xid, without the "-<device>" of a device job).
func isBulkID(id string) bool {
	return len(id) == 21 && id[0] == 'b' && !strings.ContainsAny(id, "-/")
}

// parseKV parses k=v flags into a map; what names the flag in errors.
func parseKV(what string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", what, kv)
		}
		if old, dup := m[k]; dup && old != v {
			return nil, fmt.Errorf("--%s %s given twice", what, k)
		}
		m[k] = v
	}
	return m, nil
}

func (x *ctl) jobsRunCmd() *cobra.Command {
	var (
		filters, labels, paths, args []string
		subtree, argsJSON, deadline  string
		ttl                          time.Duration
		watch                        bool
		ro                           rolloutFlags
	)
	c := &cobra.Command{
		Use:   "run FUNCTION [--filter k=v]... [--paths P,...] [--subtree P] [--label k=v]... [--args JSON] [--watch]",
		Short: "Run a function on many devices, across the nodes below (a bulk job)",
		Long: `Run issues a bulk job: FUNCTION on every device the target selects, on this
node and on every node below it. The job is sent once per federation link;
each node runs it on its own devices, and counts progress that flows back up.

The target is every part given (AND):
  --filter k=v   a query parameter of "strata ctl search": path, type,
                 tenant, label.<key>, var.<name> (repeatable), e.g.
                 --filter path=/peers/eu --filter var.os=android
  --paths P,...  these device paths
  --subtree P    the devices at or below P ("/" for every device)
  --label k=v    the devices with this label (repeatable)

Arguments are as for "strata ctl call" (--args, --arg). --ttl or --deadline
(RFC 3339) bound how long devices may still start it (default 1h).
With --watch, follow its progress as "strata ctl jobs watch" does.

Rollout (docs/jobs.md "Rollouts"; each node applies it to its own devices):
  --waves 5,25,70          waves, in order, as percentages of the devices
  --success-threshold Q    a wave's succeeded devices that open the next
                           (Q: a count, or a percentage such as 95%)
  --approval               pause before each next wave until resumed
  --max-failures Q         failures that pause the job (2 or 2%), counted
  --min-finished N         once N devices finished (since the last resume)
  --rate R                 device jobs a second per node, multiplied by
  --rate-factor F          F each time --rate-every N devices succeeded,
  --rate-every N           up to --rate-max
  --max-concurrency N      device jobs not final at once per node
  --health-online          health gate: a device whose job succeeded
  --health-var name=value  counts as succeeded only once it is online and
                           shows each variable (repeatable; a value that
                           parses as JSON is that value, as in --filter)
  --health-within D        within D (10m) of its job's success, else as
                           failed
  --rollout JSON           the rollout object itself (the flags above
                           override its fields)`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, pos []string) error {
			usage := func(err error) error { return usageError{err: err, cmd: c.CommandPath()} }
			a, err := parseCallArgs(argsJSON, args)
			if err != nil {
				return usage(err)
			}
			var tg client.BulkTarget
			if tg.Filter, err = parseKV("filter", filters); err != nil {
				return usage(err)
			}
			if tg.Labels, err = parseKV("label", labels); err != nil {
				return usage(err)
			}
			tg.Paths, tg.Subtree = paths, subtree
			if tg.Filter == nil && tg.Labels == nil && tg.Paths == nil && tg.Subtree == "" {
				return usage(errors.New("give a target: --filter, --paths, --subtree or --label (--subtree / for every device)"))
			}
			nb := client.NewBulkJob{Function: pos[0], Args: a, Target: tg, Deadline: deadline}
			if nb.Rollout, err = ro.build(c); err != nil {
				return usage(err)
			}
			if ttl > 0 {
				nb.TTL = ttl.String()
			}
			var b *client.BulkJob
			err = x.call(c, func(ctx context.Context, cl *client.Client) error {
				b, err = cl.CreateBulkJob(ctx, nb)
				return err
			})
			if err != nil {
				return err
			}
			if !watch {
				return x.show(b, func(w io.Writer) { printBulk(w, b) })
			}
			if !x.json() {
				fmt.Fprintf(x.stdout, "bulk job %s\n", b.ID)
			}
			return x.watchBulk(c, b.ID, time.Second)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&filters, "filter", nil, "search parameter key=value (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	f.StringSliceVar(&paths, "paths", nil, "device paths, comma separated")
	f.StringVar(&subtree, "subtree", "", "the devices at or below this path")
	f.StringArrayVar(&args, "arg", nil, "argument name=JSONVALUE (repeatable)")
	f.StringVar(&argsJSON, "args", "", "arguments as a JSON object")
	f.DurationVar(&ttl, "ttl", 0, "the device jobs expire this long from now (default: the node's, 1h)")
	f.StringVar(&deadline, "deadline", "", "the device jobs expire at this RFC 3339 time")
	f.BoolVar(&watch, "watch", false, "follow the job's progress until it ends")
	ro.add(f)
	return c
}

// rolloutFlags are the rollout flags of jobs run.
type rolloutFlags struct {
	json                                string
	waves                               []string
	success, maxFailures                string
	approval                            bool
	minFinished, rateEvery, concurrency int
	rate, rateFactor, rateMax           float64
	healthOnline                        bool
	healthVars                          []string
	healthWithin                        string
}

func (r *rolloutFlags) add(f *pflag.FlagSet) {
	f.StringVar(&r.json, "rollout", "", "the rollout as a JSON object")
	f.StringSliceVar(&r.waves, "waves", nil, "waves as percentages of the devices, in order (5,25,70)")
	f.StringVar(&r.success, "success-threshold", "", "succeeded devices of a wave that open the next: N or N%")
	f.BoolVar(&r.approval, "approval", false, "pause before each next wave until resumed")
	f.StringVar(&r.maxFailures, "max-failures", "", "failures that pause the job: N or N%")
	f.IntVar(&r.minFinished, "min-finished", 0, "finished devices before --max-failures applies")
	f.Float64Var(&r.rate, "rate", 0, "device jobs a second per node")
	f.Float64Var(&r.rateFactor, "rate-factor", 0, "multiply the rate by this each --rate-every successes")
	f.IntVar(&r.rateEvery, "rate-every", 0, "successes between two rate increases")
	f.Float64Var(&r.rateMax, "rate-max", 0, "the highest rate, a second")
	f.IntVar(&r.concurrency, "max-concurrency", 0, "device jobs not final at once per node")
	f.BoolVar(&r.healthOnline, "health-online", false, "health gate: a device counts as succeeded once online again")
	f.StringArrayVar(&r.healthVars, "health-var", nil, "health gate: a variable name=value the device must show (repeatable)")
	f.StringVar(&r.healthWithin, "health-within", "", "health gate: how long after its job's success a device may take (10m)")
}

// quantity is a flag's count ("3") or percentage ("2%") as JSON.
func quantity(flag, v string) (any, error) {
	if strings.HasSuffix(v, "%") {
		return v, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want a count (3) or a percentage (2%%)", flag, v)
	}
	return n, nil
}

// build is the rollout object of the flags given (nil: none).
func (r *rolloutFlags) build(c *cobra.Command) (json.RawMessage, error) {
	obj := map[string]any{}
	if r.json != "" {
		if err := json.Unmarshal([]byte(r.json), &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("--rollout: want a JSON object")
		}
	}
	changed := c.Flags().Changed
	if changed("waves") {
		var ws []string
		for _, w := range r.waves {
			w = strings.TrimSpace(w)
			if !strings.HasSuffix(w, "%") {
				w += "%"
			}
			ws = append(ws, w)
		}
		obj["waves"] = ws
	}
	for flag, key := range map[string]string{"success-threshold": "success_threshold", "max-failures": "max_failures"} {
		if !changed(flag) {
			continue
		}
		v := r.success
		if flag == "max-failures" {
			v = r.maxFailures
		}
		q, err := quantity(flag, v)
		if err != nil {
			return nil, err
		}
		obj[key] = q
	}
	if changed("approval") {
		obj["approval"] = r.approval
	}
	if changed("min-finished") {
		obj["min_finished"] = r.minFinished
	}
	if changed("max-concurrency") {
		obj["max_concurrency"] = r.concurrency
	}
	if changed("rate") || changed("rate-factor") || changed("rate-every") || changed("rate-max") {
		rate, _ := obj["rate"].(map[string]any)
		if rate == nil {
			rate = map[string]any{}
		}
		for flag, key := range map[string]string{"rate": "per_second", "rate-factor": "factor", "rate-max": "max_per_second"} {
			if changed(flag) {
				v := map[string]float64{"rate": r.rate, "rate-factor": r.rateFactor, "rate-max": r.rateMax}[flag]
				rate[key] = v
			}
		}
		if changed("rate-every") {
			rate["every"] = r.rateEvery
		}
		obj["rate"] = rate
	}
	if changed("health-online") || changed("health-var") || changed("health-within") {
		health, _ := obj["health"].(map[string]any)
		if health == nil {
			health = map[string]any{}
		}
		if changed("health-online") {
			health["online"] = r.healthOnline
		}
		if changed("health-var") {
			kv, err := parseKV("health-var", r.healthVars)
			if err != nil {
				return nil, err
			}
			vars, _ := health["vars"].(map[string]any)
			if vars == nil {
				vars = map[string]any{}
			}
			for k, v := range kv {
				vars[k] = v
			}
			health["vars"] = vars
		}
		if changed("health-within") {
			health["within"] = r.healthWithin
		}
		obj["health"] = health
	}
	if len(obj) == 0 {
		return nil, nil
	}
	return json.Marshal(obj)
}

func (x *ctl) jobsControlCmd(verb, short string, do func(*client.Client, context.Context, string) (*client.BulkJob, error)) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, pos []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				b, err := do(cl, ctx, pos[0])
				if err != nil {
					return err
				}
				return x.show(b, func(w io.Writer) { printBulk(w, b) })
			})
		},
	}
}

func (x *ctl) jobsWatchCmd() *cobra.Command {
	var every time.Duration
	c := &cobra.Command{
		Use:   "watch ID [--every 1s]",
		Short: "Follow a bulk job's progress until it ends",
		Long: `Watch shows a bulk job's progress, over every node and per node below, until
it is done or cancelled: progress bars on a terminal, a line per change
otherwise (-o json: the job as JSON at each change). Exit status: 0 when
every device succeeded, 3 when some failed, expired or were cancelled.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, pos []string) error {
			if every < 100*time.Millisecond {
				return usageError{err: errors.New("--every must be at least 100ms"), cmd: c.CommandPath()}
			}
			return x.watchBulk(c, pos[0], every)
		},
	}
	c.Flags().DurationVar(&every, "every", time.Second, "how often to read the job")
	return c
}

func (x *ctl) jobsFailuresCmd() *cobra.Command {
	var (
		after string
		limit int
	)
	c := &cobra.Command{
		Use:   "failures ID [--after CURSOR] [--limit N]",
		Short: "List a bulk job's failed devices with their errors",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, pos []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				p, err := cl.BulkFailures(ctx, pos[0], after, limit)
				if err != nil {
					return err
				}
				return x.show(p, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "TIME\tSTATE\tPATH\tJOB\tERROR")
					for _, f := range p.Failures {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTime(f.Time), f.State, f.Path, orDash(f.Job), f.Error)
					}
					tw.Flush()
					if p.Next != "" {
						fmt.Fprintf(x.stderr, "more: --after %s\n", p.Next)
					}
				})
			})
		},
	}
	c.Flags().StringVar(&after, "after", "", "the cursor of the previous page")
	c.Flags().IntVar(&limit, "limit", 0, "failures per page (server default 100, at most 1000)")
	return c
}

// watchBulk reads bulk job id every interval until it ends.
func (x *ctl) watchBulk(c *cobra.Command, id string, every time.Duration) error {
	cl, err := x.client()
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	ctx := c.Context()
	var view bulkView
	switch {
	case x.json():
		view = &jsonView{x: x}
	case isTerminalWriter(x.stdout):
		view = newBarView(ctx, x.stdout)
	default:
		view = &lineView{w: x.stdout}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, x.f.timeout)
		b, err := cl.GetBulkJob(rctx, id)
		cancel()
		if err != nil {
			view.stop()
			return err
		}
		view.update(b)
		if b.State == client.BulkDone || b.State == client.BulkCancelled {
			view.stop()
			return bulkOutcome(b)
		}
		select {
		case <-ctx.Done():
			view.stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// bulkOutcome is the error (and exit code) of a finished bulk job.
func bulkOutcome(b *client.BulkJob) error {
	c := b.Counters
	if b.State == client.BulkDone && c.Succeeded == c.Total {
		return nil
	}
	return exitError{code: exitJobFailed, err: fmt.Errorf("bulk job %s %s: %d of %d succeeded, %d failed, %d expired, %d cancelled (strata ctl jobs failures %s)",
		b.ID, b.State, c.Succeeded, c.Total, c.Failed, c.Expired, c.Cancelled, b.ID)}
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

// bulkView shows a bulk job's progress as it is read.
type bulkView interface {
	update(b *client.BulkJob)
	stop()
}

type jsonView struct {
	x    *ctl
	last string
}

func (v *jsonView) update(b *client.BulkJob) {
	s := fmt.Sprint(b.State, b.Counters)
	if s != v.last {
		v.last = s
		v.x.printJSON(b)
	}
}

func (v *jsonView) stop() {}

// lineView prints a line when the counters change.
type lineView struct {
	w    io.Writer
	last string
}

func (v *lineView) update(b *client.BulkJob) {
	c := b.Counters
	s := fmt.Sprintf("%s %s: %d/%d finished (succeeded %d, failed %d, expired %d, cancelled %d; queued %d, delivered %d, running %d, verifying %d)",
		b.ID, b.State, c.Finished(), c.Total, c.Succeeded, c.Failed, c.Expired, c.Cancelled, c.Queued, c.Delivered, c.Running, c.Verifying)
	if len(b.Waves) > 1 {
		s += "; waves:"
		for i, w := range b.Waves {
			s += fmt.Sprintf(" %d %s %d/%d", i+1, w.State, w.Counters.Finished(), w.Size)
		}
	}
	if b.Reason != "" {
		s += " (" + b.Reason + ")"
	}
	if s != v.last {
		v.last = s
		fmt.Fprintf(v.w, "%s %s\n", time.Now().Format(time.TimeOnly), s)
	}
}

func (v *lineView) stop() {}

// barView draws one bar for the whole job and one per node (this one
// and each below), each finished devices of its total.
type barView struct {
	p      *mpb.Progress
	bars   map[string]*mpb.Bar
	states map[string]*barState
}

func newBarView(ctx context.Context, w io.Writer) *barView {
	return &barView{p: mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithAutoRefresh(), mpb.WithWidth(40)),
		bars: map[string]*mpb.Bar{}, states: map[string]*barState{}}
}

// bar creates or moves the bar called name to counters c: finished
// devices of the total (a node with none shows full once it is done).
func (v *barView) bar(name string, c client.BulkCounters, state client.BulkState) {
	b, ok := v.bars[name]
	if !ok {
		st := &barState{}
		b = v.p.New(1, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.Any(st.countsText, decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}), decor.Any(st.text)),
		)
		v.bars[name], v.states[name] = b, st
	}
	v.states[name].set(c, state)
	total, cur := int64(c.Total), int64(c.Finished())
	if total == 0 {
		total, cur = 1, 0
		if state == client.BulkDone || state == client.BulkCancelled {
			cur = 1
		}
	}
	b.SetTotal(total, false)
	b.SetCurrent(cur)
}

// barState is the counters shown beside a bar.
type barState struct {
	mu     sync.Mutex
	counts string
	s      string
}

func (s *barState) countsText(decor.Statistics) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

func (s *barState) text(decor.Statistics) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}

func (s *barState) set(c client.BulkCounters, state client.BulkState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = fmt.Sprintf("%d/%d", c.Finished(), c.Total)
	s.s = fmt.Sprintf(" ok %d failed %d expired %d cancelled %d", c.Succeeded, c.Failed, c.Expired, c.Cancelled)
	if state == client.BulkPaused || state == client.BulkPending {
		s.s += " " + string(state)
	}
}

func (v *barView) update(b *client.BulkJob) {
	v.bar("all", b.Counters, b.State)
	if len(b.Waves) > 1 {
		for i, w := range b.Waves {
			v.bar(fmt.Sprintf("wave %d", i+1), w.Counters, w.State)
		}
	}
	v.bar("this node", b.Local.BulkCounters, b.Local.State)
	peers := make([]string, 0, len(b.Peers))
	for p := range b.Peers {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	for _, p := range peers {
		v.bar(p, b.Peers[p].BulkCounters, b.Peers[p].State)
	}
}

func (v *barView) stop() {
	for name, b := range v.bars {
		if !b.Completed() {
			b.SetTotal(-1, true) // complete where it is: drawn once more
		}
		delete(v.bars, name)
	}
	v.p.Wait()
}

// printBulk prints a bulk job as text.
func printBulk(w io.Writer, b *client.BulkJob) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "bulk job:\t%s\n", b.ID)
	fmt.Fprintf(tw, "function:\t%s\n", b.Function)
	if len(b.Args) > 0 && string(b.Args) != "{}" {
		fmt.Fprintf(tw, "args:\t%s\n", b.Args)
	}
	fmt.Fprintf(tw, "state:\t%s\n", b.State)
	if b.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", b.Reason)
	}
	if b.Attempt > 0 {
		fmt.Fprintf(tw, "attempt:\t%d (retries of the failed)\n", b.Attempt)
	}
	fmt.Fprintf(tw, "created:\t%s by %s\n", fmtTime(b.Created), orDash(b.CreatedBy))
	fmt.Fprintf(tw, "deadline:\t%s\n", fmtTime(b.Deadline))
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tTOTAL\tPENDING\tQUEUED\tDELIVERED\tRUNNING\tVERIFYING\tSUCCEEDED\tFAILED\tEXPIRED\tCANCELLED\tERROR")
	row := func(name string, state client.BulkState, c client.BulkCounters, e string) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, state, c.Total, c.Pending, c.Queued, c.Delivered, c.Running,
			c.Verifying, c.Succeeded, c.Failed, c.Expired, c.Cancelled, e)
	}
	row("(all)", b.State, b.Counters, "")
	if len(b.Waves) > 1 {
		for i, w := range b.Waves {
			row(fmt.Sprintf("(wave %d)", i+1), w.State, w.Counters, "")
		}
	}
	row("/", b.Local.State, b.Local.BulkCounters, "")
	peers := make([]string, 0, len(b.Peers))
	for p := range b.Peers {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	for _, p := range peers {
		e := b.Peers[p].Error
		if e == "" {
			e = b.Peers[p].Reason
		}
		row(p, b.Peers[p].State, b.Peers[p].BulkCounters, e)
	}
	tw.Flush()
}
