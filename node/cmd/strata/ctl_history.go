package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

func (x *ctl) historyCmd() *cobra.Command {
	var q client.HistoryQuery
	c := &cobra.Command{
		Use:   "history PATH --var NAME",
		Short: "Show the time series of a numeric or boolean variable",
		Long: `Show the history of variable NAME of the context at PATH: raw points,
or with --step one point per step (--agg avg, min, max, last or count).
--from and --to are RFC 3339 times, unix milliseconds, or a duration
before now (24h); the server's default range is the last hour. A
mounted path is read on the node that owns the device.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if q.Var == "" {
				return errors.New("--var is required")
			}
			now := time.Now()
			for _, p := range []*string{&q.From, &q.To} {
				if d, err := time.ParseDuration(*p); err == nil && *p != "" {
					*p = strconv.FormatInt(now.Add(-d).UnixMilli(), 10)
				}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				h, err := cl.History(ctx, args[0], q)
				if err != nil {
					return err
				}
				return x.show(h, func(w io.Writer) { printHistory(w, h) })
			})
		},
	}
	c.Flags().StringVar(&q.Var, "var", "", "the variable's name (required)")
	c.Flags().StringVar(&q.From, "from", "", "start: RFC 3339, unix ms, or a duration before now (24h)")
	c.Flags().StringVar(&q.To, "to", "", "end: RFC 3339, unix ms, or a duration before now (default now)")
	c.Flags().StringVar(&q.Step, "step", "", "one point per step (30s, 1m, 1h); default raw points")
	c.Flags().StringVar(&q.Agg, "agg", "", "aggregation per step: avg (default), min, max, last, count")
	return c
}

func printHistory(w io.Writer, h *client.History) {
	what := "raw"
	if h.Step > 0 {
		what = fmt.Sprintf("%s per %s", h.Agg, time.Duration(h.Step)*time.Millisecond)
	}
	fmt.Fprintf(w, "%s %s, %s, %s .. %s: %d points\n", h.Path, h.Var, what,
		time.UnixMilli(h.From).UTC().Format(time.RFC3339), time.UnixMilli(h.To).UTC().Format(time.RFC3339), len(h.Points))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tVALUE")
	for _, p := range h.Points {
		v := "-"
		if p.V != nil {
			v = strconv.FormatFloat(*p.V, 'g', -1, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\n", time.UnixMilli(p.T).UTC().Format("2006-01-02T15:04:05.000Z"), v)
	}
	tw.Flush()
}
