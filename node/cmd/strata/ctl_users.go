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

func (x *ctl) loginCmd() *cobra.Command {
	var (
		user          string
		passwordStdin bool
		ttl           time.Duration
	)
	c := &cobra.Command{
		Use:   "login --user NAME [--password-stdin] [--ttl D]",
		Short: "Log in and print a session token",
		Long: `Login exchanges a user name and password for a session token and prints
the token alone on stdout, for use as --token or $STRATA_TOKEN:

  export STRATA_TOKEN=$(strata ctl login --user alice)`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			pw, err := x.password(passwordStdin, "Password: ", false)
			if err != nil {
				return err
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				s, err := cl.Login(ctx, user, pw, ttl)
				if err != nil {
					return err
				}
				return x.show(s, func(w io.Writer) {
					fmt.Fprintln(w, s.Token)
					fmt.Fprintf(x.stderr, "logged in as %s; token %s expires %s\n", s.User.Name, s.ID, fmtTime(s.Expires))
				})
			})
		},
	}
	f := c.Flags()
	f.StringVarP(&user, "user", "u", "", "user name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin instead of prompting")
	f.DurationVar(&ttl, "ttl", 0, "session lifetime (default: the node's auth.session_ttl)")
	c.MarkFlagRequired("user")
	return c
}

func (x *ctl) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the user the token belongs to",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				u, err := cl.Whoami(ctx)
				if err != nil {
					return err
				}
				return x.show(u, func(w io.Writer) { printUser(w, u) })
			})
		},
	}
}

func printUser(w io.Writer, u *client.User) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", u.Name)
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(u.Tenant))
	fmt.Fprintf(tw, "system:\t%t\n", u.System)
	fmt.Fprintf(tw, "grants:\t%s\n", orDash(formatGrants(u.Grants)))
	fmt.Fprintf(tw, "disabled:\t%t\n", u.Disabled)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(u.Created))
	if u.TokenID != "" {
		fmt.Fprintf(tw, "token:\t%s\n", u.TokenID)
	}
	tw.Flush()
}

func formatGrants(gs []client.Grant) string {
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = g.Role + ":" + g.Subtree
	}
	return strings.Join(s, ",")
}

// parseGrants reads ROLE:SUBTREE flags (the subtree defaults to /).
func parseGrants(flags []string) ([]client.Grant, error) {
	gs := make([]client.Grant, 0, len(flags))
	for _, f := range flags {
		role, subtree, _ := strings.Cut(f, ":")
		if subtree == "" {
			subtree = "/"
		}
		switch role {
		case "admin", "operator", "viewer":
		default:
			return nil, fmt.Errorf("--grant %q: want ROLE[:SUBTREE] with ROLE admin, operator or viewer", f)
		}
		gs = append(gs, client.Grant{Role: role, Subtree: subtree})
	}
	return gs, nil
}

func (x *ctl) usersCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "users",
		Short: "Manage users: list, create, get, update, delete",
	})
	list := &cobra.Command{
		Use:   "list",
		Short: "List the users you may see",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				us, err := cl.Users(ctx)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"users": us}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tTENANT\tSYSTEM\tGRANTS\tDISABLED\tCREATED")
					for _, u := range us {
						fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%t\t%s\n", u.Name, orDash(u.Tenant), u.System, orDash(formatGrants(u.Grants)), u.Disabled, fmtTime(u.Created))
					}
					tw.Flush()
				})
			})
		},
	}

	var (
		nu            client.NewUser
		grants        []string
		passwordStdin bool
	)
	create := &cobra.Command{
		Use:   "create NAME [--tenant T] [--system] [--grant ROLE[:SUBTREE]]... [--password-stdin]",
		Short: "Create a user (the password is prompted for, or read from stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var err error
			nu.Name = args[0]
			if nu.Grants, err = parseGrants(grants); err != nil {
				return usageError{err: err, cmd: c.CommandPath()}
			}
			if nu.Password, err = x.password(passwordStdin, "Password for "+nu.Name+": ", true); err != nil {
				return err
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				u, err := cl.CreateUser(ctx, nu)
				if err != nil {
					return err
				}
				return x.show(u, func(w io.Writer) { printUser(w, u) })
			})
		},
	}
	cf := create.Flags()
	cf.StringVar(&nu.Tenant, "tenant", "", "tenant (default: yours)")
	cf.BoolVar(&nu.System, "system", false, "administrator across all tenants")
	cf.StringArrayVar(&grants, "grant", nil, "ROLE[:SUBTREE], ROLE admin, operator or viewer, SUBTREE default / (repeatable)")
	cf.BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin instead of prompting")

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				u, err := cl.GetUser(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(u, func(w io.Writer) { printUser(w, u) })
			})
		},
	}

	var (
		upGrants          []string
		noGrants, disable bool
		enable, upPwStdin bool
		upPwPrompt        bool
	)
	update := &cobra.Command{
		Use:   "update NAME [--grant ROLE[:SUBTREE]]... [--no-grants] [--disable|--enable] [--password-stdin|--password-prompt]",
		Short: "Change a user's grants, password or disabled state",
		Long: `Update changes only what its flags name. --grant replaces all the user's
grants with the ones given; --no-grants removes them all.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var u client.UserUpdate
			switch {
			case len(upGrants) > 0 && noGrants:
				return usageError{err: fmt.Errorf("--grant and --no-grants cannot be combined"), cmd: c.CommandPath()}
			case disable && enable:
				return usageError{err: fmt.Errorf("--disable and --enable cannot be combined"), cmd: c.CommandPath()}
			case upPwStdin && upPwPrompt:
				return usageError{err: fmt.Errorf("--password-stdin and --password-prompt cannot be combined"), cmd: c.CommandPath()}
			}
			if len(upGrants) > 0 {
				gs, err := parseGrants(upGrants)
				if err != nil {
					return usageError{err: err, cmd: c.CommandPath()}
				}
				u.Grants = gs
			}
			if noGrants {
				u.Grants = []client.Grant{}
			}
			if disable || enable {
				u.Disabled = &disable
			}
			if upPwStdin || upPwPrompt {
				pw, err := x.password(upPwStdin, "New password for "+args[0]+": ", true)
				if err != nil {
					return err
				}
				u.Password = pw
			}
			if u.Grants == nil && u.Disabled == nil && u.Password == "" {
				return usageError{err: fmt.Errorf("nothing to update"), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				out, err := cl.UpdateUser(ctx, args[0], u)
				if err != nil {
					return err
				}
				return x.show(out, func(w io.Writer) { printUser(w, out) })
			})
		},
	}
	uf := update.Flags()
	uf.StringArrayVar(&upGrants, "grant", nil, "replace the grants: ROLE[:SUBTREE] (repeatable)")
	uf.BoolVar(&noGrants, "no-grants", false, "remove every grant")
	uf.BoolVar(&disable, "disable", false, "disable the user (its tokens stop working)")
	uf.BoolVar(&enable, "enable", false, "enable the user")
	uf.BoolVar(&upPwStdin, "password-stdin", false, "read the new password from stdin")
	uf.BoolVar(&upPwPrompt, "password-prompt", false, "prompt for the new password")

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user and revoke its tokens",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteUser(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "deleted user %s\n", args[0])
				}
				return nil
			})
		},
	}
	c.AddCommand(list, create, get, update, del)
	return c
}

func (x *ctl) tokensCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "tokens",
		Short: "Manage API tokens: list, create, revoke",
	})
	var listUser string
	list := &cobra.Command{
		Use:   "list [--user NAME]",
		Short: "List tokens (yours by default)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ts, err := cl.Tokens(ctx, listUser)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"tokens": ts}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tUSER\tNAME\tCREATED\tEXPIRES\tREVOKED")
					for _, t := range ts {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\n", t.ID, t.User, orDash(t.Name), fmtTime(t.Created), fmtTime(t.Expires), t.Revoked)
					}
					tw.Flush()
				})
			})
		},
	}
	list.Flags().StringVar(&listUser, "user", "", "list this user's tokens")

	var nt client.NewToken
	create := &cobra.Command{
		Use:   "create [--user NAME] [--name NAME] [--ttl D]",
		Short: "Create a token and print its secret (shown only once)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				t, err := cl.CreateToken(ctx, nt)
				if err != nil {
					return err
				}
				return x.show(t, func(w io.Writer) {
					fmt.Fprintln(w, t.Secret)
					fmt.Fprintf(x.stderr, "token %s for %s expires %s; the secret above is not shown again\n", t.ID, t.User, fmtTime(t.Expires))
				})
			})
		},
	}
	cf := create.Flags()
	cf.StringVar(&nt.User, "user", "", "owner of the token (default: you)")
	cf.StringVar(&nt.Name, "name", "", "a name to recognise the token by")
	cf.DurationVar(&nt.TTL, "ttl", 0, "lifetime (default: the node's)")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.RevokeToken(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "revoked token %s\n", args[0])
				}
				return nil
			})
		},
	}
	c.AddCommand(list, create, revoke)
	return c
}
