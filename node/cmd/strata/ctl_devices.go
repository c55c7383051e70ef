package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

func (x *ctl) devicesCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "devices",
		Short: "Enrolled devices: list, get, revoke",
		Long: `Devices lists and revokes enrolled devices. Devices enroll with tokens
from "strata token create --kind enroll"; a device's data is its context,
/devices/<id> ("strata ctl get /devices/<id>").`,
	})
	list := &cobra.Command{
		Use:   "list",
		Short: "List the devices you may see",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				ds, err := cl.ListDevices(ctx)
				if err != nil {
					return err
				}
				return x.show(map[string]any{"devices": ds}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tTENANT\tGROUP\tHARDWARE ID\tENROLLED\tREVOKED")
					for _, d := range ds {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\n", d.ID, orDash(d.Tenant), d.Group, clip(d.HardwareID, 40), fmtTime(d.Enrolled), d.Revoked)
					}
					tw.Flush()
				})
			})
		},
	}
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.GetDevice(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) { printDevice(w, d) })
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device's credentials and disconnect it",
		Long: `Revoke stops the device's secret and certificate from working and closes
its MQTT sessions at once. The device cannot enroll again until an operator
allows it with "strata ctl devices allow-enroll ID".`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.RevokeDevice(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) {
					fmt.Fprintf(w, "revoked device %s\n", d.ID)
					printDevice(w, d)
				})
			})
		},
	}
	allow := &cobra.Command{
		Use:   "allow-enroll ID",
		Short: "Let a revoked device enroll again",
		Long: `Allow-enroll lets a revoked device enroll again with a valid enrollment
token. It stays revoked, without working credentials, until it does;
revoking it again withdraws the permission. Shared devices (no tenant) are
allowed by system administrators only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.AllowDeviceEnroll(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) {
					fmt.Fprintf(w, "device %s may enroll again\n", d.ID)
					printDevice(w, d)
				})
			})
		},
	}
	c.AddCommand(list, get, revoke, allow)
	return c
}

func printDevice(w io.Writer, d *client.Device) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", d.ID)
	fmt.Fprintf(tw, "path:\t%s\n", d.Path)
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(d.Tenant))
	fmt.Fprintf(tw, "group:\t%s\n", d.Group)
	fmt.Fprintf(tw, "hardware id:\t%s\n", d.HardwareID)
	fmt.Fprintf(tw, "enrolled:\t%s\n", fmtTime(d.Enrolled))
	fmt.Fprintf(tw, "enroll token:\t%s\n", orDash(d.EnrollToken))
	fmt.Fprintf(tw, "certificate:\t%s\n", orDash(d.CertSerial))
	fmt.Fprintf(tw, "revoked:\t%t\n", d.Revoked)
	if d.Revoked {
		fmt.Fprintf(tw, "revoked at:\t%s\n", fmtTime(d.RevokedAt))
		fmt.Fprintf(tw, "may enroll again:\t%t\n", d.EnrollAllowed)
	}
	tw.Flush()
}
