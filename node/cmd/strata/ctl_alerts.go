package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// Alert commands of ctl (docs/alerts.md).

func (x *ctl) alertsCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "alerts",
		Short: "Alerts (this node's and the nodes' below): list, ack, silence; their rules",
	})
	var q client.AlertQuery
	list := &cobra.Command{
		Use:   "list [--path P] [--state pending|firing|resolved] [--limit N] [--after PATH]",
		Short: "List alerts under a path (default /: this node's and its mirrors'), in path order",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				p, err := cl.Alerts(ctx, q)
				if err != nil {
					return err
				}
				return x.show(p, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "PATH\tSTATE\tSEVERITY\tSINCE\tDEVICE\tVALUE\tACKED\tSILENCED\tESCALATION\tSUMMARY")
					for _, a := range p.Alerts {
						acked, silenced := "-", "-"
						if a.Acked {
							acked = orDash(a.AckedBy)
						}
						if a.Silenced {
							silenced = "until " + fmtTime(a.SilencedUntil)
						}
						esc := "-"
						if a.Escalation > 0 {
							esc = fmt.Sprint(a.Escalation)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Path, a.State, a.Severity, fmtTime(a.Since),
							a.Device, orDash(clip(string(a.Value), 40)), acked, silenced, esc, a.Summary)
					}
					tw.Flush()
					if p.Next != "" {
						fmt.Fprintf(x.stderr, "more: --after %s\n", p.Next)
					}
				})
			})
		},
	}
	f := list.Flags()
	f.StringVar(&q.Path, "path", "", "only alerts under this path (e.g. /peers/eu)")
	f.StringVar(&q.State, "state", "", "only alerts in this state: pending, firing, resolved")
	f.IntVar(&q.Limit, "limit", 0, "alerts per page (server default 100, at most 1000)")
	f.StringVar(&q.After, "after", "", "the path printed as more: of the previous page")

	ack := &cobra.Command{
		Use:   "ack PATH",
		Short: "Acknowledge an alert (/alerts/ID, or ID, or a mirrored alert's path under /peers)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				a, err := cl.AckAlert(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(a, func(w io.Writer) { fmt.Fprintf(w, "acknowledged %s (%s) by %s\n", args[0], a.State, a.AckedBy) })
			})
		},
	}
	var until string
	var forD time.Duration
	silence := &cobra.Command{
		Use:   "silence PATH (--for D | --until TIME)",
		Short: "Silence an alert's notifications for a while (--for 0s lifts the silence)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var t time.Time
			switch {
			case until != "" && c.Flags().Changed("for"):
				return usageError{err: errors.New("give --for or --until, not both"), cmd: c.CommandPath()}
			case until != "":
				var err error
				if t, err = time.Parse(time.RFC3339, until); err != nil {
					return usageError{err: fmt.Errorf("--until: %v", err), cmd: c.CommandPath()}
				}
			case c.Flags().Changed("for"):
				t = time.Now().Add(forD)
				if forD <= 0 {
					t = time.Now().Add(-time.Second)
				}
			default:
				return usageError{err: errors.New("--for or --until is required"), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				a, err := cl.SilenceAlert(ctx, args[0], t)
				if err != nil {
					return err
				}
				return x.show(a, func(w io.Writer) {
					if a.Silenced {
						fmt.Fprintf(w, "silenced %s until %s\n", args[0], fmtTime(a.SilencedUntil))
					} else {
						fmt.Fprintf(w, "%s is not silenced\n", args[0])
					}
				})
			})
		},
	}
	silence.Flags().StringVar(&until, "until", "", "silence until this time (RFC 3339)")
	silence.Flags().DurationVar(&forD, "for", 0, "silence for this long from now")
	c.AddCommand(list, ack, silence, x.alertRulesCmd())
	return c
}

func (x *ctl) alertRulesCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "rules",
		Short: "Alert rules of this node: list, create, delete",
	})
	list := &cobra.Command{
		Use:   "list",
		Short: "List the alert rules you see",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				rs, err := cl.AlertRules(ctx)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"rules": rs}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tNAME\tKIND\tCONDITION\tFOR\tSEVERITY\tSELECTOR\tTENANT")
					for _, r := range rs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Kind, condition(r), orDash(r.For),
							r.Severity, selector(r.Selector), orDash(r.Tenant))
					}
					tw.Flush()
				})
			})
		},
	}
	var (
		r        client.AlertRule
		value    float64
		file     string
		selLabel map[string]string
	)
	create := &cobra.Command{
		Use:   "create (--file FILE | --name N --kind K [...])",
		Short: "Create an alert rule from flags, or from a JSON file (--file -: stdin)",
		Long: `Create makes an alert rule of this node (docs/alerts.md). Kinds:

  threshold  --var temp --op '>' --value 80 [--for 30s]
  offline    [--for 5m]
  event      [--event 'overheat*'] [--level warning] [--for 5m]
  rate       --var temp --op '>' --value 0.5 [--window 1m] [--for 0s]

--path, --type and --selector-label choose the devices (default every
device under /devices); --label adds labels to the rule's alerts.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			spec := r
			if file != "" {
				for _, name := range ruleFlags {
					if c.Flags().Changed(name) {
						return usageError{err: fmt.Errorf("--file takes no other rule flag (--%s)", name), cmd: c.CommandPath()}
					}
				}
				b, err := x.readFile(file)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(b)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&spec); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
			} else {
				if c.Flags().Changed("value") {
					spec.Value = &value
				}
				spec.Selector.Labels = selLabel
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				out, err := cl.CreateAlertRule(ctx, spec)
				if err != nil {
					return err
				}
				return x.show(out, func(w io.Writer) { fmt.Fprintf(w, "created alert rule %s (%s)\n", out.ID, out.Name) })
			})
		},
	}
	f := create.Flags()
	f.StringVar(&file, "file", "", "the rule as JSON (the body of POST /api/v1/alert-rules)")
	f.StringVar(&r.Name, "name", "", "the rule's name (label alertname of its alerts)")
	f.StringVar(&r.Kind, "kind", "", "threshold, offline, event or rate")
	f.StringVar(&r.Var, "var", "", "threshold, rate: the variable")
	f.StringVar(&r.Op, "op", "", "threshold, rate: > >= < <= == !=")
	f.Float64Var(&value, "value", 0, "threshold, rate: the value compared with (rate: per second)")
	f.StringVar(&r.For, "for", "", "how long the condition holds before firing (event: how long it stays firing after the last event)")
	f.StringVar(&r.Window, "window", "", "rate: the window")
	f.StringVar(&r.Event, "event", "", "event: name glob")
	f.StringVar(&r.Level, "level", "", "event: lowest level (info, warning, alert)")
	f.StringVar(&r.Severity, "severity", "", "info, warning (default) or critical")
	f.StringSliceVar(&r.Escalate, "escalate", nil, "escalation steps after firing, ascending (e.g. 15m,1h): the alert's label escalation while not acknowledged")
	f.StringVar(&r.Selector.Path, "path", "", "the devices under this path (default /devices)")
	f.StringVar(&r.Selector.Type, "type", "", "the contexts of this type (default device)")
	f.StringToStringVar(&selLabel, "selector-label", nil, "only devices with this label (k=v, repeatable)")
	f.StringToStringVar(&r.Labels, "label", nil, "a label of the rule's alerts (k=v, repeatable)")
	f.StringVar(&r.Tenant, "tenant", "", "system users: the tenant whose devices the rule watches (default every tenant)")
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an alert rule (its active alerts resolve)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteAlertRule(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "deleted alert rule %s\n", args[0])
				}
				return nil
			})
		},
	}
	c.AddCommand(list, create, del)
	return c
}

// ruleFlags are the flags of rules create that --file excludes.
var ruleFlags = []string{"name", "kind", "var", "op", "value", "for", "window", "event", "level", "severity",
	"path", "type", "selector-label", "label", "tenant", "escalate"}

func condition(r client.AlertRule) string {
	switch r.Kind {
	case "threshold", "rate":
		v := "?"
		if r.Value != nil {
			v = fmt.Sprint(*r.Value)
		}
		s := r.Var + " " + r.Op + " " + v
		if r.Kind == "rate" {
			s = "rate(" + r.Var + ", " + r.Window + ") " + r.Op + " " + v
		}
		return s
	case "event":
		return r.Event + " >= " + r.Level
	}
	return "offline"
}

func selector(s client.AlertSelector) string {
	out := s.Path
	if s.Type != "" && s.Type != "device" {
		out += " type=" + s.Type
	}
	for k, v := range s.Labels {
		out += " " + k + "=" + v
	}
	return out
}
