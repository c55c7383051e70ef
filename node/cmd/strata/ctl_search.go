package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

func (x *ctl) searchCmd() *cobra.Command {
	var (
		q       client.SearchQuery
		columns []string
	)
	c := &cobra.Command{
		Use:   "search [KEY=VALUE...]",
		Short: "Search contexts by type, labels and variables (inventory)",
		Long: `Search lists the contexts of a subtree (--path, default /; mounted peers
included) that match every filter, a page at a time, as GET /api/v1/search
does. A filter KEY=VALUE is a label (site=lyon, or label.site=lyon) or a
variable (var.os=linux); a variable's VALUE is JSON when it parses as JSON
(var.cpus=4 the number, var.ok=true), else a string.

--sort orders by path (default), name, type, tenant, label.KEY or var.NAME,
with a leading - for descending; --count adds the number of matches.
--columns adds labels and variables to the table (label.site,var.os).
When more match, the next page's --after is printed on stderr.`,
		Example: `  strata ctl search --path /peers/eu --type device site=plant-7 var.os=linux
  strata ctl search --type device --sort -var.temp --columns var.temp,label.site --limit 20 --count`,
		RunE: func(c *cobra.Command, args []string) error {
			for _, a := range args {
				key, val, ok := strings.Cut(a, "=")
				if !ok || key == "" {
					return usageError{err: fmt.Errorf("filter %q: want KEY=VALUE", a), cmd: c.CommandPath()}
				}
				if err := addFilter(&q, key, val); err != nil {
					return usageError{err: err, cmd: c.CommandPath()}
				}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				page, err := cl.Search(ctx, q)
				if err != nil {
					return err
				}
				if page.Next != "" {
					fmt.Fprintf(x.stderr, "more: --after %s\n", page.Next)
				}
				return x.show(page, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprint(tw, "PATH\tTYPE\tTENANT")
					for _, col := range columns {
						fmt.Fprint(tw, "\t"+strings.ToUpper(col))
					}
					fmt.Fprintln(tw)
					for _, ctx := range page.Contexts {
						fmt.Fprintf(tw, "%s\t%s\t%s", ctx.Path, ctx.Type, orDash(ctx.Tenant))
						for _, col := range columns {
							fmt.Fprint(tw, "\t"+clip(searchCell(&ctx, col), 40))
						}
						fmt.Fprintln(tw)
					}
					tw.Flush()
					if q.Count {
						more := ""
						if page.TotalCapped {
							more = " (at least)"
						}
						fmt.Fprintf(w, "%d matching%s\n", page.Total, more)
					}
				})
			})
		},
	}
	f := c.Flags()
	f.StringVar(&q.Path, "path", "", "subtree searched (default /)")
	f.StringVar(&q.Type, "type", "", "context type, e.g. device")
	f.StringVar(&q.Tenant, "tenant", "", "only this tenant's contexts")
	f.StringVar(&q.Sort, "sort", "", "order: path (default), name, type, tenant, label.KEY or var.NAME; - for descending")
	f.BoolVar(&q.Count, "count", false, "also count every match")
	f.StringVar(&q.After, "after", "", "the cursor printed by the previous page")
	f.IntVar(&q.Limit, "limit", 0, "contexts per page (server default 100, at most 1000)")
	f.StringSliceVar(&columns, "columns", nil, "labels and variables shown as columns (label.site,var.os)")
	return c
}

// addFilter adds one KEY=VALUE filter to q: label.KEY or a bare KEY is a
// label, var.NAME a variable (JSON when VALUE parses as JSON).
func addFilter(q *client.SearchQuery, key, val string) error {
	if name, ok := strings.CutPrefix(key, "var."); ok {
		if q.Vars == nil {
			q.Vars = map[string]any{}
		}
		if _, dup := q.Vars[name]; dup {
			return fmt.Errorf("filter %s given twice", key)
		}
		if json.Valid([]byte(val)) {
			q.Vars[name] = json.RawMessage(val)
		} else {
			q.Vars[name] = val
		}
		return nil
	}
	key = strings.TrimPrefix(key, "label.")
	if q.Labels == nil {
		q.Labels = map[string]string{}
	}
	if _, dup := q.Labels[key]; dup {
		return fmt.Errorf("filter label.%s given twice", key)
	}
	q.Labels[key] = val
	return nil
}

// searchCell is a context's label.KEY or var.NAME as text ("" when absent).
func searchCell(c *client.Context, col string) string {
	if name, ok := strings.CutPrefix(col, "var."); ok {
		v, ok := c.Variables[name]
		if !ok {
			return ""
		}
		var s string
		if json.Unmarshal(v.Value, &s) == nil {
			return s
		}
		return string(v.Value)
	}
	return c.Labels[strings.TrimPrefix(col, "label.")]
}
