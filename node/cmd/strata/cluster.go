package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

// clusterCmd is `strata cluster`: the replicas of a node that is a Raft
// cluster (docs/cluster.md). It reaches the node as ctl does.
func (a *app) clusterCmd() *cobra.Command {
	x := &ctl{app: a}
	c := group(&cobra.Command{
		Use:   "cluster",
		Short: "The replicas of a node that runs as a Raft cluster",
		Long: `Cluster makes and shows the replicas of a node that runs as a Raft
cluster (see docs/cluster.md). Init and join write the cluster section of
a replica's config file (cluster.bootstrap on the first, cluster.join on
the others); the other commands talk to a running replica.

Those reach the node as ctl does: the node of the config file (--config,
else $STRATA_CONFIG, else ./strata.yaml) with the CA and admin.token beside
it. Any replica answers.

` + targetHelp,
	})
	x.addTargetFlags(c)
	status := &cobra.Command{
		Use:   "status",
		Short: "The leader, the term, and each replica's role, state and applied index",
		Long: `Status shows the cluster as the replica asked sees it: the leader and the
term, then each replica with its role (voter, or nonvoter while a new
replica catches up), its state (leader, follower, candidate, or
unreachable when it did not answer), the last Raft log index it applied
and when it last heard from the leader.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				st, err := cl.Cluster(ctx)
				if err != nil {
					return err
				}
				return x.show(st, func(w io.Writer) { printCluster(w, st) })
			})
		},
	}
	transfer := &cobra.Command{
		Use:   "transfer-leader",
		Short: "Hand the leadership to another voter (before maintenance of the leader's machine)",
		Long: `Transfer-leader asks the leader (through whichever replica it reaches) to
hand leadership to another voter, and returns once another replica leads.
A replica stopped gracefully does the same on its own.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.TransferClusterLeader(ctx); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintln(x.stdout, "leadership handed over")
				}
				return nil
			})
		},
	}
	leave := &cobra.Command{
		Use:   "leave ID",
		Short: "Remove the replica ID from the cluster",
		Long: `Leave removes the replica ID from the cluster's configuration (the leader
does it, through whichever replica it reaches): it no longer votes nor
receives the log. Stop it afterwards; to bring it back, start it on an
empty data_dir with cluster.join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.RemoveClusterMember(ctx, args[0]); err != nil {
					return err
				}
				if !x.json() {
					fmt.Fprintf(x.stdout, "replica %s removed\n", args[0])
				}
				return nil
			})
		},
	}
	c.AddCommand(a.clusterInitCmd(), a.clusterJoinCmd(), status, transfer, leave)
	return c
}

func printCluster(w io.Writer, st *client.ClusterStatus) {
	leader := st.Leader
	if leader == "" {
		leader = "(none: no quorum)"
	}
	fmt.Fprintf(w, "leader %s, term %d\n", leader, st.Term)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tSTATE\tAPPLIED\tLAST CONTACT")
	for _, m := range st.Members {
		contact := m.LastContact
		if contact == "" {
			contact = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.ID, m.Address, m.Role, m.State, m.AppliedIndex, contact)
	}
	tw.Flush()
}
