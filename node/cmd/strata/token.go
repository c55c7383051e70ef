package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// Token kinds of `strata token --kind`.
const (
	kindEnroll = "enroll" // device enrollment tokens
	kindPeer   = "peer"   // federation peer tokens: not yet
)

// tokenCmd is `strata token`: the tokens a node hands out to what joins
// it (devices now, peer nodes with federation). It reaches the node
// exactly as ctl does, with the same flags. API tokens of operators are
// `strata ctl tokens`.
func (a *app) tokenCmd() *cobra.Command {
	x := &ctl{app: a}
	c := group(&cobra.Command{
		Use:   "token",
		Short: "Manage the tokens devices enroll with (--kind enroll)",
		Long: `Token manages a running node's join tokens: --kind enroll for devices (see
docs/mqtt.md, "Enrollment"); --kind peer, for federation, comes later.
Operator API tokens are "strata ctl tokens".

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
	c.Flags().StringVar(kind, "kind", "", "token kind: enroll (peer comes with federation)")
	c.MarkFlagRequired("kind")
}

// checkKind accepts --kind enroll; peer is known but not available yet.
func checkKind(c *cobra.Command, kind string) error {
	switch kind {
	case kindEnroll:
		return nil
	case kindPeer:
		return usageError{err: fmt.Errorf("--kind peer: peer tokens come with federation"), cmd: c.CommandPath()}
	}
	return usageError{err: fmt.Errorf("--kind %q: want enroll (or peer, with federation)", kind), cmd: c.CommandPath()}
}

func (x *ctl) tokenCreateCmd() *cobra.Command {
	var (
		kind string
		nt   client.NewEnrollToken
	)
	c := &cobra.Command{
		Use:   "create --kind enroll --group G [--tenant T] [--ttl D] [--uses N]",
		Short: "Create a token and print its secret alone on stdout (shown only once)",
		Long: `Create prints the new token's secret alone on stdout and its details on
stderr, so that scripts can capture it:

  TOKEN=$(strata token create --kind enroll --group pumps --uses 10)

Devices enrolling with it get its tenant and group. -o json prints the
token with its secret ("token") as JSON instead.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkKind(c, kind); err != nil {
				return err
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
	f.DurationVar(&nt.TTL, "ttl", 0, "lifetime (default 168h)")
	f.IntVar(&nt.Uses, "uses", 0, "enrollments allowed (default 0: unlimited until it expires)")
	c.MarkFlagRequired("group")
	return c
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
			if err := checkKind(c, kind); err != nil {
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
			if err := checkKind(c, kind); err != nil {
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
