package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

func (x *ctl) treeCmd() *cobra.Command {
	var o client.TreeOptions
	c := &cobra.Command{
		Use:   "tree [PATH]",
		Short: "List contexts under PATH (default /)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path := "/"
			if len(args) == 1 {
				path = args[0]
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				t, err := cl.Tree(ctx, path, o)
				if err != nil {
					return err
				}
				return x.show(t, func(w io.Writer) { printTree(w, t) })
			})
		},
	}
	c.Flags().IntVar(&o.Depth, "depth", 1, "levels below PATH (1..8)")
	c.Flags().IntVar(&o.Limit, "limit", 0, "children per level (server default 1000)")
	c.Flags().StringVar(&o.After, "after", "", "list children after this name")
	return c
}

func printTree(w io.Writer, t *client.TreeNode) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Path, t.Type, t.Tenant)
	var walk func(n *client.TreeNode, indent string)
	walk = func(n *client.TreeNode, indent string) {
		for i := range n.Children {
			ch := &n.Children[i]
			fmt.Fprintf(tw, "%s%s\t%s\t%s\n", indent, ch.Name, ch.Type, ch.Tenant)
			walk(ch, indent+"  ")
		}
		if n.Next != "" {
			fmt.Fprintf(tw, "%s… more after %q (--after %s)\t\t\n", indent, n.Next, n.Next)
		}
	}
	walk(t, "  ")
	tw.Flush()
}

func (x *ctl) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get PATH",
		Short: "Show a context with its labels, variables and functions",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ctxt, err := cl.GetContext(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(ctxt, func(w io.Writer) { printContext(w, ctxt) })
			})
		},
	}
}

func printContext(w io.Writer, c *client.Context) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "path:\t%s\n", c.Path)
	fmt.Fprintf(tw, "type:\t%s\n", c.Type)
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(c.Tenant))
	fmt.Fprintf(tw, "version:\t%d\n", c.Version)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(c.Created))
	fmt.Fprintf(tw, "updated:\t%s\n", fmtTime(c.Updated))
	tw.Flush()
	if len(c.Labels) > 0 {
		fmt.Fprintln(w, "labels:")
		for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
			fmt.Fprintf(w, "  %s=%s\n", k, c.Labels[k])
		}
	}
	if len(c.Variables) > 0 {
		fmt.Fprintln(w, "variables:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tVALUE\tTYPE\tTIME\tQUALITY")
		for _, k := range slices.Sorted(maps.Keys(c.Variables)) {
			v := c.Variables[k]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", k, clip(string(v.Value), 60), v.Type, fmtTime(v.Time), orDash(v.Quality))
		}
		tw.Flush()
	}
	if len(c.Functions) > 0 {
		fmt.Fprintln(w, "functions:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range c.Functions {
			fmt.Fprintf(tw, "  %s\t%s\n", f.Name, f.Description)
		}
		tw.Flush()
	}
}

// clip shortens s to n runes for a table cell.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func (x *ctl) putCmd() *cobra.Command {
	var (
		typ, tenant, file string
		labels, vars      []string
	)
	c := &cobra.Command{
		Use:   "put PATH [--type T] [--label k=v]... [--var name=JSON]... [--tenant T] | put PATH --file BODY.json",
		Short: "Create or update a context (labels and variables merge)",
		Long: `Put creates the context at PATH or updates it. Labels and variables merge
into the existing ones; --label k= (empty value) removes label k. A --var
value is JSON: --var temp=21.5, --var mode='"auto"', --var cfg='{"a":1}'.
--file reads the whole request body ({"type", "labels", "variables",
"tenant"}) from a file, or from stdin with --file -.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var body client.ContextUpdate
			if file != "" {
				for _, f := range []string{"type", "tenant", "label", "var"} {
					if c.Flags().Changed(f) {
						return usageError{err: fmt.Errorf("--file and --%s cannot be combined", f), cmd: c.CommandPath()}
					}
				}
				b, err := x.readFile(file)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(b)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&body); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
			} else {
				body.Type, body.Tenant = typ, tenant
				var err error
				if body.Labels, err = parseLabels(labels); err != nil {
					return err
				}
				if body.Variables, err = parseVars(vars); err != nil {
					return err
				}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ctxt, created, err := cl.PutContext(ctx, args[0], body)
				if err != nil {
					return err
				}
				return x.show(ctxt, func(w io.Writer) {
					if created {
						fmt.Fprintf(w, "created %s\n", ctxt.Path)
					} else {
						fmt.Fprintf(w, "updated %s\n", ctxt.Path)
					}
					printContext(w, ctxt)
				})
			})
		},
	}
	f := c.Flags()
	f.StringVar(&typ, "type", "", "context type (device, group, folder, ...)")
	f.StringVar(&tenant, "tenant", "", "tenant (system administrators only)")
	f.StringArrayVar(&labels, "label", nil, "label k=v; k= removes it (repeatable)")
	f.StringArrayVar(&vars, "var", nil, "variable name=JSONVALUE (repeatable)")
	f.StringVar(&file, "file", "", "JSON request body file, - for stdin")
	return c
}

func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

func parseVars(kvs []string) (map[string]json.RawMessage, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]json.RawMessage, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--var %q: want name=JSONVALUE", kv)
		}
		if !json.Valid([]byte(v)) {
			return nil, fmt.Errorf("--var %s: %q is not JSON (quote strings: %s='\"text\"')", k, v, k)
		}
		m[k] = json.RawMessage(v)
	}
	return m, nil
}

// readFile reads a file, or stdin for "-".
func (x *ctl) readFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(x.stdin, 64<<20))
	}
	return os.ReadFile(name)
}

func (x *ctl) deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete PATH",
		Short: "Delete a context (it must have no children)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteContext(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "deleted %s\n", args[0])
				}
				return nil
			})
		},
	}
}

func (x *ctl) eventsCmd() *cobra.Command {
	var (
		q       client.EventQuery
		since   string
		subtree bool
	)
	c := &cobra.Command{
		Use:   "events PATH | events [PATH] --subtree",
		Short: "List a context's events, or a subtree's warnings and alerts, newest first",
		Long: "List a context's events, newest first. With --subtree, list the warnings and alerts\n" +
			"of the context at PATH (default /) and every context below it, mounted peers included\n" +
			"(the event feed); --level is then the lowest level shown: warning (default) or alert.",
		Args: cobra.RangeArgs(0, 1),
		RunE: func(c *cobra.Command, args []string) error {
			if subtree {
				if since != "" {
					return usageError{err: fmt.Errorf("--since cannot be combined with --subtree"), cmd: c.CommandPath()}
				}
				fq := client.FeedQuery{Path: "/", Level: q.Level, Limit: q.Limit, Before: q.Before}
				if len(args) == 1 {
					fq.Path = args[0]
				}
				return x.call(c, func(ctx context.Context, cl *client.Client) error {
					p, err := cl.Feed(ctx, fq)
					if err != nil {
						return err
					}
					return x.showEvents(p, true)
				})
			}
			if len(args) != 1 {
				return usageError{err: fmt.Errorf("events needs a PATH (or --subtree)"), cmd: c.CommandPath()}
			}
			if since != "" {
				t, err := time.Parse(time.RFC3339, since)
				if err != nil {
					return usageError{err: fmt.Errorf("--since: %w", err), cmd: c.CommandPath()}
				}
				q.Since = t
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				p, err := cl.Events(ctx, args[0], q)
				if err != nil {
					return err
				}
				return x.showEvents(p, false)
			})
		},
	}
	f := c.Flags()
	f.IntVar(&q.Limit, "limit", 0, "events per page (server default 100; 50 with --subtree)")
	f.StringVar(&q.Level, "level", "", "only events of this level: info, warning, alert (with --subtree: the lowest, warning or alert)")
	f.Uint64Var(&q.Before, "before", 0, "only events before this sequence number (paging)")
	f.StringVar(&since, "since", "", "only events at or after this RFC 3339 time")
	f.BoolVar(&subtree, "subtree", false, "the warnings and alerts of the whole subtree (the event feed)")
	return c
}

// showEvents prints a page of events, with their paths when they come
// from several contexts, and the paging hint.
func (x *ctl) showEvents(p *client.EventPage, paths bool) error {
	return x.show(p, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if paths {
			fmt.Fprintln(tw, "SEQ\tTIME\tLEVEL\tPATH\tNAME\tPAYLOAD")
		} else {
			fmt.Fprintln(tw, "SEQ\tTIME\tLEVEL\tNAME\tPAYLOAD")
		}
		for _, e := range p.Events {
			if paths {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, fmtTime(e.Time), e.Level, e.Path, orDash(e.Name), clip(string(e.Payload), 80))
			} else {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, fmtTime(e.Time), e.Level, orDash(e.Name), clip(string(e.Payload), 80))
			}
		}
		tw.Flush()
		if p.Next != 0 {
			fmt.Fprintf(x.stderr, "more: --before %d\n", p.Next)
		}
	})
}

func (x *ctl) eventCmd() *cobra.Command {
	var (
		e       client.NewEvent
		payload string
	)
	c := &cobra.Command{
		Use:   "event PATH --level LEVEL [--name NAME] [--payload JSON]",
		Short: "Record an event on a context",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if payload != "" {
				if !json.Valid([]byte(payload)) {
					return usageError{err: fmt.Errorf("--payload is not JSON"), cmd: c.CommandPath()}
				}
				e.Payload = json.RawMessage(payload)
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ev, err := cl.PostEvent(ctx, args[0], e)
				if err != nil {
					return err
				}
				return x.show(ev, func(w io.Writer) {
					fmt.Fprintf(w, "recorded event %d on %s\n", ev.Seq, ev.Path)
				})
			})
		},
	}
	f := c.Flags()
	f.StringVar(&e.Level, "level", "", "info, warning or alert")
	f.StringVar(&e.Name, "name", "", "event name")
	f.StringVar(&payload, "payload", "", "JSON payload")
	c.MarkFlagRequired("level")
	return c
}

func (x *ctl) watchCmd() *cobra.Command {
	var after uint64
	c := &cobra.Command{
		Use:   "watch [PATH]",
		Short: "Follow live changes under PATH (default /) until interrupted",
		Long: `Watch prints changes as they happen, one per line (-o json: one JSON object
per line). It reconnects by itself and resumes where it stopped, so no
change is printed twice or skipped; a "reset" line says the node no longer
had the changes since the cursor and the stream jumped to the present.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			cl, err := x.client()
			if err != nil {
				return err
			}
			defer cl.CloseIdleConnections()
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(x.stdout)
			err = cl.Watch(ctx, path, after, func(ch client.Change) error {
				if x.json() {
					if ch.Reset {
						return enc.Encode(map[string]any{"op": "reset", "seq": ch.Seq})
					}
					return enc.Encode(ch)
				}
				_, err := fmt.Fprintln(x.stdout, formatChange(ch))
				return err
			})
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil // interrupted: the normal way out
			}
			return err
		},
	}
	c.Flags().Uint64Var(&after, "after", 0, "start after this sequence number (default: what the node keeps)")
	return c
}

// formatChange renders a change on one line.
func formatChange(ch client.Change) string {
	if ch.Reset {
		return fmt.Sprintf("%d reset (changes were missed; continuing from the present)", ch.Seq)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s %s", ch.Seq, ch.Time.Local().Format(time.RFC3339Nano), ch.Op, ch.Path)
	if ch.Type != "" {
		fmt.Fprintf(&b, " type=%s", ch.Type)
	}
	if ch.Tenant != "" {
		fmt.Fprintf(&b, " tenant=%s", ch.Tenant)
	}
	for _, k := range slices.Sorted(maps.Keys(ch.Labels)) {
		fmt.Fprintf(&b, " label:%s=%s", k, ch.Labels[k])
	}
	for _, k := range slices.Sorted(maps.Keys(ch.Variables)) {
		fmt.Fprintf(&b, " %s=%s", k, clip(string(ch.Variables[k].Value), 60))
	}
	if e := ch.Event; e != nil {
		fmt.Fprintf(&b, " event=%s", e.Level)
		if e.Name != "" {
			fmt.Fprintf(&b, ":%s", e.Name)
		}
		if len(e.Payload) > 0 {
			fmt.Fprintf(&b, " %s", clip(string(e.Payload), 80))
		}
	}
	return b.String()
}
