package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// Exit codes of `ctl call` besides 0 (succeeded) and 1 (error).
const (
	exitJobFailed  = 3 // the job failed, expired or was cancelled
	exitJobPending = 4 // the job was not final when --wait ran out
)

func (x *ctl) jobsCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "jobs",
		Short: "Function calls on devices: list, get, cancel; bulk jobs: run, watch, failures, pause, resume, retry",
	})
	var q client.JobQuery
	var state string
	var bulk bool
	list := &cobra.Command{
		Use:   "list [--path P] [--state S] [--device D] [--limit N] [--before ID] | list --bulk [--limit N] [--before ID]",
		Short: "List jobs (with --bulk, bulk jobs), newest first",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q.State = client.JobState(state)
			if bulk && (q.Path != "" || q.State != "" || q.Device != "") {
				return usageError{err: fmt.Errorf("--bulk takes only --limit and --before"), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if bulk {
					return x.listBulk(ctx, cl, q.Before, q.Limit)
				}
				p, err := cl.ListJobs(ctx, q)
				if err != nil {
					return err
				}
				return x.show(p, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tCREATED\tSTATE\tFUNCTION\tPATH\tBY")
					for _, j := range p.Jobs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, fmtTime(j.Created), j.State, j.Function, j.Path, j.CreatedBy)
					}
					tw.Flush()
					if p.Next != "" {
						fmt.Fprintf(x.stderr, "more: --before %s\n", p.Next)
					}
				})
			})
		},
	}
	f := list.Flags()
	f.StringVar(&q.Path, "path", "", "only jobs of contexts under this path")
	f.StringVar(&state, "state", "", "only jobs in this state: queued, delivered, running, succeeded, failed, expired, cancelled")
	f.StringVar(&q.Device, "device", "", "only jobs of this device id")
	f.IntVar(&q.Limit, "limit", 0, "jobs per page (server default 100, at most 1000)")
	f.StringVar(&q.Before, "before", "", "only jobs created before this job id (paging)")
	f.BoolVar(&bulk, "bulk", false, "list bulk jobs, with their state and progress")

	var node string
	get := &cobra.Command{
		Use:   "get ID [--node /peers/NAME...]",
		Short: "Show a job with its result and history",
		Long: `Get shows a job of this node, or with --node a job owned by a node below
(the node a routed call answered with, e.g. /peers/eu/peers/plant7), read
through the federation links.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if node == "" && isBulkID(args[0]) {
					b, err := cl.GetBulkJob(ctx, args[0])
					if err != nil {
						return err
					}
					return x.show(b, func(w io.Writer) { printBulk(w, b) })
				}
				var j *client.Job
				var err error
				if node != "" {
					j, err = cl.GetJobOn(ctx, node, args[0])
				} else {
					j, err = cl.GetJob(ctx, args[0])
				}
				if err != nil {
					return err
				}
				return x.show(j, func(w io.Writer) { printJob(w, j) })
			})
		},
	}
	get.Flags().StringVar(&node, "node", "", "the node below owning the job (/peers/...)")
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job that is not final yet (a bulk job: here and on every node below)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if isBulkID(args[0]) {
					b, err := cl.CancelBulkJob(ctx, args[0])
					if err != nil {
						return err
					}
					return x.show(b, func(w io.Writer) { printBulk(w, b) })
				}
				j, err := cl.CancelJob(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(j, func(w io.Writer) { printJob(w, j) })
			})
		},
	}
	c.AddCommand(list, get, cancel, x.jobsRunCmd(), x.jobsWatchCmd(), x.jobsFailuresCmd(),
		x.jobsControlCmd("pause", "Pause a bulk job here and on every node below: no new device jobs until resumed", (*client.Client).PauseBulkJob),
		x.jobsControlCmd("resume", "Resume a paused bulk job (an operator's pause, a threshold's, a wave awaiting approval), here and below", (*client.Client).ResumeBulkJob),
		x.jobsControlCmd("retry", "Run a bulk job's failed and expired devices again, here and below (once each)", (*client.Client).RetryBulkJob))
	return c
}

func printJob(w io.Writer, j *client.Job) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "job:\t%s\n", j.ID)
	if j.Node != "" {
		fmt.Fprintf(tw, "node:\t%s\n", j.Node)
	}
	fmt.Fprintf(tw, "path:\t%s\n", j.Path)
	fmt.Fprintf(tw, "function:\t%s\n", j.Function)
	fmt.Fprintf(tw, "state:\t%s\n", j.State)
	fmt.Fprintf(tw, "created:\t%s by %s\n", fmtTime(j.Created), orDash(j.CreatedBy))
	fmt.Fprintf(tw, "deadline:\t%s\n", fmtTime(j.Deadline))
	fmt.Fprintf(tw, "updated:\t%s\n", fmtTime(j.Updated))
	if len(j.Args) > 0 && string(j.Args) != "{}" {
		fmt.Fprintf(tw, "args:\t%s\n", j.Args)
	}
	if len(j.Result) > 0 {
		fmt.Fprintf(tw, "result:\t%s\n", j.Result)
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", j.Error)
	}
	tw.Flush()
	if len(j.History) > 0 {
		fmt.Fprintln(w, "history:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range j.History {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", fmtTime(t.Time), t.State, t.Detail)
		}
		tw.Flush()
	}
}

func (x *ctl) callCmd() *cobra.Command {
	var (
		args      []string
		argsJSON  string
		wait, ttl time.Duration
	)
	c := &cobra.Command{
		Use:   "call PATH FUNCTION [--arg name=JSON]... [--args JSON] [--wait 30s] [--ttl D]",
		Short: "Call a function of a device and print the job",
		Long: `Call runs FUNCTION on the device whose context is PATH (/devices/<id>) and
waits up to --wait (at most 5m; 0 answers at once) for its outcome. The job
goes on when the wait runs out: follow it with "strata ctl jobs get ID".

Arguments are a JSON object: --args '{"count":3}', and/or --arg name=JSON
per argument (--arg count=3 --arg host='"a.example"'), which overrides the
same name in --args. --ttl is how long the device may still start it.

Exit status: 0 when the job succeeded (or, with --wait 0, was queued); 3
when it failed, expired or was cancelled; 4 when it was not final when
--wait ran out; 1 for any other error.`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, pos []string) error {
			a, err := parseCallArgs(argsJSON, args)
			if err != nil {
				return usageError{err: err, cmd: c.CommandPath()}
			}
			if wait < 0 || ttl < 0 {
				return usageError{err: fmt.Errorf("--wait and --ttl must not be negative"), cmd: c.CommandPath()}
			}
			return x.callFor(c, wait, func(ctx context.Context, cl *client.Client) error {
				j, _, err := cl.Call(ctx, pos[0], pos[1], client.Call{Args: a, Wait: wait, TTL: ttl})
				if err != nil {
					return err
				}
				if err := x.show(j, func(w io.Writer) { printJob(w, &j) }); err != nil {
					return err
				}
				return jobOutcome(&j, wait)
			})
		},
	}
	f := c.Flags()
	f.StringArrayVar(&args, "arg", nil, "argument name=JSONVALUE (repeatable)")
	f.StringVar(&argsJSON, "args", "", "arguments as a JSON object")
	f.DurationVar(&wait, "wait", 30*time.Second, "wait this long for the outcome (at most 5m; 0: do not wait)")
	f.DurationVar(&ttl, "ttl", 0, "the job expires this long from now (default: the node's, 1h)")
	return c
}

// jobOutcome is the error (and exit code) of a called job's state.
func jobOutcome(j *client.Job, wait time.Duration) error {
	switch {
	case j.State == client.JobSucceeded:
		return nil
	case j.State.Final():
		msg := fmt.Sprintf("job %s %s", j.ID, j.State)
		if j.Error != "" {
			msg += ": " + j.Error
		}
		return exitError{code: exitJobFailed, err: fmt.Errorf("%s", msg)}
	case wait > 0 && j.Node != "":
		return exitError{code: exitJobPending, err: fmt.Errorf("job %s still %s after %v; follow it with: strata ctl jobs get %s --node %s", j.ID, j.State, wait, j.ID, j.Node)}
	case wait > 0:
		return exitError{code: exitJobPending, err: fmt.Errorf("job %s still %s after %v; follow it with: strata ctl jobs get %s", j.ID, j.State, wait, j.ID)}
	}
	return nil
}

// parseCallArgs merges --args (a JSON object) and --arg name=JSON flags
// into one JSON object; nil when neither was given.
func parseCallArgs(argsJSON string, kvs []string) (json.RawMessage, error) {
	if argsJSON == "" && len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]json.RawMessage{}
	if argsJSON != "" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(argsJSON), &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("--args: want a JSON object such as '{\"count\":3}'")
		}
		m = obj
	}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--arg %q: want name=JSONVALUE", kv)
		}
		if !json.Valid([]byte(v)) {
			return nil, fmt.Errorf("--arg %s: %q is not JSON (quote strings: %s='\"text\"')", k, v, k)
		}
		m[k] = json.RawMessage(v)
	}
	return json.Marshal(m)
}

// listBulk prints a page of bulk jobs.
func (x *ctl) listBulk(ctx context.Context, cl *client.Client, before string, limit int) error {
	p, err := cl.ListBulkJobs(ctx, before, limit)
	if err != nil {
		return err
	}
	return x.show(p, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tSTATE\tFUNCTION\tDONE\tFAILED\tBY\tREASON")
		for _, j := range p.Jobs {
			c := j.Counters
			done := c.Succeeded + c.Failed + c.Expired + c.Cancelled
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", j.ID, fmtTime(j.Created), j.State, j.Function,
				done, c.Total, c.Failed+c.Expired, j.CreatedBy, orDash(j.Reason))
		}
		tw.Flush()
		if p.Next != "" {
			fmt.Fprintf(x.stderr, "more: --bulk --before %s\n", p.Next)
		}
	})
}
