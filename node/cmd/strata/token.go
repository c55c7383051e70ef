package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// Token kinds of `strata token --kind`.
const (
	kindEnroll = "enroll" // device enrollment tokens
	kindPeer   = "peer"   // federation join tokens for peer nodes below this one
)

// tokenCmd is `strata token`: the tokens a node hands out to what joins
// it (devices now, peer nodes with federation). It reaches the node
// exactly as ctl does, with the same flags. API tokens of operators are
// `strata ctl tokens`.
func (a *app) tokenCmd() *cobra.Command {
	x := &ctl{app: a}
	c := group(&cobra.Command{
		Use:   "token",
		Short: "Manage the tokens devices enroll with (--kind enroll) and peers join with (--kind peer)",
		Long: `Token manages a running node's join tokens: --kind enroll for devices (see
docs/mqtt.md, "Enrollment"), --kind peer for nodes that join this one in a
federation (see docs/federation.md). Operator API tokens are "strata ctl
tokens".

It reaches the node as ctl does: the node of the config file (--config,
else $STRATA_CONFIG, else ./strata.yaml) with the CA and admin.token beside
it.

` + targetHelp,
	})
	x.addTargetFlags(c)
	c.AddCommand(x.tokenCreateCmd(), x.tokenListCmd(), x.tokenRevokeCmd())
	return c
}

// addKindFlag adds the required --kind flag.
func addKindFlag(c *cobra.Command, kind *string) {
	c.Flags().StringVar(kind, "kind", "", "token kind: enroll or peer")
	c.MarkFlagRequired("kind")
}

// checkKind accepts --kind enroll, and peer where peer tokens apply
// (create): peer tokens are used once and are neither listed nor revoked;
// a joined peer is revoked with "strata ctl peers revoke".
func checkKind(c *cobra.Command, kind string, peerOK bool) error {
	switch kind {
	case kindEnroll:
		return nil
	case kindPeer:
		if peerOK {
			return nil
		}
		return usageError{err: fmt.Errorf("--kind peer: peer tokens are used once and not kept; " +
			`see the links with "strata ctl peers" and revoke a joined peer with "strata ctl peers revoke NAME"`), cmd: c.CommandPath()}
	}
	return usageError{err: fmt.Errorf("--kind %q: want enroll or peer", kind), cmd: c.CommandPath()}
}

func (x *ctl) tokenCreateCmd() *cobra.Command {
	var (
		kind string
		nt   client.NewEnrollToken
		pt   client.NewPeerToken
	)
	c := &cobra.Command{
		Use:   "create --kind enroll|peer [flags]",
		Short: "Create a token and print its secret alone on stdout (shown only once)",
		Long: `  create --kind enroll --group G [--tenant T] [--ttl D] [--uses N]
  create --kind peer --peer NAME --grant read|operate [--subtree PATH]... [--ttl D]

Create prints the new token's secret alone on stdout and its details on
stderr, so that scripts can capture it:

  TOKEN=$(strata token create --kind enroll --group pumps --uses 10)
  TOKEN=$(strata token create --kind peer --peer plant7 --grant operate)

Devices enrolling with an enroll token get its tenant and group.

A peer token lets the node named --peer join this one once ("strata join
--upstream THIS-NODE:PORT --token TOKEN" on that node): this node then
mirrors what the peer publishes at /peers/<peer>, and may call its
functions with --grant operate (read: mirror and live reads only).
--subtree (repeatable) limits what this node accepts of what the peer
publishes. Peer tokens are for system administrators; --ttl defaults to
24h.

-o json prints the token with its secret ("token") as JSON instead.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkKind(c, kind, true); err != nil {
				return err
			}
			if kind == kindPeer {
				pt.TTL = nt.TTL
				return x.createPeerToken(c, pt, nt)
			}
			if nt.Group == "" {
				return usageError{err: fmt.Errorf("--kind enroll needs --group"), cmd: c.CommandPath()}
			}
			if pt.Peer != "" || pt.Grant != "" || len(pt.Subtrees) > 0 {
				return usageError{err: fmt.Errorf("--peer, --grant and --subtree are for --kind peer"), cmd: c.CommandPath()}
			}
			if nt.TTL < 0 || nt.Uses < 0 {
				return usageError{err: fmt.Errorf("--ttl and --uses must not be negative"), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				t, err := cl.CreateEnrollToken(ctx, nt)
				if err != nil {
					return err
				}
				return x.show(t, func(w io.Writer) {
					fmt.Fprintln(w, t.Secret)
					fmt.Fprintf(x.stderr, "enrollment token %s: group %s, tenant %s, expires %s, uses %s; the secret above is not shown again\n",
						t.ID, t.Group, orDash(t.Tenant), fmtTime(t.Expires), fmtUses(t.Uses))
				})
			})
		},
	}
	addKindFlag(c, &kind)
	f := c.Flags()
	f.StringVar(&nt.Group, "group", "", "group of the devices enrolling with it")
	f.StringVar(&nt.Tenant, "tenant", "", "tenant of the devices (system administrators only; default yours)")
	f.DurationVar(&nt.TTL, "ttl", 0, "lifetime (default 168h for enroll, 24h for peer)")
	f.IntVar(&nt.Uses, "uses", 0, "enrollments allowed (default 0: unlimited until it expires)")
	f.StringVar(&pt.Peer, "peer", "", "peer: name of the node that will join")
	f.StringVar(&pt.Grant, "grant", "", "peer: read (mirror and live reads) or operate (also function calls)")
	f.StringArrayVar(&pt.Subtrees, "subtree", nil, "peer: accept only this subtree of what the peer publishes (repeatable)")
	return c
}

// createPeerToken is `token create --kind peer`; nt holds the enroll
// flags, which must not be set.
func (x *ctl) createPeerToken(c *cobra.Command, pt client.NewPeerToken, nt client.NewEnrollToken) error {
	usage := func(format string, args ...any) error {
		return usageError{err: fmt.Errorf(format, args...), cmd: c.CommandPath()}
	}
	switch {
	case nt.Group != "" || nt.Tenant != "" || nt.Uses != 0:
		return usage("--group, --tenant and --uses are for --kind enroll")
	case pt.Peer == "":
		return usage("--kind peer needs --peer NAME (the joining node's name)")
	case pt.Grant != "read" && pt.Grant != "operate":
		return usage("--grant %q: want read or operate", pt.Grant)
	case pt.TTL < 0:
		return usage("--ttl must not be negative")
	}
	for _, s := range pt.Subtrees {
		if !strings.HasPrefix(s, "/") {
			return usage("--subtree %q: want a path such as /devices", s)
		}
	}
	return x.call(c, func(ctx context.Context, cl *client.Client) error {
		t, err := cl.CreatePeerToken(ctx, pt)
		if err != nil {
			return err
		}
		return x.show(t, func(w io.Writer) {
			fmt.Fprintln(w, t.Token)
			subs := "all it publishes"
			if len(t.Subtrees) > 0 {
				subs = strings.Join(t.Subtrees, ", ")
			}
			fmt.Fprintf(x.stderr, "peer token for %s: grant %s, accepting %s, expires %s; used once, not shown again\n",
				t.Peer, t.Grant, subs, fmtTime(t.Expires))
			fmt.Fprintf(x.stderr, "on %s: strata join --upstream <this node's federation address> --token <the token above>\n", t.Peer)
		})
	})
}

// enrollTokenState says whether t can still enroll devices at now.
func enrollTokenState(t client.EnrollToken, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case !now.Before(t.Expires):
		return "expired"
	case t.Uses > 0 && t.Used >= t.Uses:
		return "used up"
	}
	return "active"
}

func fmtUses(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

func (x *ctl) tokenListCmd() *cobra.Command {
	var kind string
	c := &cobra.Command{
		Use:   "list --kind enroll",
		Short: "List tokens",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkKind(c, kind, false); err != nil {
				return err
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ts, err := cl.ListEnrollTokens(ctx)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"tokens": ts}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tGROUP\tTENANT\tCREATED BY\tEXPIRES\tUSED\tSTATE")
					for _, t := range ts {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%s\t%s\n", t.ID, t.Group, orDash(t.Tenant), t.CreatedBy,
							fmtTime(t.Expires), t.Used, fmtUses(t.Uses), enrollTokenState(t, time.Now()))
					}
					tw.Flush()
				})
			})
		},
	}
	addKindFlag(c, &kind)
	return c
}

func (x *ctl) tokenRevokeCmd() *cobra.Command {
	var kind string
	c := &cobra.Command{
		Use:   "revoke --kind enroll ID",
		Short: "Revoke a token (devices already enrolled with it keep working)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkKind(c, kind, false); err != nil {
				return err
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.RevokeEnrollToken(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "revoked enrollment token %s\n", args[0])
				}
				return nil
			})
		},
	}
	addKindFlag(c, &kind)
	return c
}
