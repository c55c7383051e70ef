package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// Federation commands of ctl (docs/federation.md, "Operating federation").

func (x *ctl) peersCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "peers",
		Short: "Federation links: the peers mounted here and the consumers this node publishes to",
		Long: `Peers lists every federation link of the node, both directions: providers
(nodes below, mounted at /peers/<name>) and consumers (nodes above, which
this node publishes to). CURSOR is the provider's sequence number applied
(provider) or acknowledged (consumer); LAG is how far behind that is (0
once caught up, even on an idle link). LAST ERROR is what affects the
link now, with its time (UTC); it is cleared once the link is connected
again (--json shows it as previous_error).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ps, err := cl.Peers(ctx)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"peers": ps}, func(w io.Writer) { printPeers(w, ps) })
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Refuse a provider's certificates and drop its link (its mirror stays, frozen)",
		Long: `Revoke refuses the node certificates of the provider NAME from now on and
drops its link. Its mirror at /peers/NAME stays, frozen, until it joins
again with a new token ("strata token create --kind peer --peer NAME").`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.RevokePeer(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "revoked peer %s\n", args[0])
				}
				return nil
			})
		},
	}
	c.AddCommand(revoke)
	return c
}

func printPeers(w io.Writer, ps []client.Peer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIRECTION\tSTATE\tGRANT\tCURSOR\tLAG\tRTT\tLAST ERROR")
	for _, p := range ps {
		name := p.Name
		if name == "" {
			name = "(" + p.Address + ")"
		}
		lag := fmt.Sprintf("%d", p.LagEntries)
		if p.LagSeconds > 0 {
			lag += fmt.Sprintf(" (%.1fs)", p.LagSeconds)
		}
		rtt := "-"
		if p.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.1fms", p.RTTMillis)
		}
		lastErr := p.LastError
		if lastErr != "" && !p.LastErrorTime.IsZero() {
			lastErr = p.LastErrorTime.UTC().Format("15:04:05Z") + " " + lastErr
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, p.Direction, p.State, orDash(p.Grant), p.Cursor, lag, rtt,
			orDash(clip(lastErr, 70)))
	}
	tw.Flush()
}

func (x *ctl) federationCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "federation",
		Short: "Federation checks: verify",
	})
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Compare every mount with its provider; exit status 1 when one differs or fails",
		Long: `Verify compares the digest of every mirror at /peers/<name> with the digest
of what its provider publishes, at the same sequence number. It prints one
line per mount: peer, mount, match or differs (or failed, with the error),
and the number of contexts compared. The exit status is 1 when any mount
differs or could not be checked.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ms, err := cl.VerifyFederation(ctx)
				if err != nil {
					return err
				}
				bad := 0
				for _, m := range ms {
					if !m.Match || m.Error != "" {
						bad++
					}
				}
				if err := x.show(map[string]any{"mounts": ms}, func(w io.Writer) { printVerify(w, ms) }); err != nil {
					return err
				}
				if bad > 0 {
					return fmt.Errorf("%d of %d mounts differ from their provider or could not be checked", bad, len(ms))
				}
				return nil
			})
		},
	}
	c.AddCommand(verify)
	return c
}

func printVerify(w io.Writer, ms []client.MountCheck) {
	if len(ms) == 0 {
		fmt.Fprintln(w, "no mounts")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range ms {
		result := "match"
		switch {
		case m.Error != "":
			result = "failed: " + m.Error
		case !m.Match:
			result = "differs"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d contexts\tseq %d\n", m.Peer, m.Mount, result, m.Contexts, m.Seq)
	}
	tw.Flush()
}

func (x *ctl) auditCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "audit [--limit N]",
		Short: "The audit trail: operator actions on this node and requests over links, newest first",
		Long: `Audit lists the audit trail, newest first: every state-changing action
made on this node's API (contexts, events, calls, jobs, users, tokens,
enrollment tokens, devices, peers, federation), refused attempts included,
and every call and live read a consumer sent down to this node, with the
operator (user and tenant) at the tier where it started and the nodes it
came through (VIA). A call's OUTCOME is "pending" until its job ends, then
the job's final state. System administrators see everything; a tenant
administrator (admin on /) sees its tenant's records.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError{err: fmt.Errorf("--limit must not be negative"), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				rs, err := cl.Audit(ctx, limit)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"records": rs}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "TIME\tVIA\tUSER\tTENANT\tOP\tPATH\tFUNCTION\tTARGET\tOUTCOME")
					for _, r := range rs {
						via := r.Consumer
						if len(r.Via) > 0 {
							via = strings.Join(r.Via, ">")
						}
						target := r.Target
						if r.Job != "" {
							target = "job " + r.Job
						}
						outcome := r.Outcome
						if r.Error != "" && !strings.HasPrefix(r.Error, r.Outcome+":") {
							outcome += ": " + r.Error
						} else if r.Error != "" {
							outcome = r.Error // the message already starts with its code
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(r.Time), orDash(via), orDash(r.User), orDash(r.Tenant),
							r.Op, orDash(r.Path), orDash(r.Function), orDash(target), clip(outcome, 60))
					}
					tw.Flush()
				})
			})
		},
	}
	c.Flags().IntVar(&limit, "limit", 0, "records to show (server default 100, at most 10000)")
	return c
}
